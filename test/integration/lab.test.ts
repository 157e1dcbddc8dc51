import { statSync } from 'node:fs';
import t from 'tap';
import { assertClean, isolate, sh, stateDir, until } from './harness.js';

// Labs end to end: a Controller in this process (as the library and the daemon use it), real
// namespaces, real traffic with ping inside the nodes.

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');
type LabSpec = import('../../libnetwork/lab/topology.js').LabSpec;

const inNode = (netns: string, cmd: string) => sh(`ip netns exec ${netns} ${cmd}`);
const pingFrom = (netns: string, ip: string) => inNode(netns, `ping -c 1 -W 2 ${ip}`).code === 0;
const mtuOf = (netns: string, ifname: string) => Number(/mtu (\d+)/.exec(inNode(netns, `ip link show ${ifname}`).out)?.[1]);
const ino = (netns: string) => statSync(`/run/netns/${netns}`).ino;
const bare = (c: string) => c.split('/')[0]!;

const example = (): LabSpec => ({
  name: 'lab1',
  networks: { lan0: { subnet: '10.10.0.0/24', mtu: 9000 } },
  nodes: {
    r1: { sysctls: { 'net.ipv4.ip_forward': 1 }, exec: ['ip route add 10.0.0.2/32 via 10.254.0.1'], run: ['sleep 300'] },
    r2: { loopback: '10.0.0.2/32' },
    h1: {},
  },
  links: [
    { endpoints: ['r1:eth1', 'r2:eth1'], mtu: 1400, rate: '100mbit' },
    { endpoints: ['h1:eth0', 'lan0'] },
    { endpoints: ['r1:eth2', 'lan0'], ipv4: '10.10.0.254/24' },
  ],
});

