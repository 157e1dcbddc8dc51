/**
 * tnet's macvlan driver behind dockerd (Debian docker.io 20.10), as the `tnet-macvlan` plugin,
 * with tnet's IPAM: containers on a veth parent whose far end is an "outside" namespace (another
 * machine on the segment), host access, Docker's `-p` behaviour on macvlan, parent refusals, a
 * tnet restart. The whole file runs in its own network + mount namespace (docker-harness.ts).
 */
import t from 'tap';
import { sh } from '../integration/harness.js';
import { type Dockerd, importBusybox, isolateDocker, pluginCall, startDockerd, startTnet, tnetLeftovers, logsOnFailure } from './docker-harness.js';

await isolateDocker();

const EXT = 'ext-dmv';
const PARENT = 'xh-dmv';

function outside(tt: Parameters<typeof startTnet>[0]): void {
  const r = sh(
    `ip netns add ${EXT} && ip -n ${EXT} link set lo up && ip link add ${PARENT} type veth peer name eth0 netns ${EXT} && ` +
      `ip link set ${PARENT} up && ip -n ${EXT} addr add 10.98.0.254/24 dev eth0 && ip -n ${EXT} link set eth0 up`,
  );
  if (r.code !== 0) throw new Error(`outside: ${r.out}`);
  tt.teardown(() => void sh(`ip link del ${PARENT} 2>/dev/null; ip netns del ${EXT} 2>/dev/null`));
}

