/**
 * The overlay driver across simulated hosts (test/multihost.ts: each host its own namespaces and
 * tnet daemon, one real etcd with TLS client auth on the underlay), with real traffic: a network
 * made on one host shows on every host (and on a host added later), endpoints get addresses
 * unique across hosts, sandboxes on different hosts ping (IPv4, IPv6), talk TCP and UDP, and
 * find each other by name through tnet's DNS; names and VNIs are unique under concurrent creates;
 * a network in use on any host is not removed; what is not possible is refused and makes nothing.
 */
import { setTimeout as wait } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { isolate } from './harness.js';

await isolate();
const mh = await import('../multihost.js');
const { startCluster, vniOf, networks, endpointOf, vxlans, fdb, neighs, programmed, pings, within } = mh;
type Host = import('../multihost.js').Host;
type Cluster = import('../multihost.js').Cluster;
const { Subnet } = await import('../../libnetwork/ipam/subnet.js');
const { IpAddr } = await import('../../libnetwork/ipam/address.js');

/** How long a network made on one host may take to show on another ("within about a second", on a loaded machine). */
const PROPAGATION_MS = 2000;

async function inspect(h: Host, name: string) {
  const r = await h.tnet('network', 'inspect', name, '--json');
  return r.code === 0 ? (JSON.parse(r.out) as import('../multihost.js').NetView) : undefined;
}

/** Connects on the command line and returns the addresses the command printed. */
async function connect(tt: Test, h: Host, net: string, sb: string, ...args: string[]) {
  const r = await h.tnet('connect', net, sb, ...args);
  tt.equal(r.code, 0, `host ${h.name}: tnet connect ${net} ${sb} ${args.join(' ')} (${r.err.trim()})`);
  const words = r.out.trim().split(/\s+/);
  return { ipv4: words.find((w) => /^\d+\.\d+\.\d+\.\d+$/.test(w)), ipv6: words.find((w) => w.includes(':')) };
}

/** Keys the store should not keep once every global network is gone (hosts are leased; the pools guard stays by design). */
function storeLeftovers(cluster: Cluster): string[] {
  return cluster.keys('/tnet/v1/').filter((k) => !k.startsWith('/tnet/v1/hosts/') && k !== '/tnet/v1/pools-guard');
}

/** Runs a listener and a client in two sandboxes (on two hosts); the listener's output. */
async function transfer(server: Host, serverSb: string, listen: string, port: number, proto: 'tcp' | 'udp', client: Host, clientSb: string, send: string) {
  const listening = server.sandboxExec(serverSb, `timeout 10 ${listen}`);
  const ready = await within(5000, async () => (await server.sandboxExec(serverSb, `ss -Hln${proto === 'tcp' ? 't' : 'u'} sport = :${port}`)).out.trim() !== '');
  if (ready === undefined) return { ok: false, out: 'the listener did not start' };
  const c = await client.sandboxExec(clientSb, send);
  const l = await listening;
  return { ok: c.code === 0, out: l.out, clientOut: c.out, err: c.err + l.err };
}

