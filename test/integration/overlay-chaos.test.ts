/**
 * The overlay when things die (test/multihost.ts hosts, one real etcd): a daemon killed with -9
 * is withdrawn on the other hosts when its lease expires and comes back whole when restarted
 * (stale records withdrawn, nothing programmed twice); an etcd outage leaves the data plane alone
 * and loses no event; a watch that fell behind a compaction re-lists and misses neither an add
 * nor a removal.
 */
import t from 'tap';
import { isolate } from './harness.js';

await isolate();
const { startCluster, vxlans, fdb, neighs, programmed, pings, within, endpointOf, networks, vniOf, PEERS_PREFIX } = await import('../multihost.js');
type Host = import('../multihost.js').Host;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The VXLAN device of a network on a host (by its VNI), once the host has one. */
async function vxlanDev(h: Host, net: string): Promise<string> {
  const vni = vniOf((await networks(h)).find((n) => n.name === net));
  let dev: string | undefined;
  await within(3000, async () => (dev = (await vxlans(h)).find((l) => l.info.id === vni)?.ifname) !== undefined);
  if (!dev) throw new Error(`host ${h.name}: no VXLAN with VNI ${vni} for ${net}`);
  return dev;
}

async function setup(a: Host, b: Host, net: string, subnet: string) {
  const r = await a.tnet('network', 'create', '-d', 'overlay', net, '--subnet', subnet);
  if (r.code !== 0) throw new Error(`network create ${net}: ${r.err}`);
  await within(3000, async () => (await networks(b)).some((n) => n.name === net));
  await a.api.call('POST', '/sandboxes', { name: 'a1' });
  await b.api.call('POST', '/sandboxes', { name: 'b1' });
  await a.api.call('POST', '/connect', { network: net, sandbox: 'a1' });
  await b.api.call('POST', '/connect', { network: net, sandbox: 'b1' });
  const a1 = await endpointOf(a, 'a1', net);
  const b1 = await endpointOf(b, 'b1', net);
  return { a1: { ip: a1.ipv4!, mac: a1.mac!, vtep: a.ip }, b1: { ip: b1.ipv4!, mac: b1.mac!, vtep: b.ip }, dev: await vxlanDev(a, net) };
}

const isProgrammed = async (h: Host, dev: string, p: { ip: string; mac: string; vtep: string }) => {
  const x = await programmed(h, dev, p);
  return x.fdb === 1 && x.neigh === 1;
};
const isWithdrawn = async (h: Host, dev: string, p: { ip: string; mac: string; vtep: string }) => {
  const f = (await fdb(h, dev)).some((e) => e.mac === p.mac);
  const n = (await neighs(h, dev)).some((e) => e.dst === p.ip);
  return !f && !n;
};

