/**
 * The macvlan driver on a real kernel, with real traffic: veth pairs as parents whose far ends
 * sit in an "outside" namespace (ext-mv, another machine on the segment). Each mode's
 * reachability as the kernel defines it, host access on and off, passthru's rules, parent checks
 * (including 802.1Q, which this kernel lacks), shared parents, the internal segment without a
 * parent, and restarts (a daemon restart keeps every endpoint; a "reboot" brings parents back).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { assertClean, inSandbox, isolate, leftovers, netnsOf, ping, sh, stateDir, until } from './harness.js';

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');
type Controller = import('../../libnetwork/controller.js').Controller;
const { isTnetError } = await import('../../libnetwork/errors.js');

const EXT = 'ext-mv';

/**
 * A parent veth `xh-NAME` in the test's namespace; its far end `e-NAME` in the outside namespace
 * with `extIp`, or enslaved to a hairpin bridge there (a VEPA switch) holding `extIp`.
 */
function parent(tt: Test, name: string, extIp: string, opts: { hairpinSwitch?: boolean } = {}): string {
  const dev = `xh-${name}`;
  sh(`ip netns list | grep -q '^${EXT}\\b' || (ip netns add ${EXT} && ip -n ${EXT} link set lo up)`);
  const far = opts.hairpinSwitch
    ? `ip -n ${EXT} link add sw-${name} type bridge && ip -n ${EXT} link set e-${name} master sw-${name} && ` +
      `ip -n ${EXT} link set e-${name} type bridge_slave hairpin on && ip -n ${EXT} addr add ${extIp} dev sw-${name} && ip -n ${EXT} link set sw-${name} up`
    : `ip -n ${EXT} addr add ${extIp} dev e-${name}`;
  const r = sh(`ip link add ${dev} type veth peer name e-${name} netns ${EXT} && ip link set ${dev} up && ip -n ${EXT} link set e-${name} up && ${far}`);
  if (r.code !== 0) throw new Error(`parent ${dev}: ${r.out}`);
  tt.teardown(() => void sh(`ip link del ${dev} 2>/dev/null`));
  return dev;
}

const extPing = (ip: string) => sh(`ip netns exec ${EXT} ping -c 1 -W 1 ${ip}`).code === 0;
const hostPing = (ip: string) => sh(`ping -c 1 -W 1 ${ip}`).code === 0;
const addr = (c: Controller, sb: string, net: string) =>
  c.endpointsOfSandbox(c.sandbox(sb).id).find((e) => e.networkId === c.network(net).id)!.ipv4!.toString();
const macOf = (dev: string) => /link\/ether (\S+)/.exec(sh(`ip -o link show ${dev}`).out)?.[1];

async function rejects(tt: Test, p: Promise<unknown>, code: string, re: RegExp, msg: string): Promise<void> {
  try {
    await p;
    tt.fail(`${msg}: it was accepted`);
  } catch (e) {
    tt.ok(isTnetError(e) && e.code === code, `${msg}: ${code} (${isTnetError(e) ? e.code : String(e)})`);
    tt.match((e as Error).message, re, `${msg}: the message says why`);
  }
}

t.teardown(() => void sh(`ip netns del ${EXT} 2>/dev/null`));