t.test('overlay networks across hosts (one cluster: a and b, then c)', async (t) => {
  const cluster = await startCluster(t, { hosts: 2, store: true });
  const [a, b] = cluster.hosts as [Host, Host];

  await t.test('concurrent creates, VNIs and options, and what is refused without creating anything', async (t) => {
    // The same name on two hosts at once: exactly one wins, the other is told (exit 4).
    const same = await Promise.all([a.tnet('network', 'create', '-d', 'overlay', 'same'), b.tnet('network', 'create', '-d', 'overlay', 'same')]);
    t.same(same.map((r) => r.code).sort(), [0, 4], `one create of "same" wins, the other exits 4 (${same.map((r) => r.err.trim()).join(' | ')})`);
    t.match(same.find((r) => r.code === 4)?.err ?? '', /same/, 'the loser\'s message names the network');
    t.equal(cluster.keys('/tnet/v1/networks/').filter((k) => k.endsWith('/same')).length, 1, 'one record in etcd');
    await within(3000, async () => (await networks(b)).some((n) => n.name === 'same') && (await networks(a)).some((n) => n.name === 'same'));
    const ids = await Promise.all([a, b].map(async (h) => (await networks(h)).filter((n) => n.name === 'same').map((n) => n.id)));
    t.same(ids[0], ids[1], 'both hosts show the one network, with the same id');
    t.equal(ids[0]?.length, 1, 'exactly once');
    const again = await b.tnet('network', 'create', '-d', 'overlay', 'same');
    t.equal(again.code, 4, `a later create of the same name on the other host: exit 4 (${again.err.trim()})`);

    // Different names at once, two per host: distinct VNIs and subnets that do not overlap.
    const names = ['d1', 'd2', 'd3', 'd4'];
    const made = await Promise.all(names.map((n, i) => (i % 2 ? b : a).tnet('network', 'create', '-d', 'overlay', n)));
    t.same(made.map((r) => r.code), [0, 0, 0, 0], `four concurrent creates on two hosts succeed (${made.map((r) => r.err.trim()).filter(Boolean).join(' | ')})`);
    await within(3000, async () => (await networks(a)).filter((n) => names.includes(n.name)).length === 4);
    const views = (await networks(a)).filter((n) => names.includes(n.name));
    const vnis = views.map((v) => vniOf(v));
    t.equal(views.length, 4, 'a shows all four');
    t.equal(new Set(vnis).size, 4, `distinct VNIs (${vnis.join(', ')})`);
    const subnets = views.map((v) => v.ipv4?.subnet ?? '');
    const overlapping = subnets.flatMap((s, i) => subnets.slice(i + 1).filter((o) => s && o && Subnet.parse(s).overlaps(Subnet.parse(o))).map((o) => `${s}~${o}`));
    t.ok(subnets.every(Boolean), `each has a subnet (${subnets.join(', ')})`);
    t.same(overlapping, [], 'and no two overlap');
    t.same((await networks(b)).filter((n) => names.includes(n.name)).map((n) => vniOf(n)).sort(), [...vnis].sort(), 'b shows the same four VNIs');

    // -o vni and -o mtu: the VNI asked for (unique across hosts), the MTU on the endpoints.
    const v = await a.tnet('network', 'create', '-d', 'overlay', 'v1', '-o', 'vni=70000', '-o', 'mtu=1400');
    t.equal(v.code, 0, `-o vni=70000 -o mtu=1400 (${v.err.trim()})`);
    await within(3000, async () => (await networks(b)).some((n) => n.name === 'v1'));
    t.equal(vniOf((await networks(b)).find((n) => n.name === 'v1')), 70000, 'b shows VNI 70000');
    const dup = await b.tnet('network', 'create', '-d', 'overlay', 'v2', '-o', 'vni=70000');
    t.equal(dup.code, 4, `VNI 70000 again, from the other host: exit 4 (${dup.err.trim()})`);
    t.match(dup.err, /70000/, 'the message names the VNI');
    await b.api.call('POST', '/sandboxes', { name: 's' });
    t.equal((await b.tnet('connect', 'v1', 's')).code, 0, 'b connects a sandbox to v1');
    t.equal((await b.sandboxExec('s', 'cat /sys/class/net/eth0/mtu')).out.trim(), '1400', 'its interface has MTU 1400');
    const vx = (await vxlans(b)).find((l) => l.info.id === 70000);
    t.equal(vx?.ifname, `tvx-${(70000).toString(16)}`, 'b: the VXLAN of VNI 70000 is named tvx-<VNI in hex>');
    t.equal((await b.tnet('disconnect', 'v1', 's')).code, 0, 'disconnected');
    await b.api.call('DELETE', '/sandboxes/s');

    // -o encrypted: this kernel has no ESP; refused (exit 5) and nothing is created anywhere.
    const linksBefore = (await a.exec('ip -o link show')).out.split('\n').length;
    const enc = await a.tnet('network', 'create', '-d', 'overlay', 'enc', '-o', 'encrypted');
    t.equal(enc.code, 5, `-o encrypted: exit 5 (${enc.err.trim()})`);
    t.match(enc.err, /unsupported on this kernel/, 'the message says it is unsupported on this kernel');
    t.notOk((await networks(a)).some((n) => n.name === 'enc'), 'a: no network enc');
    await wait(300);
    t.notOk((await networks(b)).some((n) => n.name === 'enc'), 'b: no network enc');
    t.same(cluster.keys('/tnet/v1/networks/').filter((k) => k.endsWith('/enc')), [], 'etcd: no record of enc');
    t.equal((await a.exec('ip -o link show')).out.split('\n').length, linksBefore, 'a: no link made for it');

    // Removed from either host, whichever made it (one command, several names).
    const rmA = await a.tnet('network', 'rm', 'same', 'd1', 'd3', 'v1');
    const rmB = await b.tnet('network', 'rm', 'd2', 'd4');
    t.equal(rmA.code, 0, `a: network rm same d1 d3 v1 (${rmA.err.trim()})`);
    t.equal(rmB.code, 0, `b: network rm d2 d4 (${rmB.err.trim()})`);
    t.ok(await within(3000, async () => (await networks(b)).length === 0) !== undefined, 'b has no network left');
    t.same(storeLeftovers(cluster), [], 'etcd keeps nothing of the removed networks');
  });

  await t.test('an overlay network across three hosts: reachability, names, unique addresses, removal', async (t) => {
    const created = await a.tnet('network', 'create', '-d', 'overlay', 'ov', '--subnet', '10.90.0.0/24', '--ipv6', '--subnet6', 'fd90::/64');
    t.equal(created.code, 0, `a: tnet network create -d overlay ov (${created.err.trim()})`);
    const shown = await within(5000, async () => (await networks(b)).some((n) => n.name === 'ov'));
    t.ok(shown !== undefined && shown <= PROPAGATION_MS, `b sees ov within ${PROPAGATION_MS} ms (took ${shown ?? 'more than 5000'} ms)`);
    t.match((await b.tnet('network', 'ls')).out, /\bov\s+overlay\b/, 'b: `tnet network ls` lists ov, driver overlay');
    const onA = await inspect(a, 'ov');
    const onB = await inspect(b, 'ov');
    t.equal(onB?.scope, 'global', 'b: inspect says "scope":"global"');
    t.equal(onA?.scope, 'global', 'a: inspect says "scope":"global"');
    const vni = vniOf(onA);
    t.ok(vni !== undefined && vni > 0, `a: inspect shows the VNI (${vni})`);
    t.equal(vniOf(onB), vni, 'b: the same VNI');
    t.equal(onB?.id, onA?.id, 'the same network id on both hosts');
    t.equal(onB?.ipv4?.subnet, '10.90.0.0/24', 'b: the subnet asked for on a');
    t.equal(onB?.ipv6?.subnet, 'fd90::/64', 'b: and the IPv6 subnet');

    // Concurrent connects on both hosts: addresses unique across hosts (the global IPAM).
    await Promise.all([a.api.call('POST', '/sandboxes', { name: 'a1' }), a.api.call('POST', '/sandboxes', { name: 'a2' }), b.api.call('POST', '/sandboxes', { name: 'b1' }), b.api.call('POST', '/sandboxes', { name: 'b2' })]);
    const [ea1, ea2, eb1, eb2] = await Promise.all([connect(t, a, 'ov', 'a1'), connect(t, a, 'ov', 'a2'), connect(t, b, 'ov', 'b1'), connect(t, b, 'ov', 'b2')]);
    const v4 = [ea1, ea2, eb1, eb2].map((e) => e.ipv4);
    const v6 = [ea1, ea2, eb1, eb2].map((e) => e.ipv6);
    t.ok(v4.every((ip) => ip && Subnet.parse('10.90.0.0/24').contains(IpAddr.parse(ip))), `every endpoint has an IPv4 address in the subnet (${v4.join(', ')})`);
    t.equal(new Set(v4).size, 4, 'four concurrent connects on two hosts: four distinct IPv4 addresses');
    t.ok(v6.every((ip) => ip && Subnet.parse('fd90::/64').contains(IpAddr.parse(ip))), `and IPv6 ones (${v6.join(', ')})`);
    t.equal(new Set(v6).size, 4, 'four distinct IPv6 addresses');
    await b.api.call('POST', '/sandboxes', { name: 'bx' });
    const taken = await b.tnet('connect', 'ov', 'bx', '--ip', ea1.ipv4!);
    t.equal(taken.code, 4, `b: connect --ip ${ea1.ipv4} (a1's, on host a): exit 4 (${taken.err.trim()})`);
    t.match(taken.err, ea1.ipv4!, 'the message names the address');
    await b.api.call('DELETE', '/sandboxes/bx');
    // A sandbox name is its DNS name on every host of a global network: another host's is refused.
    await b.api.call('POST', '/sandboxes', { name: 'a1' });
    const sameName = await b.tnet('connect', 'ov', 'a1');
    t.equal(sameName.code, 4, `b: connect a sandbox named a1 (a's a1 is on ov): exit 4 (${sameName.err.trim()})`);
    t.match(sameName.err, /a1.*host host-a/, 'the message names the name and the host that has it');
    await b.api.call('DELETE', '/sandboxes/a1');

    // The kernel shape on a: a VXLAN with the network's VNI, no learning, proxy ARP/ND, its VTEP,
    // port 4789, MTU = the underlay's - 50 (IPv4 underlay), enslaved to a bridge with no address of its own.
    const underlayMtu = (JSON.parse((await a.exec('ip -j link show dev eth0')).out) as { mtu: number }[])[0]!.mtu;
    const vx = (await vxlans(a)).find((l) => l.info.id === vni);
    t.ok(vx, `a: a VXLAN link with VNI ${vni}`);
    if (vx) {
      t.match(vx.ifname, /^tvx-/, `named tvx-... (${vx.ifname})`);
      t.equal(vx.info.learning, false, 'nolearning');
      t.equal(vx.info.proxy, true, 'proxy');
      t.equal(vx.info.local, a.ip, `local ${a.ip} (the advertised address)`);
      t.equal(vx.info.port, 4789, 'dstport 4789');
      t.equal(vx.mtu, underlayMtu - 50, `MTU ${underlayMtu - 50} (underlay ${underlayMtu} - 50)`);
      t.match(vx.master ?? '', /^tov-/, `enslaved to the network's bridge (${vx.master})`);
      const addrs = JSON.parse((await a.exec(`ip -j addr show dev ${vx.master}`)).out || '[]') as { addr_info: { scope: string; local: string }[] }[];
      t.same(addrs.flatMap((x) => x.addr_info).filter((i) => i.scope !== 'link').map((i) => i.local), [], 'the bridge has no address in the host namespace');
    }
    t.equal(Number((await a.sandboxExec('a1', 'cat /sys/class/net/eth0/mtu')).out), underlayMtu - 50, 'a sandbox\'s interface has the overlay MTU');

    // a has programmed b's endpoints: FDB towards b's VTEP, permanent neighbours (IPv4 and IPv6).
    const b1 = await endpointOf(b, 'b1', 'ov');
    const dev = vx?.ifname ?? 'tvx-missing';
    const prog = await within(3000, async () => {
      const p = await programmed(a, dev, { mac: b1.mac!, ip: b1.ipv4!, vtep: b.ip });
      return p.fdb === 1 && p.neigh === 1;
    });
    t.ok(prog !== undefined, `a: b1 (${b1.ipv4}, ${b1.mac}) is in ${dev}'s FDB towards ${b.ip} and in its neighbours`);
    t.ok((await neighs(a, dev)).some((n) => n.dst === b1.ipv6 && n.lladdr === b1.mac && (n.state ?? []).includes('PERMANENT')), 'and its IPv6 address too, permanent');
    t.notOk((await fdb(a, dev)).some((e) => e.dst === a.ip), 'a has no FDB entry towards itself (its own endpoints are local)');

    // Traffic across hosts.
    t.ok(await pings(a, 'a1', eb1.ipv4!), `a1 (a) pings b1 (b) at ${eb1.ipv4}`);
    t.ok(await pings(b, 'b2', ea2.ipv4!), `b2 (b) pings a2 (a) at ${ea2.ipv4}`);
    t.ok(await pings(a, 'a1', eb1.ipv6!), `a1 pings b1 over IPv6 (${eb1.ipv6})`);
    t.ok(await pings(a, 'a1', ea2.ipv4!), 'a1 pings a2 on the same host');
    // TCP both ways: b1's listener greets, then echoes what a1 sends.
    const tcp = await transfer(b, 'b1', `socat -T5 TCP-LISTEN:5000,reuseaddr SYSTEM:'echo tcp-from-b1; cat'`, 5000, 'tcp', a, 'a1', `echo hello-from-a1 | timeout 10 socat -T5 - TCP:${eb1.ipv4}:5000`);
    t.ok(tcp.ok, `TCP a1 -> b1:5000 connects (${tcp.err ?? ''})`);
    t.match(tcp.clientOut ?? '', /tcp-from-b1/, 'a1 received b1\'s greeting over TCP');
    t.match(tcp.clientOut ?? '', /hello-from-a1/, 'and its own bytes echoed by b1 (both directions)');
    const udp = await transfer(b, 'b2', `socat -u UDP-RECVFROM:5001 -`, 5001, 'udp', a, 'a2', `echo udp-hello-from-a2 | socat -u - UDP-SENDTO:${eb2.ipv4}:5001`);
    t.match(udp.out, /udp-hello-from-a2/, 'b2 received a2\'s UDP datagram');

    // Names across hosts, from a's sandbox, through tnet's DNS in it.
    const dig = async (q: string) => (await a.sandboxExec('a1', `dig +short +time=2 +tries=2 @127.0.0.11 ${q}`)).out.trim();
    t.equal(await dig('b1'), eb1.ipv4, 'a1 resolves b1 (on b) to its address');
    t.equal(await dig('b1.ov'), eb1.ipv4, 'and b1.ov');
    t.equal(await dig('AAAA b1'), eb1.ipv6, 'and its IPv6 address (AAAA)');
    t.match(await dig(`-x ${eb1.ipv4}`), /^b1(\.ov)?\.?$/m, `and ${eb1.ipv4} back to b1 (PTR)`);
    t.ok((await a.sandboxExec('a1', 'ping -c1 -W2 b2.ov')).code === 0, 'a1 pings b2.ov by name');

    // A host added after the network exists: it has it, connects, and everyone reaches it.
    const c = await cluster.addHost({ daemon: false });
    // First with a's address (c holds it too, on lo, not answering ARP for it on the underlay, as a
    // misconfigured twin would): two hosts on one VTEP would receive each other's frames.
    const twinAddr = await c.exec(`sysctl -qw net.ipv4.conf.eth0.arp_ignore=1 && ip addr add ${a.ip}/32 dev lo`);
    t.equal(twinAddr.code, 0, `c holds ${a.ip} too (${twinAddr.err.trim()})`);
    const twin = await c.startDaemon({ advertise: a.ip, wait: false });
    const giveUp = new AbortController(); // a pending timer would keep this file's process alive
    const exit = await Promise.race([twin.exited, wait(20_000, undefined, { signal: giveUp.signal }).catch(() => undefined)]);
    giveUp.abort();
    if (!exit) await c.killDaemon();
    t.equal(exit?.code, 4, `c's daemon advertising a's address ${a.ip} exits 4 (${exit ? `exit ${exit.code ?? exit.signal}` : 'still running after 20 s'})`);
    const why = c.log(10);
    t.ok(why.includes(a.ip) && why.includes(a.hostname), `its message names the address and host a: ${why.split('\n').filter((l) => l.includes(a.ip)).pop()?.slice(0, 300) ?? why}`);
    await c.exec(`ip addr del ${a.ip}/32 dev lo`);
    // Then without --advertise-addr: the source address of its route towards etcd (its eth0).
    await c.startDaemon({ advertise: null });
    t.ok(cluster.keys('/tnet/v1/hosts/').includes(`/tnet/v1/hosts/${c.ip}`), `c advertises ${c.ip} by default (its route towards etcd)`);
    const onC = await within(5000, async () => (await networks(c)).some((n) => n.name === 'ov'));
    t.ok(onC !== undefined && onC <= PROPAGATION_MS, `c (started after ov was made) has ov (${onC ?? 'not within 5000'} ms after its daemon was ready)`);
    t.equal(vniOf(await inspect(c, 'ov')), vni, 'with the same VNI');
    await c.api.call('POST', '/sandboxes', { name: 'c1' });
    const ec1 = await connect(t, c, 'ov', 'c1');
    t.notOk(v4.includes(ec1.ipv4), `c1 gets an address no other host's endpoint has (${ec1.ipv4})`);
    t.equal((await vxlans(c)).find((l) => l.info.id === vni)?.info.local, c.ip, `c's VXLAN sends from ${c.ip}`);
    t.ok(await pings(c, 'c1', ea1.ipv4!), 'c1 (c) pings a1 (a)');
    t.ok(await pings(c, 'c1', eb2.ipv4!), 'c1 (c) pings b2 (b)');
    t.ok(await within(3000, () => pings(a, 'a2', ec1.ipv4!)) !== undefined, 'a2 (a) pings c1 (c): a learned c\'s endpoint');
    t.equal((await c.sandboxExec('c1', 'dig +short +time=2 +tries=2 @127.0.0.11 a1.ov')).out.trim(), ea1.ipv4, 'c1 resolves a1.ov');

    // Removal: refused while any host has endpoints on it, naming that host (and only it).
    const leave = (h: Host, sb: string) => h.tnet('disconnect', 'ov', sb).then((r) => t.equal(r.code, 0, `host ${h.name}: disconnect ${sb} (${r.err.trim()})`));
    await Promise.all([leave(a, 'a1'), leave(a, 'a2'), leave(c, 'c1')]);
    const refused = await a.tnet('network', 'rm', 'ov');
    t.equal(refused.code, 4, `a: network rm ov while b has endpoints: exit 4 (${refused.err.trim()})`);
    t.match(refused.err, new RegExp(`${b.hostname}|${b.ip.replace(/\./g, '\\.')}`), 'the message names host b');
    t.notMatch(refused.err, new RegExp(`${a.hostname}\\b|${c.hostname}\\b`), 'and not the hosts without endpoints');
    t.ok((await networks(c)).some((n) => n.name === 'ov'), 'ov is still there on c');
    t.ok(await pings(b, 'b1', eb2.ipv4!), 'and still works on b');
    await Promise.all([leave(b, 'b1'), leave(b, 'b2')]);
    const rm = await a.tnet('network', 'rm', 'ov');
    t.equal(rm.code, 0, `a: network rm ov once no host has endpoints (${rm.err.trim()})`);
    const gone = await within(5000, async () => {
      for (const h of cluster.hosts) if ((await networks(h)).some((n) => n.name === 'ov')) return false;
      return true;
    });
    t.ok(gone !== undefined && gone <= PROPAGATION_MS, `ov is gone on every host within ${PROPAGATION_MS} ms (${gone ?? 'not within 5000'} ms)`);
    for (const h of cluster.hosts) {
      const links = await within(3000, async () => !/\b(tov|tvx)-/.test((await h.exec('ip -o link show')).out));
      t.ok(links !== undefined, `host ${h.name}: no tov-/tvx- link left`);
    }
    await Promise.all(([[a, 'a1'], [a, 'a2'], [b, 'b1'], [b, 'b2'], [c, 'c1']] as const).map(([h, sb]) => h.api.call('DELETE', `/sandboxes/${sb}`)));
    t.same(storeLeftovers(cluster), [], 'etcd keeps nothing of the network (record, VNI, pools, addresses, peers)');
  });

  await cluster.finish(t);
});

t.test('without --store: an overlay network is refused, naming --store', async (t) => {
  const cluster = await startCluster(t, { hosts: 1, store: false });
  const [a] = cluster.hosts as [Host];
  const r = await a.tnet('network', 'create', '-d', 'overlay', 'x');
  t.equal(r.code, 2, `exit 2 (${r.err.trim()})`);
  t.match(r.err, /--store/, 'the message names --store');
  t.notOk((await networks(a)).some((n) => n.name === 'x'), 'nothing was created');
  await cluster.finish(t);
});