t.test('the example lab: links up, addresses ping, MTU equal, sysctls, exec, run', async (tt) => {
  const c = await Controller.open({ stateDir: stateDir(tt) });
  tt.teardown(() => c.close());
  const progress: number[] = [];
  const r = await c.applyLab(example(), { onProgress: (p) => progress.push(p.done) });
  tt.ok(progress.length > 0, 'progress reported');
  tt.same(r.removed, [], 'nothing removed on a first create');
  tt.ok(r.created.includes('node r1') && r.created.includes('link r1:eth1|r2:eth1') && r.created.includes('network lan0'), 'created listed');
  const ns = (n: string) => c.labNodeNetns('lab1', n);
  const p = r.plan;
  const [a, b] = [p.wires[0]!.a.addresses[0]!, p.wires[0]!.b.addresses[0]!];
  tt.match(a, /\/31$/, 'a point-to-point link gets a /31');
  tt.ok(pingFrom(ns('r1'), bare(b)), `r1 pings r2 over the p2p link (${b})`);
  tt.ok(pingFrom(ns('r2'), bare(a)), 'r2 pings r1 back');
  tt.equal(mtuOf(ns('r1'), 'eth1'), 1400, 'MTU of r1:eth1');
  tt.equal(mtuOf(ns('r2'), 'eth1'), 1400, 'MTU equal on both ends');
  tt.equal(mtuOf(ns('h1'), 'eth0'), 9000, 'a LAN port gets the LAN MTU');
  for (const n of ['r1', 'r2']) tt.match(inNode(ns(n), 'tc qdisc show dev eth1').out, /tbf .*rate 100Mbit/, `rate shaping (tbf) on ${n}:eth1`);
  for (const n of ['r1', 'r2']) tt.match(inNode(ns(n), 'ip -o link show eth1').out, /alias tnet:[0-9a-f]+:wire:/, `${n}:eth1 carries tnet's ownership alias`);
  const h1 = p.nodes.h1!.interfaces[0]!.addresses[0]!;
  tt.match(h1, /^10\.10\.0\.\d+\/24$/, 'h1 auto-numbered from lan0');
  tt.ok(pingFrom(ns('h1'), '10.10.0.254'), 'h1 pings r1 on the LAN at its given address');
  tt.ok(pingFrom(ns('r1'), bare(h1)), 'r1 pings h1');
  tt.ok(pingFrom(ns('r1'), '10.0.0.2'), 'r1 reaches r2 loopback through the route its exec added');
  tt.equal(inNode(ns('r1'), 'cat /proc/sys/net/ipv4/ip_forward').out.trim(), '1', 'sysctl applied in r1');
  tt.equal(inNode(ns('h1'), 'cat /proc/sys/net/ipv4/ip_forward').out.trim(), '0', 'and only there');
  const d = c.labDetails('lab1');
  const proc = d.nodes.find((n) => n.name === 'r1')!.processes[0]!;
  tt.ok(proc?.running, 'run: process started');
  tt.equal(sh(`readlink /proc/${proc.pid}/ns/net`).out.trim(), `net:[${ino(ns('r1'))}]`, 'inside r1');
  tt.same(c.labs().map((l) => [l.name, l.nodes, l.state]), [['lab1', 3, 'ready']], 'labs() lists it');

  // ---- re-create with a changed file: only the difference
  const r2ino = ino(ns('r2'));
  const r1ino = ino(ns('r1'));
  const changed = example();
  changed.nodes.h2 = {};
  changed.links.push({ endpoints: ['r2:eth2', 'h2:eth0'] });
  changed.links[1] = { endpoints: ['h1:eth0', 'lan0'] };
  changed.nodes.h1 = { sysctls: { 'net.ipv4.ip_forward': 1 } };
  const r3 = await c.applyLab(changed);
  tt.same(r3.created.sort(), ['link r2:eth2|h2:eth0', 'node h2'], 'the new node and link are created');
  tt.ok(r3.changed.includes('node h1'), 'the changed node is remade');
  tt.notOk(r3.changed.includes('network lan0') || r3.changed.includes('node r1') || r3.changed.includes('link r1:eth1|r2:eth1'), 'what did not change is not remade');
  tt.equal(ino(ns('r2')), r2ino, 'an untouched node keeps its namespace');
  tt.equal(ino(ns('r1')), r1ino, 'r1 too');
  tt.ok(sh(`kill -0 ${proc.pid}`).code === 0, "and r1's run: process keeps running");
  tt.ok(pingFrom(ns('h2'), bare(r3.plan.wires[1]!.a.addresses[0]!)), 'the new link works');
  tt.ok(pingFrom(ns('r1'), bare(b)), 'the old link still works');
  tt.equal(r3.plan.wires[0]!.a.addresses[0], a, 'an existing link keeps its addresses');

  // ---- a node remade next to a kept peer, and back: its old link end must not linger in the
  //      peer (the kernel frees a deleted namespace's links asynchronously)
  const r2changed = example();
  r2changed.nodes.r2 = { loopback: '10.0.0.2/32', sysctls: { 'net.ipv4.ip_forward': 1 } };
  for (const [i, spec] of [r2changed, example(), r2changed].entries()) {
    const r4 = await c.applyLab(spec);
    tt.ok(r4.changed.includes('node r2'), `r2 remade (${i + 1})`);
    tt.ok(pingFrom(ns('r1'), bare(r4.plan.wires[0]!.b.addresses[0]!)), `r1 pings the remade r2 over the p2p link (${i + 1})`);
  }

  // ---- destroy without the file, twice
  const d1 = await c.destroyLab('lab1');
  tt.ok(d1.removed > 0, 'destroy removes');
  tt.ok(await until(() => sh(`kill -0 ${proc.pid}`).code !== 0, 4000), 'run: process stopped');
  tt.same(await c.destroyLab('lab1'), { removed: 0 }, 'a second destroy is fine');
  tt.same(c.labs(), [], 'no lab left');
  tt.same((await c.pools()).filter((x) => x.owner === 'lab:lab1'), [], 'its pools are released');
  await assertClean(tt);
});