t.test('modes: bridge siblings talk, private ones do not, vepa only through a hairpin switch; everyone reaches the segment', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  const pb = parent(t, 'mb', '10.61.0.254/24');
  const pp = parent(t, 'mp', '10.62.0.254/24');
  const pv = parent(t, 'mv', '10.63.0.254/24');
  const ph = parent(t, 'mh', '10.64.0.254/24', { hairpinSwitch: true });
  await c.createNetwork({ name: 'br', driver: 'macvlan', subnet: '10.61.0.0/24', gateway: '10.61.0.254', options: { parent: pb } });
  await c.createNetwork({ name: 'pr', driver: 'macvlan', subnet: '10.62.0.0/24', gateway: '10.62.0.254', options: { parent: pp, macvlan_mode: 'private' } });
  await c.createNetwork({ name: 've', driver: 'macvlan', subnet: '10.63.0.0/24', gateway: '10.63.0.254', options: { parent: pv, mode: 'vepa' } });
  await c.createNetwork({ name: 'vh', driver: 'macvlan', subnet: '10.64.0.0/24', gateway: '10.64.0.254', options: { parent: ph, mode: 'vepa' } });
  for (const s of ['a', 'b']) await c.createSandbox({ name: s });
  for (const n of ['br', 'pr', 've', 'vh']) for (const s of ['a', 'b']) await c.connect(n, s);

  t.match(inSandbox('a', 'ip -d -o link show eth0').out, /macvlan mode bridge/, 'the sandbox holds a macvlan sub-interface, in bridge mode');
  t.match(inSandbox('a', 'ip -d -o link show eth1').out, /macvlan mode private/, 'macvlan_mode=private');
  t.match(inSandbox('a', 'ip -o link show eth0').out, /alias tnet:/, 'the interface carries tnet\'s tag');
  t.match(inSandbox('a', 'ip route show default').out, /default via 10\.61\.0\.254 dev eth0/, 'the default route goes through the segment\'s gateway');
  t.same(leftovers().links, [], 'no link in the host namespace: no veth, no bridge, nothing moved');

  t.ok(ping('a', addr(c, 'b', 'br')), 'bridge: a pings b');
  t.ok(ping('a', '10.61.0.254'), 'bridge: a reaches the outside host on the segment');
  t.notOk(ping('a', addr(c, 'b', 'pr')), 'private: a cannot reach b');
  t.ok(ping('a', '10.62.0.254'), 'private: a reaches the outside host');
  t.notOk(ping('a', addr(c, 'b', 've')), 'vepa: a cannot reach b when the switch does not hairpin');
  t.ok(ping('a', '10.63.0.254'), 'vepa: a reaches the outside host');
  t.ok(ping('a', addr(c, 'b', 'vh')), 'vepa: a reaches b through a hairpin switch');
  t.ok(extPing(addr(c, 'b', 'br')), 'the outside reaches an endpoint at its own address');

  await c.disconnect('br', 'a');
  t.equal(inSandbox('a', 'ip link show eth0').code === 0, false, 'disconnect removes the sub-interface from the sandbox');
  for (const s of ['a', 'b']) await c.deleteSandbox(s);
  for (const n of ['br', 'pr', 've', 'vh']) await c.deleteNetwork(n);
  c.close();
  await assertClean(t);
});

t.test('host access: off, the kernel keeps host and endpoints apart; on, a shim routes both ways and goes with the network', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  const p = parent(t, 'ha', '10.65.0.254/24');
  // The host's own address on the parent: the case Docker users hit.
  sh(`ip addr add 10.65.0.250/24 dev ${p}`);
  await c.createNetwork({ name: 'off', driver: 'macvlan', subnet: '10.65.0.0/24', gateway: '10.65.0.254', ipRange: '10.65.0.0/25', options: { parent: p } });
  await c.createSandbox({ name: 'a' });
  await c.connect('off', 'a');
  const a = addr(c, 'a', 'off');
  t.notOk(hostPing(a), 'off: the host cannot reach its endpoint through the parent');
  t.notOk(ping('a', '10.65.0.250'), 'off: the endpoint cannot reach the parent\'s address');
  await c.deleteSandbox('a');
  await c.deleteNetwork('off');
  sh(`ip addr del 10.65.0.250/24 dev ${p}`);

  // Other addresses than the first network's: its endpoints' MACs (derived from their addresses)
  // may linger a moment in namespaces the kernel is still tearing down.
  const net = await c.createNetwork({
    name: 'on', driver: 'macvlan', subnet: '10.65.0.0/24', gateway: '10.65.0.254', ipRange: '10.65.0.128/25', options: { parent: p, host_access: 'true' },
  });
  const d = c.networkDetails(net);
  t.equal(d.host_access, 'true', 'inspect shows host access');
  t.match(d.host_access_address, /^169\.254\.\d+\.\d+$/, 'inspect shows the address the endpoints reach the host at');
  t.match(sh(`ip -d -o link show ${d.host_access_shim}`).out, /macvlan mode bridge.*alias tnet-macvlan:/s, 'the shim is a tagged bridge-mode macvlan on the parent');
  for (const s of ['a', 'b']) await c.createSandbox({ name: s });
  await c.connect('on', 'a');
  await c.connect('on', 'b');
  t.ok(hostPing(addr(c, 'a', 'on')), 'on: the host reaches endpoint a');
  t.ok(hostPing(addr(c, 'b', 'on')), 'on: the host reaches endpoint b');
  t.ok(ping('a', d.host_access_address!), 'on: the endpoint reaches the host at the shim address');
  t.ok(ping('a', addr(c, 'b', 'on')), 'on: siblings still talk');
  t.ok(ping('a', '10.65.0.254'), 'on: the endpoint still reaches the segment');
  await c.disconnect('on', 'b');
  t.equal(sh('ip -4 route show 10.65.0.129').out.trim(), '', 'the disconnected endpoint\'s host route is gone');
  t.match(sh(`ip -4 route show ${addr(c, 'a', 'on')}`).out, new RegExp(`dev ${d.host_access_shim}`), 'the remaining endpoint\'s host route goes through the shim');
  await c.deleteSandbox('a');
  await c.deleteSandbox('b');
  await c.deleteNetwork('on');
  t.equal(sh(`ip link show ${d.host_access_shim}`).code === 0, false, 'the shim goes with the network');
  t.equal(sh('ip -4 route show 10.65.0.0/24').out.trim() + sh('ip -4 route | grep 10.65').out.trim(), '', 'no host route is left');
  await rejects(t, c.createNetwork({ name: 'x', driver: 'macvlan', subnet: '10.66.0.0/24', options: { parent: p, host_access: 'true', mode: 'private' } }),
    'invalid-argument', /private mode/, 'host access with private mode is refused');
  await rejects(t, c.createNetwork({ name: 'x', driver: 'macvlan', subnet: '10.66.0.0/24', options: { parent: p, host_access: 'yes' } }),
    'invalid-argument', /not a boolean/, 'host_access=yes is refused');
  c.close();
  await assertClean(t);
});