const ipOf = (d: Dockerd, ctr: string, net: string) => d.docker('inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, ctr).out;

t.test('docker network create -d tnet-macvlan: containers on the segment, host access, -p, refusals, restart', async (t) => {
  const tnet = await startTnet(t);
  const d = await startDockerd(t);
  const img = importBusybox(d);
  outside(t);
  logsOnFailure(t, tnet, d);
  t.same((await pluginCall('/Plugin.Activate', '', '/run/docker/plugins/tnet-macvlan.sock')).json, { Implements: ['NetworkDriver'] }, 'the tnet-macvlan plugin socket answers');

  d.ok(t, 'network', 'create', '-d', 'tnet-macvlan', '--ipam-driver', 'tnet', '--subnet', '10.98.0.0/24', '--gateway', '10.98.0.254',
    '--ip-range', '10.98.0.0/25', '-o', `parent=${PARENT}`, '-o', 'host_access=true', 'mv');
  const info = JSON.parse(d.ok(t, 'network', 'inspect', 'mv'))[0];
  t.equal(info.Driver, 'tnet-macvlan', 'Docker shows the plugin as the driver');
  t.equal(info.Options.parent, PARENT, 'the parent option as given');
  d.ok(t, 'run', '-d', '--name', 'ca', '--network', 'mv', img, 'sleep', '300');
  const run = d.docker('run', '-d', '--name', 'cb', '--network', 'mv', '-p', '8080:80', img, 'sleep', '300');
  t.equal(run.code, 0, `-p on a macvlan container: it starts, as with Docker's macvlan (${run.err})`);
  const a = ipOf(d, 'ca', 'mv');
  const b = ipOf(d, 'cb', 'mv');
  t.match(a, /^10\.98\.0\.\d+$/, `a has an address from tnet's IPAM (${a})`);
  // busybox's ip has no -d: look from the host into the container's namespace.
  const pid = d.ok(t, 'inspect', '-f', '{{.State.Pid}}', 'ca');
  t.match(sh(`nsenter -t ${pid} -n ip -d -o link show eth0`).out, /macvlan mode bridge/, 'eth0 in the container is a bridge-mode macvlan');
  t.match(d.ok(t, 'exec', 'ca', 'ip', 'route'), /default via 10\.98\.0\.254 dev eth0/, 'default route via the segment\'s gateway');
  t.equal(d.docker('exec', 'ca', 'ping', '-c', '1', '-W', '2', b).code, 0, 'a pings b');
  t.equal(d.docker('exec', 'ca', 'ping', '-c', '1', '-W', '2', '10.98.0.254').code, 0, 'a reaches the outside host on the segment');
  t.equal(sh(`ping -c 1 -W 2 ${a}`).code, 0, 'host access: the host pings the container');
  t.match(tnet.log(), /macvlan driver does not support port mappings/, 'the -p request is reported, as Docker\'s macvlan does');
  t.notMatch(sh('nft list ruleset 2>/dev/null').out, /dport 8080/, 'and no port is mapped');

  // A restart of tnet: the containers keep working, the shim is the same link.
  const shimBefore = sh("ip -o link show | grep tnh- | cut -d: -f1,2").out;
  t.match(shimBefore, /tnh-/, 'the host access shim exists');
  await tnet.stop();
  await tnet.start();
  t.equal(sh("ip -o link show | grep tnh- | cut -d: -f1,2").out, shimBefore, 'after a tnet restart the shim is the same link');
  t.equal(d.docker('exec', 'cb', 'ping', '-c', '1', '-W', '2', a).code, 0, 'after a tnet restart b still pings a');
  t.equal(sh(`ping -c 1 -W 2 ${b}`).code, 0, 'and the host still reaches b');

  const lo = d.docker('network', 'create', '-d', 'tnet-macvlan', '--ipam-driver', 'tnet', '--subnet', '10.97.0.0/24', '-o', 'parent=lo', 'bad');
  t.not(lo.code, 0, 'parent=lo is refused');
  t.match(lo.err, /loopback interface is not a valid macvlan parent link/, 'with Docker\'s reason');
  const vlan = d.docker('network', 'create', '-d', 'tnet-macvlan', '--ipam-driver', 'tnet', '--subnet', '10.97.0.0/24', '-o', `parent=${PARENT}.10`, 'bad');
  if (sh(`ip link add link ${PARENT} name probe.10 type vlan id 10 && ip link del probe.10`).code === 0) {
    t.equal(vlan.code, 0, 'a kernel with 802.1Q: the VLAN parent is made');
    d.ok(t, 'network', 'rm', 'bad');
  } else {
    t.not(vlan.code, 0, 'a VLAN parent on a kernel without 802.1Q is refused');
    t.match(vlan.err, /802\.1Q VLAN sub-interfaces are not supported on this kernel/, 'saying why');
  }

  // Without a parent (Docker's own driver fails here: the kernel has no dummy links): an internal
  // segment on a parent tnet makes.
  d.ok(t, 'network', 'create', '-d', 'tnet-macvlan', '--ipam-driver', 'tnet', '--internal', '--subnet', '10.96.0.0/24', 'seg');
  d.ok(t, 'run', '-d', '--name', 'cs', '--network', 'seg', img, 'sleep', '300');
  t.equal(d.docker('network', 'connect', 'seg', 'ca').code, 0, 'a second network connected to a running container');
  t.equal(d.docker('exec', 'cs', 'ping', '-c', '1', '-W', '2', ipOf(d, 'ca', 'seg')).code, 0, 'containers talk on the internal segment');
  t.notMatch(d.ok(t, 'exec', 'cs', 'ip', 'route'), /default/, 'an internal network gives no default route');
  d.ok(t, 'rm', '-f', 'cs');
  d.ok(t, 'network', 'disconnect', 'seg', 'ca');
  d.ok(t, 'network', 'rm', 'seg');

  // passthru: the second container is refused, with the reason.
  sh('ip link add xh-dpt type veth peer name xh-dptp && ip link set xh-dptp up && ip link set xh-dpt up');
  t.teardown(() => void sh('ip link del xh-dpt 2>/dev/null'));
  d.ok(t, 'network', 'create', '-d', 'tnet-macvlan', '--ipam-driver', 'tnet', '--subnet', '10.95.0.0/24', '-o', 'parent=xh-dpt', '-o', 'macvlan_mode=passthru', 'pt');
  d.ok(t, 'run', '-d', '--name', 'p1', '--network', 'pt', img, 'sleep', '300');
  const p2 = d.docker('run', '-d', '--name', 'p2', '--network', 'pt', img, 'sleep', '300');
  t.not(p2.code, 0, 'a second container on a passthru network does not start');
  t.match(p2.err, /passthru mode: its parent xh-dpt takes a single endpoint/, 'Docker shows tnet\'s reason');
  d.docker('rm', '-f', 'p2');
  d.ok(t, 'rm', '-f', 'p1');
  d.ok(t, 'network', 'rm', 'pt');

  d.ok(t, 'rm', '-f', 'ca', 'cb');
  d.ok(t, 'network', 'rm', 'mv');
  t.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'nothing tnet made is left (the shim went with the network)');
  t.equal(sh(`ip -4 route | grep 10.98`).out.trim(), '', 'no host route is left');
});