t.test('kill -9 of a daemon: its endpoints expire elsewhere after the TTL; a restart brings them back once, without stale ones', async (t) => {
  const TTL = 2;
  const cluster = await startCluster(t, { hosts: 2, ttl: TTL, store: true });
  const [a, b] = cluster.hosts as [Host, Host];
  const { b1, dev } = await setup(a, b, 'ov', '10.91.0.0/24');
  t.ok(await within(3000, () => isProgrammed(a, dev, b1)) !== undefined, `a has programmed b1 (${b1.ip}) on ${dev}`);
  t.ok(await pings(a, 'a1', b1.ip), 'a1 pings b1 across hosts');

  // A record b has no endpoint for (as if b lost an endpoint while it was down), with b's host
  // identity and no lease: a programs it like any peer; b's next start must withdraw it.
  const b1Key = cluster.keys(`${PEERS_PREFIX}ov/`).find((k) => (JSON.parse(cluster.etcd!.ctl('get', k, '--print-value-only')) as { name?: string }).name === 'b1');
  const ghost = { ip: '10.91.0.200', mac: '02:42:0a:5b:00:c8', vtep: b.ip };
  if (b1Key) {
    const rec = JSON.parse(cluster.etcd!.ctl('get', b1Key, '--print-value-only')) as Record<string, unknown>;
    cluster.etcd!.ctl('put', `${PEERS_PREFIX}ov/${'f'.repeat(64)}`, JSON.stringify({ ...rec, endpointId: 'f'.repeat(64), ip: ghost.ip, mac: ghost.mac, name: 'ghost' }));
  }
  t.ok(b1Key, 'b1\'s peer record is in etcd');
  t.ok(await within(3000, () => isProgrammed(a, dev, ghost)) !== undefined, 'a programs the stale record too (it looks like one of b\'s)');

  // kill -9 of b: its lease expires, a withdraws b1 within TTL + 1 s.
  await b.killDaemon();
  const t0 = Date.now();
  const took = (await within(15_000, () => isWithdrawn(a, dev, b1))) === undefined ? undefined : Date.now() - t0;
  t.ok(took !== undefined && took <= (TTL + 1) * 1000, `a withdrew b1 (FDB and neighbour) within TTL + 1 s = ${(TTL + 1) * 1000} ms after the kill (took ${took ?? 'more than 15000'} ms)`);
  const [aToB, bToA] = await Promise.all([a.sandboxExec('a1', `ping -c1 -W1 ${b1.ip}`), b.sandboxExec('b1', `ping -c1 -W1 ${(await endpointOf(a, 'a1', 'ov')).ipv4!}`)]);
  t.not(aToB.code, 0, 'a1 no longer reaches b1');
  t.not(bToA.code, 0, 'nor b1 a1 (the replies have nowhere to go)');
  t.equal((await a.sandboxExec('a1', 'dig +short +time=1 +tries=1 @127.0.0.11 b1')).out.trim(), '', 'a1 no longer resolves b1');
  t.notOk(cluster.keys(PEERS_PREFIX).includes(b1Key ?? '-'), 'b1\'s record expired in etcd');

  // b's daemon starts again (advertising its interface by name this time): b1 back on a, exactly
  // once, towards b's address; the stale record withdrawn.
  await b.startDaemon({ advertise: 'eth0' });
  const t1 = Date.now();
  const back = await within(10_000, () => isProgrammed(a, dev, b1));
  t.ok(back !== undefined, `a has b1 again after b's restart (${back === undefined ? 'not within 10 s' : `${Date.now() - t1} ms`})`);
  t.ok(await within(5000, () => isWithdrawn(a, dev, ghost)) !== undefined, 'the restarted b withdrew the record of the endpoint it does not have: gone on a');
  t.notOk(cluster.keys(PEERS_PREFIX).includes(`${PEERS_PREFIX}ov/${'f'.repeat(64)}`), 'and from etcd');
  t.ok(await pings(a, 'a1', b1.ip), 'a1 pings b1 again');
  t.equal((await fdb(a, dev)).length, 1, 'a\'s VXLAN FDB holds exactly one remote entry (b1), nothing stale or doubled');
  t.equal((await neighs(a, dev)).filter((n) => n.lladdr === b1.mac).length, 1, 'and one neighbour entry for it');
  t.equal(cluster.keys(`${PEERS_PREFIX}ov/`).length, 2, 'etcd: two peer records (a1, b1)');

  // A kill -9 and an immediate restart (the old lease still alive): when the old lease expires,
  // b1 stays, because the new run published it under its own lease; it never flaps on a.
  // (the store settings from TNET_STORE... this time, not flags)
  await b.killDaemon();
  await b.startDaemon({ storeVia: 'env' });
  let flaps = 0;
  const end = Date.now() + (TTL + 1.5) * 1000;
  while (Date.now() < end) {
    if (!(await isProgrammed(a, dev, b1))) flaps++;
    await sleep(150);
  }
  t.equal(flaps, 0, `b1 stayed programmed on a through b's quick restart and the old lease's expiry (${flaps} samples without it)`);
  t.ok(await pings(a, 'a1', b1.ip), 'a1 pings b1 after the old lease expired');
  t.equal(cluster.keys(`${PEERS_PREFIX}ov/`).length, 2, 'etcd: still the two records');

  await a.api.call('DELETE', '/sandboxes/a1');
  await b.api.call('DELETE', '/sandboxes/b1');
  const rm = await b.tnet('network', 'rm', 'ov');
  t.equal(rm.code, 0, `network rm ov (${rm.err.trim()})`);
  await within(3000, async () => (await networks(a)).length === 0);
  await cluster.finish(t);
});