t.test('passthru: one endpoint per parent, the parent takes its MAC and gets its own back', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  const p = parent(t, 'pt', '10.67.0.254/24');
  const own = macOf(p);
  await c.createNetwork({ name: 'pt', driver: 'macvlan', subnet: '10.67.0.0/24', gateway: '10.67.0.254', options: { parent: p, macvlan_mode: 'passthru' } });
  await rejects(t, c.createNetwork({ name: 'x', driver: 'macvlan', subnet: '10.68.0.0/24', options: { parent: p } }),
    'conflict', /already used by macvlan network "pt" in passthru mode/, 'another network on a passthru parent');
  for (const s of ['a', 'b']) await c.createSandbox({ name: s });
  const ea = await c.connect('pt', 'a');
  t.equal(macOf(p), ea.mac, 'the parent carries the endpoint\'s MAC');
  t.ok(ping('a', '10.67.0.254'), 'the passthru endpoint reaches the segment');
  await rejects(t, c.connect('pt', 'b'), 'conflict', /passthru mode: its parent xh-pt takes a single endpoint/, 'a second passthru endpoint');
  t.same(c.endpointsOfSandbox(c.sandbox('b').id), [], 'the refused endpoint left no record');
  await c.disconnect('pt', 'a');
  t.equal(macOf(p), own, 'the parent has its own MAC back');
  await c.connect('pt', 'b');
  t.ok(ping('b', '10.67.0.254'), 'the parent takes an endpoint again');
  await c.deleteSandbox('b');
  // The kernel tears a deleted namespace down asynchronously; the child goes with it.
  t.ok(await until(() => macOf(p) === own), 'the parent has its own MAC back when the sandbox goes');
  await c.deleteSandbox('a');
  await c.deleteNetwork('pt');
  c.close();
  await assertClean(t);
});

