/**
 * A host cut off from etcd for longer than its lease (a network partition: etcd stays up, so the
 * lease really expires, unlike an etcd restart, which resets lease TTLs): the other hosts withdraw
 * its endpoints when the lease expires; when it can reach etcd again it is granted a new lease,
 * publishes its VTEP and endpoints again, and the others program them again, with no restart of
 * anything (flannel#904 is what exiting instead costs).
 */
import t from 'tap';
import { isolate } from './harness.js';

await isolate();
const { startCluster, endpointOf, pings, programmed, within, fdb } = await import('../multihost.js');
type Host = import('../multihost.js').Host;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('a host partitioned from etcd past its TTL is withdrawn, then comes back by itself', async (t) => {
  const TTL = 2;
  const cluster = await startCluster(t, { hosts: 2, store: true, ttl: TTL });
  const [a, b] = cluster.hosts as [Host, Host];
  const etcd = cluster.etcd!;
  t.equal((await a.tnet('network', 'create', '-d', 'overlay', 'pt')).code, 0, 'network pt made on a');
  for (const [h, sb] of [[a, 'a1'], [b, 'b1']] as const) {
    t.equal((await h.tnet('sandbox', 'create', sb)).code, 0, `sandbox ${sb} on ${h.name}`);
    t.equal((await h.tnet('connect', 'pt', sb)).code, 0, `${sb} connected on ${h.name}`);
  }
  const ep = await endpointOf(b, 'b1', 'pt');
  const b1 = { ip: ep.ipv4!, mac: ep.mac!, vtep: b.ip };
  const dev = JSON.parse((await a.tnet('network', 'inspect', 'pt', '--json')).out).vxlan as string;
  const isProgrammed = async () => {
    const x = await programmed(a, dev, b1);
    return x.fdb === 1 && x.neigh === 1;
  };
  t.ok(await within(3000, isProgrammed) !== undefined, 'a has programmed b1');
  t.ok(await pings(a, 'a1', b1.ip), 'a1 pings b1');

  // b's packets to etcd are dropped (not reset: b's keepalives simply go unanswered).
  const port = etcd.url.split(':').pop();
  const host = etcd.url.match(/\/\/([^:]+)/)![1];
  const block = await b.exec(
    `nft add table inet mhpart && nft add chain inet mhpart out '{ type filter hook output priority 0; }' && nft add rule inet mhpart out ip daddr ${host} tcp dport ${port} drop`,
  );
  t.equal(block.code, 0, `b is cut off from etcd (${block.err.trim()})`);
  const cut = Date.now();
  try {
    const gone = await within((TTL + 4) * 1000, async () => !(await fdb(a, dev)).some((e) => e.mac === b1.mac));
    t.ok(gone !== undefined, `a withdrew b1 when b's lease expired (${gone === undefined ? 'not within TTL + 4 s' : `${Date.now() - cut} ms after the cut, TTL ${TTL} s`})`);
    t.notOk(etcd.ctl('get', '--prefix', '--keys-only', '/tnet/v1/hosts/').includes(b.ip), "b's VTEP record expired with its lease");
    t.ok((await b.tnet('network', 'ls')).code === 0, "b's daemon still answers for what it has");
    await sleep(1000);
  } finally {
    await b.exec('nft delete table inet mhpart');
  }
  const healed = Date.now();
  // b's store finds its lease gone, is granted a new one and writes its records again.
  const back = await within(20_000, isProgrammed);
  t.ok(back !== undefined, `a programmed b1 again once b reached etcd (${back === undefined ? 'not within 20 s' : `${Date.now() - healed} ms`})`);
  t.ok(etcd.ctl('get', '--prefix', '--keys-only', '/tnet/v1/hosts/').includes(b.ip), "b's VTEP record is back");
  t.ok(await pings(a, 'a1', b1.ip), 'a1 pings b1 again');
  t.ok(await pings(b, 'b1', (await endpointOf(a, 'a1', 'pt')).ipv4!), 'and b1 pings a1 (b kept a1 all along)');
  t.match(b.log(400), /lease expired/, "b's log says its lease expired and its records were published again");

  for (const [h, sb] of [[a, 'a1'], [b, 'b1']] as const) {
    await h.tnet('disconnect', 'pt', sb);
    await h.tnet('sandbox', 'rm', sb);
  }
  t.equal((await a.tnet('network', 'rm', 'pt')).code, 0, 'network pt removed');
  await cluster.finish(t);
});