t.test('etcd down and back, and a compaction past a watch: the data plane goes on, no event is lost', async (t) => {
  const cluster = await startCluster(t, { hosts: 2, store: true }); // TTL 5 s, the default: an outage shorter than it
  const [a, b] = cluster.hosts as [Host, Host];
  const etcd = cluster.etcd!;
  const endpoint = etcd.url.replace(/^etcds?:\/\//, '');
  const { b1, dev } = await setup(a, b, 'ov', '10.92.0.0/24');
  t.ok(await within(3000, () => isProgrammed(a, dev, b1)) !== undefined, 'a has programmed b1');

  // A ping flood a1 -> b1 across an etcd stop and start.
  const COUNT = 300;
  const flood = a.sandboxExec('a1', `ping -q -i 0.01 -W 1 -c ${COUNT} ${b1.ip}`);
  await sleep(300);
  await etcd.stop();
  const down = Date.now();
  await b.api.call('POST', '/sandboxes', { name: 'b2' });
  const [create, conn] = await Promise.all([
    a.tnet('network', 'create', '-d', 'overlay', 'down1'),
    b.tnet('connect', 'ov', 'b2'),
  ]);
  const opsMs = Date.now() - down;
  t.equal(create.code, 69, `a: network create while etcd is down: exit 69 (${create.err.trim()}, ${opsMs} ms)`);
  t.match(create.err, endpoint, `the message names the store endpoint ${endpoint}`);
  t.equal(conn.code, 69, `b: connect to the overlay while etcd is down: exit 69 (${conn.err.trim()})`);
  t.match(conn.err, endpoint, 'the message names the store endpoint');
  await sleep(Math.max(0, 1500 - (Date.now() - down)));
  await etcd.start();
  const upAt = Date.now();
  const f = await flood;
  const m = /(\d+) packets transmitted, (\d+) received/.exec(f.out);
  const sent = Number(m?.[1] ?? 0);
  const lost = sent - Number(m?.[2] ?? 0);
  t.ok(sent > 0 && lost <= Math.ceil(sent / 100), `ping flood across the outage (${Math.round((upAt - down) / 100) / 10} s): ${lost} of ${sent} lost (at most 1 %)`);

  // Right after etcd is back: an endpoint connected on b reaches a (the watch resumed, no event lost).
  let connected: { code: number; err: string } = { code: -1, err: '' };
  const ok = await within(20_000, async () => (connected = await b.tnet('connect', 'ov', 'b2')).code === 0);
  t.ok(ok !== undefined, `b connects b2 once etcd is back (${ok === undefined ? connected.err.trim() : `after ${Date.now() - upAt} ms`})`);
  const b2 = await endpointOf(b, 'b2', 'ov');
  const peer2 = { ip: b2.ipv4!, mac: b2.mac!, vtep: b.ip };
  t.ok(await within(10_000, () => isProgrammed(a, dev, peer2)) !== undefined, `a programmed b2 (${b2.ipv4})`);
  t.ok(await pings(a, 'a1', b2.ipv4!), 'a1 pings b2');
  t.notOk((await networks(a)).some((n) => n.name === 'down1') || (await networks(b)).some((n) => n.name === 'down1'), 'the create refused during the outage made nothing');
  t.same(cluster.keys('/tnet/v1/networks/').filter((k) => k.endsWith('/down1')), [], 'not in etcd either');

  // a's watch falls behind: its connection to etcd is reset while b removes b1 and adds b3, and
  // etcd compacts past both; when a reconnects it must re-list: b3 programmed, b1 withdrawn.
  const port = endpoint.split(':').pop();
  const block = await a.exec(
    `nft add table inet mhblock && nft add chain inet mhblock out '{ type filter hook output priority 0; }' && nft add rule inet mhblock out ip daddr ${etcd.url.match(/\/\/([^:]+)/)![1]} tcp dport ${port} reject with tcp reset`,
  );
  t.equal(block.code, 0, `a's traffic to etcd is reset (${block.err.trim()})`);
  try {
    await sleep(500);
    await b.api.call('POST', '/sandboxes', { name: 'b3' });
    t.equal((await b.tnet('disconnect', 'ov', 'b1')).code, 0, 'b disconnects b1');
    // Another address than b1's: an address freed is handed out again, and the MAC follows the address.
    t.equal((await b.tnet('connect', 'ov', 'b3', '--ip', '10.92.0.50')).code, 0, 'b connects b3 (10.92.0.50)');
    await sleep(1500);
    const rev = await etcd.compact();
    t.ok(rev > 0, `etcd compacted to revision ${rev}`);
    t.ok(await isProgrammed(a, dev, b1), 'a, cut off, still has b1 (it has not heard)');
  } finally {
    await a.exec('nft delete table inet mhblock');
  }
  const unblocked = Date.now();
  const b3 = await endpointOf(b, 'b3', 'ov');
  const peer3 = { ip: b3.ipv4!, mac: b3.mac!, vtep: b.ip };
  const got3 = await within(15_000, () => isProgrammed(a, dev, peer3));
  t.ok(got3 !== undefined, `after the reconnect a programmed b3, added while it was cut off (${got3 === undefined ? 'not within 15 s' : `${Date.now() - unblocked} ms`})`);
  t.ok(await within(5000, () => isWithdrawn(a, dev, b1)) !== undefined, 'and withdrew b1, removed while it was cut off');
  // The case this is about happened: a's peer watch was cancelled for the compaction and re-listed.
  const relisted = a.log(400).split('\n').filter((l) => l.includes('/tnet/v1/peers/ov/') && /re-?list|compact|cancel/i.test(l));
  t.ok(relisted.length > 0, `a's log shows its peer watch re-listed after the compaction (${relisted[0]?.slice(0, 200) ?? 'no such line'})`);
  t.ok(await pings(a, 'a1', b3.ipv4!), 'a1 pings b3');
  t.ok(await isProgrammed(a, dev, peer2), 'b2 is still programmed');
  t.equal((await fdb(a, dev)).length, 2, 'a\'s FDB: exactly b2 and b3');

  for (const s of ['b1', 'b2', 'b3']) await b.api.call('DELETE', `/sandboxes/${s}`);
  await a.api.call('DELETE', '/sandboxes/a1');
  const rm = await a.tnet('network', 'rm', 'ov');
  t.equal(rm.code, 0, `network rm ov (${rm.err.trim()})`);
  await within(3000, async () => (await networks(b)).length === 0);
  await cluster.finish(t);
});