t.test('parents: checks and messages, 802.1Q on a kernel without it, shared parents, the internal segment', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  const p = parent(t, 'pc', '10.69.0.254/24');
  const before = leftovers();
  const bad = (options: Record<string, string>, code: string, re: RegExp, msg: string) =>
    rejects(t, c.createNetwork({ name: 'bad', driver: 'macvlan', subnet: '10.70.0.0/24', options }), code, re, msg);
  await bad({ parent: 'lo' }, 'invalid-argument', /loopback interface is not a valid macvlan parent link/, 'parent=lo');
  await bad({ parent: 'nosuch' }, 'invalid-argument', /does not exist.*example formatting is eth0\.10/, 'a parent that does not exist');
  await bad({ parent: `${p}.5000` }, 'invalid-argument', /vlan id must be between 1-4094, received: 5000/, 'a VLAN id out of range');
  await bad({ parent: 'nosuch.10' }, 'not-found', /parent interface was not found on the host: nosuch/, 'a VLAN on a base that does not exist');
  await bad({ parent: p, macvlan_mode: 'foo' }, 'invalid-argument', /requested macvlan mode 'foo' is not valid/, 'an unknown mode');
  const vlan = c.createNetwork({ name: 'bad', driver: 'macvlan', subnet: '10.70.0.0/24', options: { parent: `${p}.10` } });
  const probe = sh(`ip link add link ${p} name probe.10 type vlan id 10`);
  if (probe.code === 0) {
    sh('ip link del probe.10');
    // A kernel with 802.1Q: the sub-interface is made, tagged, and goes with the network.
    await vlan;
    t.match(sh(`ip -d -o link show ${p}.10`).out, /vlan protocol 802.1Q id 10/, 'the 802.1Q sub-interface is made');
    await c.deleteNetwork('bad');
    t.equal(sh(`ip link show ${p}.10`).code === 0, false, 'and deleted with the network');
  } else {
    t.comment(`this kernel has no 802.1Q VLANs (${probe.out.trim()}): checking the refusal`);
    await rejects(t, vlan, 'unsupported', /802\.1Q VLAN sub-interfaces are not supported on this kernel/, `parent=${p}.10`);
  }
  t.same(c.networks(), [], 'nothing refused was recorded');
  t.same(leftovers(), before, 'nothing refused was made');

  // Two networks on one parent, with different subnets; overlapping ones are refused.
  sh(`ip -n ${EXT} addr add 10.69.0.126/24 dev e-pc`);
  await c.createNetwork({ name: 'n1', driver: 'macvlan', subnet: '10.69.0.0/25', gateway: '10.69.0.126', options: { parent: p } });
  await c.createNetwork({ name: 'n2', driver: 'macvlan', subnet: '10.69.0.128/25', gateway: '10.69.0.254', options: { parent: p } });
  await rejects(t, c.createNetwork({ name: 'n3', driver: 'macvlan', subnet: '10.69.0.0/24', options: { parent: p } }), 'conflict', /overlap/, 'an overlapping subnet on the same parent');
  for (const s of ['a', 'b']) await c.createSandbox({ name: s });
  await c.connect('n1', 'a');
  await c.connect('n2', 'b');
  t.ok(ping('a', '10.69.0.126') && ping('b', '10.69.0.254'), 'both networks reach the segment through the shared parent');
  await rejects(t, c.connect('n1', 'b', { ports: [{ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 8080, hostPortEnd: 0 }] }),
    'invalid-argument', /ports are not published/, 'publishing a port on a macvlan endpoint');
  await c.deleteNetwork('n1').catch(() => undefined);
  // One MAC twice on a parent: the kernel says EADDRINUSE; tnet waits a moment for an endpoint
  // that is going (its namespace being freed) and then says which MAC clashes.
  await c.createSandbox({ name: 'm' });
  const macA = c.endpointsOfSandbox(c.sandbox('a').id)[0]!.mac;
  const t0 = Date.now();
  await rejects(t, c.connect('n1', 'm', { mac: macA }), 'conflict', new RegExp(`MAC address ${macA} of eth0 is already used by another interface on the same segment`), 'a MAC already on the parent');
  t.ok(Date.now() - t0 >= 900, 'after waiting about a second for a departing endpoint');
  t.same(c.endpointsOfSandbox(c.sandbox('m').id), [], 'and nothing is left of the refused endpoint');
  // The same address (so the same MAC) right after its endpoint went with its sandbox.
  const ipA = c.endpointsOfSandbox(c.sandbox('a').id)[0]!.ipv4!.toString();
  await c.deleteSandbox('a');
  await c.connect('n1', 'm', { ip: ipA });
  t.ok(ping('m', '10.69.0.126'), `a new endpoint takes the address (and MAC) of one just gone (${ipA})`);
  await c.deleteSandbox('m');
  await c.deleteNetwork('n1');
  t.ok(ping('b', '10.69.0.254'), 'deleting one network leaves the other\'s endpoints working');
  t.equal(sh(`ip link show ${p}`).code, 0, 'a user\'s parent is never deleted');
  await c.deleteSandbox('b');
  await c.deleteNetwork('n2');

  // No parent: an internal segment on a parent tnet makes and owns.
  const seg = await c.createNetwork({ name: 'seg', driver: 'macvlan', subnet: '10.71.0.0/24', internal: true });
  const own = c.networkDetails(seg).parent!;
  t.match(own, /^tnm-[0-9a-f]{11}$/, 'the network has a parent of tnet\'s');
  t.match(sh(`ip -o link show ${own}`).out, /alias tnet-macvlan:/, 'tagged as tnet\'s');
  for (const s of ['a', 'b']) await c.createSandbox({ name: s });
  await c.connect('seg', 'a');
  await c.connect('seg', 'b');
  t.ok(ping('a', addr(c, 'b', 'seg')), 'endpoints on the internal segment talk');
  t.equal(inSandbox('a', 'ip route show default').out.trim(), '', 'an internal network gives no default route');
  for (const s of ['a', 'b']) await c.deleteSandbox(s);
  await c.deleteNetwork('seg');
  t.equal(sh(`ip link show ${own}`).code === 0, false, 'tnet\'s parent goes with the network');
  c.close();
  await assertClean(t);
});

