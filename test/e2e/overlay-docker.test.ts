/**
 * The Docker face of tnet's overlay networks, with real dockerds (Debian docker.io 20.10): two
 * simulated hosts (test/multihost.ts), each with its own tnet daemon (--store: a real etcd with
 * TLS client auth) serving the plugin sockets in the host's private /run/docker/plugins, and its
 * own dockerd with its defaults (--iptables=true). One dual-stack tnet overlay, one
 * `-d tnet-overlay` Docker network over it on each host: busybox containers on both hosts get
 * addresses unique across hosts from tnet's IpamDriver (dynamic and --ip) and ping each other
 * across the VXLAN (IPv4 and IPv6); a tnet restart loses nothing; refusals are clear; removing
 * everything leaves nothing, in etcd either.
 */
import { spawn } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import t, { type Test } from 'tap';
import { type HostDockerd, importBusybox, isolateDocker, startDockerdOnHost } from './docker-harness.js';

await isolateDocker();
const { MAIN, daemonKnowsStore, run, startCluster, within } = await import('../multihost.js');
type Host = import('../multihost.js').Host;
type Cluster = import('../multihost.js').Cluster;

if (!daemonKnowsStore()) {
  t.plan(0, 'e2e: the built daemon has no --store (overlay networks): build dist/ with the overlay');
  process.exit(0);
}

const SUBNET = '10.93.0.0/24';
const SUBNET6 = 'fd93::/64';
/** etcd's keys of the cluster's address allocations (libnetwork/ipam/global.ts KEYS.addr). */
const ADDR_PREFIX = '/tnet/v1/addr/';

interface PluginDaemon {
  readonly pid: number;
  readonly logFile: string;
  stop(): Promise<number | null>;
}

/**
 * The host's tnet daemon with the Docker plugin sockets (the multihost harness starts its daemons
 * with --no-docker-plugin): in the host's namespaces, with the cluster's store flags.
 */
async function startPluginDaemon(tt: Test, cluster: Cluster, h: Host, dockerSock?: string): Promise<PluginDaemon> {
  const logFile = `${h.stateDir}/daemon.log`;
  const out = openSync(logFile, 'a');
  const child = spawn(
    'nsenter',
    ['-t', String(h.holderPid), '-m', '-n', '-u', '--', process.execPath, MAIN, 'daemon', '--state-dir', h.stateDir, '--socket', h.socket,
      ...cluster.storeArgs, '--advertise-addr', h.ip],
    // DOCKER_HOST: the host's dockerd, which tnet asks for a container's name after a Join.
    { stdio: ['ignore', out, out], env: { ...process.env, TNET_LOG_LEVEL: process.env.TNET_LOG_LEVEL ?? 'info', ...(dockerSock ? { DOCKER_HOST: `unix://${dockerSock}` } : {}) } },
  );
  closeSync(out);
  const stop = async (): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    child.kill('SIGTERM');
    const end = Date.now() + 10_000;
    while (child.exitCode === null && child.signalCode === null && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    return child.exitCode;
  };
  tt.teardown(stop);
  const ready = await within(30_000, async () => {
    if (child.exitCode !== null) return true;
    const p = await h.api.call<{ ready?: boolean }>('GET', '/ping').catch(() => undefined);
    return p?.ready === true && (await h.exec('test -S /run/docker/plugins/tnet-overlay.sock')).code === 0;
  });
  if (ready === undefined || child.exitCode !== null) throw new Error(`host ${h.name}: tnet daemon did not start:\n${readLog(logFile).slice(-3000)}`);
  return { pid: child.pid!, logFile, stop };
}

function readLog(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '(no log: the host is gone)';
  }
}

/** The `tnet` command on a host, against its daemon. */
const tnet = (h: Host, ...args: string[]) =>
  run('nsenter', ['-t', String(h.holderPid), '-m', '-n', '-u', '--', process.execPath, MAIN, ...args], {
    env: { ...process.env, TNET_SOCKET: h.socket, TNET_STATE_DIR: h.stateDir },
  });

