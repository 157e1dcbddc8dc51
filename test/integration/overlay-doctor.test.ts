/**
 * `tnet doctor` on an overlay network (two simulated hosts, test/multihost.ts): the static
 * entries of the VXLAN device are checked against the remote endpoints the cluster reported
 * (a tunnel entry removed by hand is missing, an entry nobody owns is stray), and `--repair`
 * programs them again without a restart; traffic is back afterwards.
 */
import t from 'tap';
import { isolate } from './harness.js';

await isolate();
const { startCluster, endpointOf, pings } = await import('../multihost.js');
type Host = import('../multihost.js').Host;

t.test('doctor and repair of the remote endpoints of an overlay network', async (t) => {
  const cluster = await startCluster(t, { hosts: 2, store: true });
  const [a, b] = cluster.hosts as [Host, Host];
  t.equal((await a.tnet('network', 'create', '-d', 'overlay', 'dr')).code, 0, 'network dr made on a');
  for (const [h, sb] of [[a, 'x'], [b, 'y']] as const) {
    t.equal((await h.tnet('sandbox', 'create', sb)).code, 0, `sandbox ${sb} on ${h.name}`);
    t.equal((await h.tnet('connect', 'dr', sb)).code, 0, `${sb} connected on ${h.name}`);
  }
  const y = await endpointOf(b, 'y', 'dr');
  const vx = JSON.parse((await a.tnet('network', 'inspect', 'dr', '--json')).out).vxlan as string;
  t.ok(await pings(a, 'x', y.ipv4!), 'x on a pings y on b');
  t.equal((await a.tnet('doctor')).code, 0, 'the doctor finds nothing while the entries are right');

  // Break it by hand: the tunnel entry of y goes, a neighbour entry nobody owns comes.
  await a.exec(`bridge fdb del ${y.mac} dev ${vx} dst ${b.ip} self`);
  await a.exec(`ip neigh replace 10.255.0.77 lladdr 02:42:0a:ff:00:4d dev ${vx} nud permanent`);
  t.notOk(await pings(a, 'x', y.ipv4!), 'without its tunnel entry y is unreachable from a');
  const found = await a.tnet('doctor');
  t.equal(found.code, 1, 'the doctor reports differences (exit 1)');
  t.match(found.out, new RegExp(`missing\\s+fdb ${y.mac} dev ${vx}.*remote endpoint y`), 'the missing tunnel entry, with the endpoint it serves');
  t.match(found.out, new RegExp(`stray\\s+neigh 10\\.255\\.0\\.77 dev ${vx}`), 'the stray neighbour entry');

  const repaired = await a.tnet('doctor', '--repair');
  t.equal(repaired.code, 0, `--repair fixes both (${repaired.out.trim()})`);
  t.ok(await pings(a, 'x', y.ipv4!), 'x pings y again');
  t.equal((await a.tnet('doctor')).code, 0, 'and the doctor finds nothing left');

  // The network's DNS port (the namespace holding its DNS address on this host) gone by hand.
  const info = JSON.parse((await a.tnet('network', 'inspect', 'dr', '--json')).out) as { dns_address: string; dns_netns: string };
  await a.exec(`ip netns del ${info.dns_netns}`);
  const dnsGone = await a.tnet('doctor');
  t.equal(dnsGone.code, 1, 'the doctor reports the DNS namespace gone (exit 1)');
  t.match(dnsGone.out, new RegExp(`missing\\s+netns ${info.dns_netns}.*${info.dns_address.replace(/\./g, '\\.')}`), 'naming the namespace and the address');
  t.equal((await a.tnet('doctor', '--repair')).code, 0, '--repair makes it again');
  t.equal((await a.exec(`ip netns exec ${info.dns_netns} ip -4 -o addr show dev eth0`)).out.includes(info.dns_address), true, 'with the DNS address');
  t.ok(await pings(a, 'x', y.ipv4!), 'the repair left the endpoints alone: x still pings y');
  const answer = await a.sandboxExec('x', `dig +short +time=2 +tries=2 @${info.dns_address} y.dr`);
  t.equal(answer.out.trim(), y.ipv4, `tnet's DNS answers at ${info.dns_address} again (y.dr on host b)`);

  for (const [h, sb] of [[a, 'x'], [b, 'y']] as const) {
    await h.tnet('disconnect', 'dr', sb);
    await h.tnet('sandbox', 'rm', sb);
  }
  t.equal((await b.tnet('network', 'rm', 'dr')).code, 0, 'network dr removed from b');
  await cluster.finish(t);
});