t.test('restarts: endpoints stay as they are; after a "reboot" parents and shims come back and endpoints work', async (t) => {
  const dir = stateDir(t);
  let c = await Controller.open({ stateDir: dir });
  const p = parent(t, 'rs', '10.72.0.254/24');
  await c.createNetwork({ name: 'up', driver: 'macvlan', subnet: '10.72.0.0/24', gateway: '10.72.0.254', options: { parent: p, host_access: 'true' } });
  const seg = await c.createNetwork({ name: 'seg', driver: 'macvlan', subnet: '10.73.0.0/24', internal: true });
  const own = c.networkDetails(seg).parent!;
  for (const s of ['a', 'b']) {
    await c.createSandbox({ name: s });
    await c.connect('up', s);
    await c.connect('seg', s);
  }
  // Index and name: a link made again gets a new index.
  const ids = (out: string) => out.split('\n').map((l) => l.split(' ').slice(0, 2).join(' ')).join('\n');
  const ifindex = (sb: string) => ids(inSandbox(sb, 'ip -o link show').out);
  const links = { a: ifindex('a'), b: ifindex('b'), host: ids(sh('ip -o link show').out) };
  c.close();
  c = await Controller.open({ stateDir: dir });
  t.equal(ifindex('a'), links.a, 'restart: a\'s interfaces are the same ones (not made again)');
  t.equal(ifindex('b'), links.b, 'restart: b\'s too');
  t.equal(ids(sh('ip -o link show').out), links.host, 'restart: the parent and the shim are the same ones');
  t.ok(hostPing(addr(c, 'a', 'up')), 'restart: the host still reaches a');
  t.ok(ping('a', addr(c, 'b', 'seg')), 'restart: a still reaches b on the internal segment');

  // A reboot: the sandboxes, tnet's parent and the shim are gone (the user's parent comes back with the machine).
  c.close();
  for (const s of ['a', 'b']) sh(`ip netns del ${netnsOf(s)}`);
  sh(`ip link del ${own}; ip link del $(ip -o link show | awk -F': ' '/tnh-/{print $2}' | cut -d@ -f1)`);
  t.equal(sh(`ip link show ${own}`).code === 0, false, 'before the restart: tnet\'s parent is gone');
  c = await Controller.open({ stateDir: dir });
  t.equal(sh(`ip link show ${own}`).code, 0, 'tnet\'s parent is back');
  t.ok(hostPing(addr(c, 'a', 'up')), 'the shim is back: the host reaches a');
  t.ok(ping('a', addr(c, 'b', 'seg')), 'the endpoints are back: a reaches b on the internal segment');
  t.ok(ping('b', '10.72.0.254'), 'b reaches the segment');
  for (const s of ['a', 'b']) await c.deleteSandbox(s);
  await c.deleteNetwork('up');
  await c.deleteNetwork('seg');
  c.close();
  await assertClean(t);
});