const ipOf = (d: HostDockerd, ctr: string, net: string) => d.docker('inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, ctr).out;

t.test('docker on two hosts over one tnet overlay: unique addresses, cross-host ping, refusals, clean removal', async (t) => {
  const t0 = Date.now();
  const cluster = await startCluster(t, { hosts: 0 });
  const a = await cluster.addHost({ daemon: false });
  const b = await cluster.addHost({ daemon: false });
  const [da, db] = await Promise.all([startDockerdOnHost(t, a.holderPid, { noBridge: true }), startDockerdOnHost(t, b.holderPid, { noBridge: true })]);
  const [ta, tb] = await Promise.all([startPluginDaemon(t, cluster, a, da.sock), startPluginDaemon(t, cluster, b, db.sock)]);
  t.teardown(() => {
    if (t.passing()) return;
    for (const [h, d, p] of [[a, da, ta], [b, db, tb]] as const) {
      t.comment(`host ${h.name} tnet log:\n${readLog(p.logFile).slice(-5000)}`); // both starts of host a: one file
      t.comment(`host ${h.name} dockerd log:\n${d.log().slice(-3000)}`);
    }
  });
  const img = importBusybox(da);
  importBusybox(db);
  t.comment(`two hosts with tnet and dockerd up in ${Date.now() - t0} ms`);

  // Without a tnet overlay of that name, or without tnet's IPAM: refused, saying what to type.
  const none = da.docker('network', 'create', '-d', 'tnet-overlay', '--ipam-driver', 'tnet', '--ipam-opt', 'tnet.network=web', 'web');
  t.not(none.code, 0, 'a Docker network over a tnet overlay that does not exist is refused');
  t.match(none.err, /no tnet overlay network "web".*tnet network create -d overlay web/, `the message says how to create it (${none.err})`);

  // The tnet overlay, once, on host a; host b sees it.
  const created = await tnet(a, 'network', 'create', '-d', 'overlay', '--subnet', SUBNET, '--ipv6', '--subnet6', SUBNET6, 'web');
  t.equal(created.code, 0, `tnet network create -d overlay web on host a (${created.err.trim()})`);
  t.ok(await within(5000, async () => (await tnet(b, 'network', 'inspect', 'web', '--json')).code === 0), 'host b mirrors the overlay');

  const noIpam = da.docker('network', 'create', '-d', 'tnet-overlay', '-o', 'tnet.network=web', 'web');
  t.not(noIpam.code, 0, 'a tnet-overlay network with dockerd\'s own IPAM is refused (its addresses would clash across hosts)');
  t.match(noIpam.err, /--ipam-driver tnet --ipam-opt tnet\.network=NAME/, `the message names the flags (${noIpam.err})`);
  const badSubnet = da.docker('network', 'create', '-d', 'tnet-overlay', '--ipam-driver', 'tnet', '--ipam-opt', 'tnet.network=web', '--subnet', '10.94.0.0/24', 'web');
  t.not(badSubnet.code, 0, 'a --subnet other than the overlay\'s is refused');
  t.match(badSubnet.err, new RegExp(`not the subnet of tnet overlay network "web" \\(${SUBNET.replace(/\./g, '\\.')}\\)`), `the message names the overlay's subnet (${badSubnet.err})`);

  // The same command on each host (host b names the subnet too, which dockerd wants for --ip).
  for (const d of [da, db]) {
    d.ok(t, 'network', 'create', '-d', 'tnet-overlay', '--ipam-driver', 'tnet', '--ipam-opt', 'tnet.network=web', '--ipv6', ...(d === db ? ['--subnet', SUBNET] : []), 'web');
    const info = JSON.parse(d.ok(t, 'network', 'inspect', 'web'))[0];
    t.equal(info.Driver, 'tnet-overlay', 'Docker shows the plugin as the driver');
    t.same(info.IPAM.Config.map((c: { Subnet: string }) => c.Subnet), [SUBNET, SUBNET6], 'the Docker network has the overlay\'s subnets');
  }

  // Containers on both hosts, two on a: addresses unique across hosts.
  da.ok(t, 'run', '-d', '--name', 'a1', '--network', 'web', img, 'sleep', '600');
  da.ok(t, 'run', '-d', '--name', 'a2', '--network', 'web', img, 'sleep', '600');
  const taken = db.docker('run', '-d', '--name', 'bx', '--network', 'web', '--ip', ipOf(da, 'a1', 'web'), img, 'sleep', '600');
  t.not(taken.code, 0, `--ip with the address of a container of host a is refused on host b (${taken.err.split('\n')[0]})`);
  db.docker('rm', '-f', 'bx');
  db.ok(t, 'run', '-d', '--name', 'b1', '--network', 'web', '--ip', '10.93.0.200', img, 'sleep', '600');
  // The overlay's DNS address (the last of its subnet, reserved): every host serves tnet's DNS there.
  const dnsAddr = JSON.parse((await tnet(a, 'network', 'inspect', 'web', '--json')).out).dns_address as string;
  t.equal(dnsAddr, '10.93.0.254', 'the overlay\'s DNS address is the last of its subnet');
  t.ok(cluster.keys(ADDR_PREFIX).some((k) => k.endsWith(`/${dnsAddr}`)), 'and it is reserved in the cluster\'s store');
  const v4Allocated = () => cluster.keys(ADDR_PREFIX).map((k) => k.slice(k.lastIndexOf('/') + 1)).filter((x) => x.includes('.') && x !== dnsAddr).sort();
  const ips = { a1: ipOf(da, 'a1', 'web'), a2: ipOf(da, 'a2', 'web'), b1: ipOf(db, 'b1', 'web') };
  for (const [n, ip] of Object.entries(ips)) t.match(ip, /^10\.93\.0\.\d+$/, `${n} has an address of the overlay (${ip})`);
  t.equal(ips.b1, '10.93.0.200', 'b1 has the address given with --ip');
  t.equal(new Set(Object.values(ips)).size, 3, `the three addresses differ across hosts (${Object.values(ips).join(', ')})`);
  t.same(v4Allocated(), Object.values(ips).sort(), 'each address is one allocation in the cluster\'s store (no gateway taken)');
  const a1v6 = da.docker('inspect', '-f', '{{(index .NetworkSettings.Networks "web").GlobalIPv6Address}}', 'a1').out;
  const b1v6 = db.docker('inspect', '-f', '{{(index .NetworkSettings.Networks "web").GlobalIPv6Address}}', 'b1').out;
  t.match(a1v6, /^fd93::/, `a1 has an IPv6 address of the overlay (${a1v6})`);
  t.not(a1v6, b1v6, `a1 and b1 have different IPv6 addresses (${b1v6})`);

  // Across the VXLAN, both ways (the peer records reach the other host within a moment).
  const crossAB = await within(5000, () => da.docker('exec', 'a1', 'ping', '-c', '1', '-W', '1', ips.b1).code === 0);
  t.not(crossAB, undefined, `a1 (host a) pings b1 (host b) at ${ips.b1}${crossAB !== undefined ? ` (${crossAB} ms after b1 started)` : ''}`);
  t.equal(db.docker('exec', 'b1', 'ping', '-c', '1', '-W', '2', ips.a2).code, 0, `b1 (host b) pings a2 (host a) at ${ips.a2}`);
  t.not(await within(5000, () => db.docker('exec', 'b1', 'ping', '-6', '-c', '1', '-W', '1', a1v6).code === 0), undefined, `b1 pings a1 over IPv6 (${a1v6})`);
  t.equal(da.docker('exec', 'a1', 'ping', '-c', '1', '-W', '2', ips.a2).code, 0, 'a1 pings a2 on the same host');
  // The overlay is one flat segment: no default route from it, no docker_gwbridge.
  const routes = da.ok(t, 'exec', 'a1', 'ip', 'route');
  t.notMatch(routes, /default/, `no default route from an overlay without a gateway (${routes.replace(/\n/g, '; ')})`);
  t.notMatch(da.ok(t, 'exec', 'a1', 'ip', '-o', 'link'), /eth1/, 'one interface: dockerd added no docker_gwbridge');
  // dockerd's defaults (--iptables=true: FORWARD policy DROP) let the overlay's bridge through:
  // tnet accepts it in DOCKER-USER, as it does its bridges.
  for (const h of [a, b]) {
    const rules = (await h.exec('iptables -S DOCKER-USER')).out;
    t.match(rules, /-i tov-[0-9a-f]+ .*-j ACCEPT/, `host ${h.name}: DOCKER-USER accepts the overlay's bridge`);
  }
  // On the VXLAN's MTU (underlay 1500 - 50).
  t.match(da.ok(t, 'exec', 'a1', 'ip', '-o', 'link', 'show', 'eth0'), /mtu 1450/, 'eth0 has the overlay\'s MTU');

  // Names: dockerd's embedded DNS answers for the containers of its own host on a plugin network.
  t.equal(da.docker('exec', 'a1', 'ping', '-c', '1', '-W', '2', 'a2').code, 0, 'a1 pings a2 by name (same host: dockerd\'s DNS)');
  // Across hosts: tnet learns each container's name from its dockerd after the Join and publishes
  // it; a container started with --dns <the overlay's DNS address> gets other hosts' names from
  // tnet's DNS on its own host (dockerd's 127.0.0.11 forwards what it does not know).
  db.ok(t, 'run', '-d', '--name', 'bn', '--network', 'web', '--dns', dnsAddr, img, 'sleep', '600');
  const byName = await within(15_000, () => db.docker('exec', 'bn', 'ping', '-c', '1', '-W', '1', 'a1').code === 0);
  t.not(byName, undefined, `bn (host b, --dns ${dnsAddr}) pings a1 (host a) by name`);
  t.match(db.docker('exec', 'bn', 'nslookup', 'a2').out, new RegExp(ips.a2!.replace(/\./g, '\\.')), `and resolves a2 (host a) to ${ips.a2}`);
  t.not(await within(15_000, () => da.docker('exec', 'a1', 'nslookup', 'bn', dnsAddr).out.includes('10.93.0.')), undefined, 'tnet\'s DNS on host a knows bn (host b) too');
  db.ok(t, 'rm', '-f', 'bn');

  // A restart of host a's tnet daemon: nothing about the Docker network was recorded, so nothing
  // is lost; a new container on host a joins and reaches host b.
  t.equal(await ta.stop(), 0, 'host a: tnet daemon stopped');
  const ta2 = await startPluginDaemon(t, cluster, a, da.sock);
  da.ok(t, 'run', '-d', '--name', 'a3', '--network', 'web', img, 'sleep', '600');
  const a3 = ipOf(da, 'a3', 'web');
  t.notOk(Object.values(ips).includes(a3), `a3 (started after the restart) has an address of its own (${a3})`);
  t.not(await within(5000, () => da.docker('exec', 'a3', 'ping', '-c', '1', '-W', '1', ips.b1).code === 0), undefined, 'a3 pings b1 on host b');
  t.not(await within(5000, () => db.docker('exec', 'b1', 'ping', '-c', '1', '-W', '1', a3).code === 0), undefined, 'b1 pings a3');
  da.ok(t, 'rm', '-f', 'a3');

  // The overlay cannot go while containers are on it; its Docker networks go per host.
  const busyRm = await tnet(b, 'network', 'rm', 'web');
  t.equal(busyRm.code, 4, `tnet network rm web is refused while containers use it (exit 4: ${busyRm.err.trim()})`);

  // A container that goes gives its address back, once: the next one may take it, on any host.
  da.ok(t, 'rm', '-f', 'a2');
  t.ok(await within(5000, () => !cluster.keys(ADDR_PREFIX).some((k) => k.endsWith(`/${ips.a2}`))), `a2's address ${ips.a2} is free in the store`);
  // b2 takes a2's old address on the other host (--ip), hence its MAC (02:42 + the IPv4
  // address). Host b's bridge learned that MAC on its VXLAN port while a2 was alive; the overlay
  // driver forgets that entry when a2's record goes and when b2 joins, or frames for b2 would go
  // back into the tunnel until the bridge ages them out (300 s; libnetwork#1792).
  db.ok(t, 'run', '-d', '--name', 'b2', '--network', 'web', '--ip', ips.a2!, img, 'sleep', '600');
  const b2 = ipOf(db, 'b2', 'web');
  t.equal(b2, ips.a2, `b2 has a2's old address (${b2})`);
  const reuse = await within(3000, () => da.docker('exec', 'a1', 'ping', '-c', '1', '-W', '1', b2).code === 0);
  t.not(reuse, undefined, `a1 pings b2 at a2's old address (${b2}) at once`);
  t.same(v4Allocated(), [ips.a1, ips.b1, b2].sort(), 'the store holds exactly the live containers\' IPv4 addresses');
  t.equal(cluster.keys(ADDR_PREFIX).length, 7, 'and one IPv6 address each (and the DNS address)');

  // Everything goes: containers, the Docker networks on each host, then the overlay.
  da.ok(t, 'rm', '-f', 'a1');
  db.ok(t, 'rm', '-f', 'b1', 'b2');
  for (const d of [da, db]) d.ok(t, 'network', 'rm', 'web');
  t.same(cluster.keys(ADDR_PREFIX).map((k) => k.slice(k.lastIndexOf('/') + 1)), [dnsAddr], 'no address is left allocated in the store but the overlay\'s DNS address');
  const rm = await tnet(a, 'network', 'rm', 'web');
  t.equal(rm.code, 0, `tnet network rm web (${rm.err.trim()})`);
  t.ok(await within(5000, async () => (await tnet(b, 'network', 'inspect', 'web')).code !== 0), 'the overlay is gone on host b too');

  for (const h of [a, b]) t.notMatch((await h.exec('iptables-save; ip6tables-save')).out, /tnet:/, `host ${h.name}: no tnet rule is left in dockerd's chains`);
  await Promise.all([da.stop(), db.stop()]);
  // dockerd's own tables (iptables-nft) stay in the host's namespace after it stops: not tnet's to judge.
  for (const h of [a, b]) await h.exec('for t in "ip nat" "ip filter" "ip6 nat" "ip6 filter"; do nft delete table $t 2>/dev/null; done; true');
  for (const [h, p] of [[a, ta2], [b, tb]] as const) t.equal(await p.stop(), 0, `host ${h.name}: the tnet daemon stops cleanly`);
  await cluster.finish(t);
  t.comment(`the whole case took ${Date.now() - t0} ms`);
});