t.test('IPv6 auto-numbering, loopbacks from the pool, netem refused clearly', async (tt) => {
  const c = await Controller.open({ stateDir: stateDir(tt) });
  tt.teardown(() => c.close());
  const r = await c.applyLab({
    name: 'six', ipv6: true, pools: { lan4: '10.123.0.0/16', lanPrefix: 26 }, networks: { lan: {} }, nodes: { a: { loopback: 'auto' }, b: { loopback: 'auto' } },
    links: [{ endpoints: ['a', 'b'] }, { endpoints: ['a', 'lan'] }, { endpoints: ['b', 'lan'] }],
  });
  const w = r.plan.wires[0]!;
  const v6 = w.b.addresses.find((x) => x.includes(':'))!;
  tt.match(v6, /\/127$/, 'a point-to-point link gets a /127 too');
  tt.ok(pingFrom(c.labNodeNetns('six', 'a'), `-6 ${bare(v6)}`), 'a pings b over IPv6');
  const [la, lb] = [r.plan.nodes.a!.loopback[0]!, r.plan.nodes.b!.loopback[0]!];
  tt.match(la, /\/32$/, 'an auto loopback is a /32');
  tt.not(la, lb, 'each node its own');
  tt.match(inNode(c.labNodeNetns('six', 'b'), 'ip -o addr show dev lo').out, new RegExp(bare(lb).replace(/\./g, '\\.')), 'on lo');
  const lanB = r.plan.nodes.b!.interfaces.find((i) => i.network)!.addresses.find((x) => x.includes(':'));
  tt.ok(lanB, 'the LAN gives IPv6 addresses too');
  tt.equal(c.labDetails('six').networks[0]!.subnet, '10.123.0.0/26', 'an auto LAN comes from pools.lan4 in /lanPrefix');
  await c.destroyLab('six');
  await tt.rejects(
    c.applyLab({ name: 'slow', networks: {}, nodes: { a: {}, b: {} }, links: [{ endpoints: ['a', 'b'], delay: '10ms' }] }),
    { code: 'unsupported', message: /netem/ },
    'delay on a kernel without netem: unsupported, saying why',
  );
  tt.same(c.labs(), [], 'and nothing is created');
  await assertClean(tt);
});

t.test('exec failure names node, command and output; destroy cleans', async (tt) => {
  const c = await Controller.open({ stateDir: stateDir(tt) });
  tt.teardown(() => c.close());
  const spec: LabSpec = { name: 'bad', networks: {}, nodes: { x: { exec: ['echo hello-out; exit 3'] }, y: {} }, links: [{ endpoints: ['x', 'y'] }] };
  await tt.rejects(c.applyLab(spec), /node "x".*exec "echo hello-out; exit 3" failed with exit code 3[\s\S]*hello-out/, 'the error says node, command, code, output');
  tt.ok(pingFrom(c.labNodeNetns('bad', 'x'), bare(c.labDetails('bad').plan.wires[0]!.b.addresses[0]!)), 'the lab is left as created to look at');
  await c.destroyLab('bad');
  await assertClean(tt);
});

t.test('two labs created concurrently never collide; destroy leaves the other and a plain network', async (tt) => {
  const c = await Controller.open({ stateDir: stateDir(tt) });
  tt.teardown(() => c.close());
  await c.createNetwork({ name: 'plain' });
  // routes the auto pools must avoid (as a VPN's would be)
  sh('ip route add 10.0.0.0/24 dev lo && ip route add 10.254.0.0/16 dev lo');
  tt.teardown(() => void sh('ip route del 10.0.0.0/24 dev lo; ip route del 10.254.0.0/16 dev lo'));
  const lab = (name: string): LabSpec => ({
    name, networks: { lan: {} }, nodes: { a: {}, b: {}, c: {} },
    links: [{ endpoints: ['a', 'b'] }, { endpoints: ['b', 'c'] }, { endpoints: ['a', 'lan'] }, { endpoints: ['c', 'lan'] }],
  });
  const [x, y] = await Promise.all([c.applyLab(lab('one')), c.applyLab(lab('two'))]);
  tt.not(x.plan.wires[0]!.a.addresses[0], y.plan.wires[0]!.a.addresses[0], 'different p2p pools');
  const lanX = c.labDetails('one').networks[0]!.subnet;
  const lanY = c.labDetails('two').networks[0]!.subnet;
  tt.ok(lanX && lanY && lanX !== lanY, `different LAN subnets (${lanX}, ${lanY})`);
  tt.not(c.labNodeNetns('one', 'a'), c.labNodeNetns('two', 'a'), 'different namespaces for node "a"');
  for (const s of [lanX, lanY]) tt.not(s, '10.0.0.0/24', 'a LAN avoids a host route');
  for (const w of [x, y]) tt.notMatch(w.plan.wires[0]!.a.addresses[0]!, /^10\.254\./, 'p2p links avoid a host route');
  tt.not(c.findNetwork('plain')!.ipv4!.subnet.toString(), lanX, 'and the plain network');
  tt.ok(pingFrom(c.labNodeNetns('two', 'c'), bare(c.labDetails('two').nodes.find((n) => n.name === 'a')!.interfaces.find((i) => i.network)!.addresses[0]!)), 'lab two works');
  await c.destroyLab('one');
  tt.ok(pingFrom(c.labNodeNetns('two', 'a'), bare(y.plan.wires[0]!.b.addresses[0]!)), 'lab two still works after lab one is destroyed');
  tt.ok(c.findNetwork('plain'), 'the plain network is intact');
  await c.destroyLab('two');
  await c.deleteNetwork('plain');
  await assertClean(tt);
});