t.test('a lab puts nodes on a macvlan segment of a host interface', async (t) => {
  const c = await Controller.open({ stateDir: stateDir(t) });
  const p = parent(t, 'lb', '10.74.0.254/24');
  await c.applyLab({
    name: 'mvl',
    networks: { uplink: { driver: 'macvlan', parent: p, subnet: '10.74.0.0/24' } },
    nodes: { n1: {}, n2: {} },
    links: [{ endpoints: ['n1:eth0', 'uplink'] }, { endpoints: ['n2:eth0', 'uplink'] }],
  });
  const ns = (n: string) => c.labNodeNetns('mvl', n);
  const inNode = (n: string, cmd: string) => sh(`ip netns exec ${ns(n)} ${cmd}`);
  t.match(inNode('n1', 'ip -d -o link show eth0').out, /macvlan mode bridge/, 'the node\'s eth0 is a macvlan on the host interface');
  const n2 = /inet (\S+)\//.exec(inNode('n2', 'ip -4 -o addr show eth0').out)?.[1];
  t.ok(n2 && inNode('n1', `ping -c 1 -W 1 ${n2}`).code === 0, `n1 pings n2 (${n2}) on the segment`);
  t.equal(inNode('n1', 'ping -c 1 -W 1 10.74.0.254').code, 0, 'n1 reaches the outside host on the segment');
  await c.destroyLab('mvl');
  t.equal(sh(`ip link show ${p}`).code, 0, 'the host interface stays');
  c.close();
  await assertClean(t);
});

const main = join(import.meta.dirname, '../../dist/cli/main.js'); // built by `npx tsc -p tsconfig.json`
const has8021q = sh('ip link add xh-probe type veth peer name xh-probe2 && ip link add link xh-probe name xh-probe.10 type vlan id 10').code === 0;
sh('ip link del xh-probe 2>/dev/null');
const cliSkip = !existsSync(main) ? 'dist/ is not built (npx tsc -p tsconfig.json)' : has8021q ? 'this kernel has 802.1Q: the unsupported path cannot be shown here' : false;
t.test('the CLI: a VLAN parent on a kernel without 802.1Q exits 5 (unsupported here); a bad parent exits 2', { skip: cliSkip }, async (t) => {
  const dir = stateDir(t);
  const socket = join(dir, 'tnet.sock');
  const p = parent(t, 'cl', '10.75.0.254/24');
  const d = spawn(process.execPath, [main, 'daemon', '--state-dir', dir, '--socket', socket, '--no-docker-plugin', '--dns-upstream', '192.0.2.53'], { stdio: 'ignore' });
  t.teardown(() => {
    if (d.exitCode === null) d.kill('SIGKILL');
  });
  const cli = (...args: string[]) => spawnSync(process.execPath, [main, ...args, '--state-dir', dir, '--socket', socket], { encoding: 'utf8', timeout: 30_000 });
  t.ok(await until(() => existsSync(socket) && cli('network', 'ls').status === 0, 15_000), 'the daemon answers');
  const vlan = cli('network', 'create', '-d', 'macvlan', 'v10', '-o', `parent=${p}.10`, '--subnet', '10.75.0.0/24');
  t.equal(vlan.status, 5, 'exit 5: unsupported on this kernel');
  t.match(vlan.stderr, /802\.1Q VLAN sub-interfaces are not supported on this kernel/, 'the message says why');
  const lo = cli('network', 'create', '-d', 'macvlan', 'l', '-o', 'parent=lo', '--subnet', '10.75.0.0/24');
  t.equal(lo.status, 2, 'exit 2: a loopback parent is bad input');
  t.notMatch(cli('network', 'ls').stdout, /\bv10\b/, 'nothing was created');
  const ok = cli('network', 'create', '-d', 'macvlan', 'm', '-o', `parent=${p}`, '-o', 'mode=private', '--subnet', '10.75.0.0/24');
  t.equal(ok.status, 0, `an existing parent works (${ok.stderr.trim()})`);
  t.match(cli('network', 'inspect', 'm').stdout, /private/, 'inspect shows the mode');
  t.equal(cli('network', 'rm', 'm').status, 0, 'rm');
  d.kill('SIGTERM');
  await until(() => d.exitCode !== null, 10_000);
  await assertClean(t);
});
