/**
 * An overlay over an IPv6 underlay (two simulated hosts, test/multihost.ts): each daemon
 * advertises its fd77:: address, the VXLAN devices tunnel over IPv6 (local6), the MTU is the
 * underlay's minus 70 (an IPv6 outer header is 20 bytes more than IPv4's), and sandboxes on the
 * two hosts reach each other over IPv4 and IPv6 inside the overlay.
 */
import t from 'tap';
import { isolate } from './harness.js';

await isolate();
const { startCluster, endpointOf, pings, vxlans, fdb } = await import('../multihost.js');
type Host = import('../multihost.js').Host;

t.test('overlay over an IPv6 underlay', async (t) => {
  const cluster = await startCluster(t, { hosts: 2, store: true });
  const [a, b] = cluster.hosts as [Host, Host];
  // Restarted advertising their IPv6 underlay addresses (the store stays on IPv4).
  for (const h of [a, b]) {
    await h.stopDaemon();
    await h.startDaemon({ advertise: h.ip6 });
  }
  t.equal((await a.tnet('network', 'create', '-d', 'overlay', '--ipv6', 'v6u')).code, 0, 'network v6u made on a');
  for (const [h, sb] of [[a, 'x'], [b, 'y']] as const) {
    t.equal((await h.tnet('sandbox', 'create', sb)).code, 0, `sandbox ${sb} on ${h.name}`);
    t.equal((await h.tnet('connect', 'v6u', sb)).code, 0, `${sb} connected on ${h.name}`);
  }
  const vx = (await vxlans(a)).find((l) => l.ifname.startsWith('tvx-'));
  t.equal((vx?.info as { local6?: string; local?: string } | undefined)?.local6 ?? vx?.info.local, a.ip6, `a's VXLAN device tunnels from its IPv6 VTEP ${a.ip6}`);
  t.equal(vx?.mtu, 1500 - 70, 'its MTU is the underlay\'s minus 70 (IPv6 outer header)');
  const y = await endpointOf(b, 'y', 'v6u');
  t.ok((await fdb(a, vx!.ifname)).some((e) => e.mac === y.mac && e.dst === b.ip6), `a tunnels y's MAC to b's IPv6 VTEP ${b.ip6}`);
  t.ok(await pings(a, 'x', y.ipv4!), 'x on a pings y on b over IPv4, tunnelled over IPv6');
  t.ok(await pings(a, 'x', y.ipv6!), 'and over IPv6');
  const big = await a.sandboxExec('x', `ping -c 1 -W 2 -M do -s ${1430 - 28} ${y.ipv4}`);
  t.equal(big.code, 0, 'a full-size packet (1430 bytes, DF) crosses the IPv6 underlay unfragmented');
  for (const [h, sb] of [[a, 'x'], [b, 'y']] as const) {
    await h.tnet('disconnect', 'v6u', sb);
    await h.tnet('sandbox', 'rm', sb);
  }
  t.equal((await b.tnet('network', 'rm', 'v6u')).code, 0, 'network v6u removed');
  await cluster.finish(t);
});