t.test('a restart repairs a wire whose veth is gone, and leaves intact ones alone', async (tt) => {
  const dir = stateDir(tt);
  let c = await Controller.open({ stateDir: dir });
  const r = await c.applyLab({ name: 'fix', networks: {}, nodes: { a: {}, b: {}, c: {} }, links: [{ endpoints: ['a', 'b'] }, { endpoints: ['b', 'c'] }] });
  const [a, b, cc] = ['a', 'b', 'c'].map((n) => c.labNodeNetns('fix', n)) as [string, string, string];
  const w0 = r.plan.wires[0]!;
  const w1 = r.plan.wires[1]!;
  const intact = sh(`ip -n ${cc} -o link show ${w1.b.ifname}`).out.split(':')[0];
  sh(`ip -n ${a} link del ${w0.a.ifname}`); // as if lost
  tt.notOk(pingFrom(a, bare(w0.b.addresses[0]!)), 'the link is broken');
  c.close();
  c = await Controller.open({ stateDir: dir });
  tt.teardown(() => c.close());
  tt.ok(pingFrom(a, bare(w0.b.addresses[0]!)), 'the reconcile made the wire again, with its addresses');
  tt.equal(mtuOf(b, w0.b.ifname), w0.mtu, 'and its MTU');
  tt.equal(sh(`ip -n ${cc} -o link show ${w1.b.ifname}`).out.split(':')[0], intact, 'the other wire is the same link (same ifindex)');
  await c.destroyLab('fix');
  await assertClean(tt);
});

t.test('a lab LAN of another driver (macvlan on a parent) and a network change', async (tt) => {
  sh('ip link add xh-mvp type veth peer name xh-mvq && ip link set xh-mvq up && ip link set xh-mvp up');
  tt.teardown(() => void sh('ip link del xh-mvp'));
  const c = await Controller.open({ stateDir: stateDir(tt) });
  tt.teardown(() => c.close());
  const spec = (mtu: number): LabSpec => ({
    name: 'mv', networks: { seg: { driver: 'macvlan', parent: 'xh-mvp', subnet: '10.66.0.0/24' }, lan: { mtu } }, nodes: { a: {}, b: {} },
    links: [{ endpoints: ['a', 'seg'] }, { endpoints: ['b', 'seg'] }, { endpoints: ['a', 'lan'] }, { endpoints: ['b', 'lan'] }],
  });
  const r = await c.applyLab(spec(1500));
  tt.equal(c.findNetwork('seg', 'lab:mv')?.driver, 'macvlan', 'the segment is a macvlan network owned by the lab');
  const bSeg = r.plan.nodes.b!.interfaces.find((i) => i.network === 'seg')!.addresses[0]!;
  tt.ok(pingFrom(c.labNodeNetns('mv', 'a'), bare(bSeg)), 'a pings b over the macvlan segment');
  const r2 = await c.applyLab(spec(1400));
  tt.ok(r2.changed.includes('network lan'), 'a changed network is made again');
  tt.notOk(r2.changed.includes('network seg'), 'the other network is left alone');
  tt.equal(mtuOf(c.labNodeNetns('mv', 'b'), r2.plan.nodes.b!.interfaces.find((i) => i.network === 'lan')!.ifname), 1400, 'with its new MTU on the nodes');
  await c.destroyLab('mv');
  tt.same(c.networks(), [], 'both networks went with the lab');
  await assertClean(tt);
});
