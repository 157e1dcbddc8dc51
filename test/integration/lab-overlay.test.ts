/**
 * Overlay networks in lab files, across simulated hosts (test/multihost.ts: each host its own
 * namespaces and tnet daemon, one real etcd): lab east on host a and lab west on host b meet on
 * the overlay `wan` (examples/two-site-overlay), created at the same moment (one host makes it,
 * the other joins), and their nodes reach each other by address and by name; a lab asking for
 * another subnet of it is refused naming both and makes nothing; destroying east leaves wan to
 * west, destroying west removes it on every host; an overlay a person made is never removed by a
 * lab. Without --store a lab with an overlay is refused up front, naming --store.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { isolate } from './harness.js';

await isolate();
const mh = await import('../multihost.js');
const { startCluster, networks, within, vniOf } = mh;
type Host = import('../multihost.js').Host;
const { parse } = await import('yaml');
const { readFileSync, mkdtempSync, rmSync } = await import('node:fs');
const { tmpdir } = await import('node:os');

const EXAMPLES = join(import.meta.dirname, '../../examples/two-site-overlay');
const EAST = join(EXAMPLES, 'east.yml');
const WEST = join(EXAMPLES, 'west.yml');

type LabView = {
  name: string;
  nodes: { name: string; netns: string; interfaces: { ifname: string; addresses: string[]; mtu: number; network?: string }[] }[];
  networks: { name: string; driver: string; subnet?: string; scope?: string; global?: string; vni?: number; mtu: number }[];
};

async function inspectLab(h: Host, lab: string): Promise<LabView> {
  const r = await h.tnet('inspect', lab, '--json');
  if (r.code !== 0) throw new Error(`host ${h.name}: tnet inspect ${lab}: ${r.err}`);
  return JSON.parse(r.out) as LabView;
}

/** The node's namespace and its address on a network (without the prefix length). */
async function nodeOn(h: Host, lab: string, node: string, net: string) {
  const v = await inspectLab(h, lab);
  const n = v.nodes.find((x) => x.name === node)!;
  const i = n.interfaces.find((x) => x.network === net)!;
  return { netns: n.netns, ip: i.addresses[0]!.split('/')[0]!, mtu: i.mtu, ifname: i.ifname };
}

const inNode = (h: Host, netns: string, cmd: string) => h.exec(`ip netns exec ${netns} ${cmd}`);
const storeNetworks = (keys: string[]) => keys.filter((k) => k.startsWith('/tnet/v1/networks/'));

t.test('what a lab file may say about an overlay, and how it is planned and drawn (no kernel)', async (t) => {
  const { checkLab } = await import('../../libnetwork/lab/check.js');
  const { planLab } = await import('../../libnetwork/lab/plan.js');
  const { labGraph } = await import('../../libnetwork/lab/graph.js');
  const lab = (networks: Record<string, unknown>, links: unknown[] = [{ endpoints: ['n1', 'wan'] }]) => ({ name: 'l', networks, nodes: { n1: {} }, links });
  const problems = (x: unknown) => checkLab(x).problems.map((p) => `${p.path.join('.')}: ${p.message}`);
  t.same(problems(lab({ wan: { driver: 'overlay', name: 'corp-wan', subnet: '10.91.0.0/24' } })), [], 'an overlay with a global name and a subnet is fine');
  t.match(problems(lab({ wan: { name: 'corp' } })), [/^networks\.wan\.name: name is for overlay networks only/], 'name on a bridge network is refused');
  t.match(
    problems(lab({ wan: { driver: 'overlay' }, wan2: { driver: 'overlay', name: 'wan' } })),
    [/^networks\.wan2: networks wan and wan2 both name the global network wan/],
    'two networks of a lab naming one overlay are refused',
  );
  t.match(problems(lab({ wan: { driver: 'overlay', mtu: 1000 } })), [/mtu 1000 is below 1280, the least an overlay network takes/], 'an overlay MTU under 1280 is refused');
  t.match(
    problems(lab({ wan: { driver: 'overlay' } }, [{ endpoints: ['n1', 'wan'], mtu: 1400 }])),
    [/links\.0\.mtu: .* is an overlay without mtu: its MTU is each host's underlay MTU minus/],
    "a link's MTU on an overlay without one is refused (each host has its own)",
  );
  const spec = checkLab(lab({ wan: { driver: 'overlay', name: 'corp-wan' }, lan: {} }, [{ endpoints: ['n1', 'wan'] }, { endpoints: ['n1', 'lan'] }])).lab!;
  const plan = planLab(spec, {}, (n) => `tn-l+${n}`);
  t.equal(plan.networks.wan?.global, 'corp-wan', 'the plan names the global network');
  t.equal(plan.networks.wan?.mtu, 1450, 'plans an overlay MTU of a 1500-byte underlay minus 50');
  t.equal(plan.networks.wan?.internal, false, 'an overlay is not internal unless asked (no NAT of its own anyway)');
  t.equal(plan.networks.lan?.global, undefined, "the lab's own LAN is not global");
  t.equal(plan.networks.lan?.internal, true, 'and stays internal');
  const mermaid = await labGraph(spec, 'mermaid');
  t.match(mermaid, /wan<br\/>overlay corp-wan \(all hosts\)/, 'the graph labels the overlay with its global name');
});

t.test('without --store, a lab with an overlay network is refused up front, naming --store, and makes nothing', async (t) => {
  const cluster = await startCluster(t, { hosts: 1, store: false });
  const [a] = cluster.hosts as [Host];
  const r = await a.tnet('create', EAST);
  t.equal(r.code, 2, `tnet create east.yml exits 2 (bad input for this daemon): ${r.err.trim()}`);
  t.match(r.err, /--store/, 'the message names --store');
  t.match(r.err, /wan/, 'and the overlay network');
  const dry = await a.tnet('create', EAST, '--dry-run');
  t.equal(dry.code, 2, 'a dry run is refused the same way (the plan could not be made real)');
  t.notMatch((await a.tnet('ls')).out, /\beast\b/, 'no lab east is recorded');
  t.same((await a.leftovers()).netns, [], 'no namespace was made');
  await cluster.finish(t);
});

t.test('two labs on two hosts meet on the overlay wan; it goes with the last of them', async (t) => {
  const cluster = await startCluster(t, { hosts: 2, store: true });
  const [a, b] = cluster.hosts as [Host, Host];
  const dir = mkdtempSync(join(tmpdir(), 'tnet-lab-overlay-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  // An overlay a person made on a, which west also uses: a lab never removes it.
  const ops = await a.tnet('network', 'create', '-d', 'overlay', 'ops', '--subnet', '10.93.0.0/24');
  t.equal(ops.code, 0, `a: tnet network create -d overlay ops (${ops.err.trim()})`);
  const west = parse(readFileSync(WEST, 'utf8')) as { networks: Record<string, unknown>; links: unknown[] };
  // Under another key in the file (name: says the global one); no subnet: it takes the network's.
  west.networks.mgmt = { driver: 'overlay', name: 'ops' };
  west.links.push({ endpoints: ['w1:eth1', 'mgmt'] });
  const westFile = join(dir, 'west.json');
  writeFileSync(westFile, JSON.stringify(west));
  t.ok(await within(5000, async () => (await networks(b)).some((n) => n.name === 'ops')), 'b mirrors ops');

  // Before anything: the dry run says what it would do with wan (make it) and ops (join it).
  const dry = await b.tnet('create', westFile, '--dry-run');
  t.equal(dry.code, 0, `b: tnet create west --dry-run (${dry.err.trim()})`);
  t.match(dry.out, /network wan \(makes overlay wan\)/, 'the dry run says west would make wan');
  t.match(dry.out, /network mgmt \(joins overlay ops\)/, 'and join ops (its mgmt), which exists');
  t.match(dry.out, /\bwan\s+overlay\s+10\.91\.0\.0\/24\s+1450\b/, 'the plan shows wan as an overlay, its subnet and its MTU (1500 - 50)');

  // Both labs at the same moment on two hosts (through the daemons' API, so that no command's
  // start-up staggers them): one makes wan, the other joins it.
  const t0 = Date.now();
  const create = (h: Host, spec: unknown) => h.api.call('POST', '/labs', { spec }).then(() => '', (e: Error) => e.message);
  const [ce, cw] = await Promise.all([create(a, parse(readFileSync(EAST, 'utf8'))), create(b, west)]);
  t.equal(ce, '', 'a: east created');
  t.equal(cw, '', 'b: west created');
  t.comment(`both labs created in ${Date.now() - t0} ms`);
  const raced = [a, b].filter((h) => h.log(400).includes('another host made the overlay a moment ago')).map((h) => h.name);
  // Which way the other host joined (the daemons log it at info level): after losing the store's
  // create, or from the mirror when it looked after the other host had made wan.
  t.comment(raced.length ? `host ${raced.join(', ')} lost the race to make wan and joined it` : 'no host logged losing the race to make wan (or the log level hides it)');
  const wanA = (await networks(a)).filter((n) => n.name === 'wan');
  const wanB = (await networks(b)).filter((n) => n.name === 'wan');
  t.equal(wanA.length, 1, 'a has one network wan');
  t.equal(wanB.length, 1, 'b has one network wan');
  t.equal(wanA[0]?.id, wanB[0]?.id, 'the same network on both hosts');
  t.equal(wanA[0]?.ipv4?.subnet, '10.91.0.0/24', 'with the subnet both files ask for');
  t.equal(storeNetworks(cluster.keys('/tnet/v1/networks/')).length, 2, 'the store holds two networks: wan and ops');
  const again = await a.tnet('create', EAST);
  t.match(again.out, /lab east: up to date/, `a: creating east again changes nothing (${again.out.trim()}${again.err.trim()})`);
  const maker = (wanA[0]?.labels as Record<string, string> | undefined)?.['tnet.lab'];
  t.ok(maker === 'east' || maker === 'west', `wan is marked as made by a lab (${maker})`);
  t.notOk(((await networks(a)).find((n) => n.name === 'ops')?.labels as Record<string, string> | undefined)?.['tnet.lab'], 'ops is not marked (a person made it)');

  // What the labs show.
  const eastView = await inspectLab(a, 'east');
  const wanView = eastView.networks.find((n) => n.name === 'wan');
  t.equal(wanView?.scope, 'global', 'tnet inspect east: wan is global');
  t.equal(wanView?.vni, vniOf(wanA[0]), 'with the VNI of the network');
  t.equal(wanView?.subnet, '10.91.0.0/24', 'and its subnet');
  t.ok(eastView.networks.find((n) => n.name === 'lan' && n.scope === undefined), "east's own LAN stays a local network");
  t.match((await a.tnet('inspect', 'east')).out, new RegExp(`wan \\(global wan, vni ${wanView?.vni}\\)`), 'the table names the global network and its VNI');
  const mgmt = (await inspectLab(b, 'west')).networks.find((n) => n.name === 'mgmt');
  t.same([mgmt?.global, mgmt?.scope, mgmt?.subnet], ['ops', 'global', '10.93.0.0/24'], "tnet inspect west: its mgmt is the global ops, with ops's subnet");
  const w1ops = await nodeOn(b, 'west', 'w1', 'mgmt');
  t.ok(w1ops.ip.startsWith('10.93.0.'), `w1 has an address on ops (${w1ops.ip})`);
  const e1 = await nodeOn(a, 'east', 'e1', 'wan');
  const w1 = await nodeOn(b, 'west', 'w1', 'wan');
  t.not(e1.ip, w1.ip, `addresses unique across hosts (e1 ${e1.ip}, w1 ${w1.ip})`);
  t.equal(e1.mtu, 1450, 'the plan records the MTU e1 got on wan (underlay 1500 - 50)');
  t.equal(JSON.parse((await inNode(a, e1.netns, `ip -j link show ${e1.ifname}`)).out)[0]?.mtu, 1450, "and that is e1's interface's MTU");
  const graph = await a.tnet('graph', 'east', '--format', 'dot');
  t.match(graph.out, /"network:wan" \[[^\]]*peripheries=2[^\]]*overlay \(all hosts\)/, 'tnet graph draws wan as shared by every host');

  // Across hosts: by address, and by name through tnet's DNS (the remote peer's name is its node's).
  t.equal((await inNode(a, e1.netns, `ping -c 1 -W 2 ${w1.ip}`)).code, 0, `e1 (host a) pings w1 (host b) at ${w1.ip}`);
  t.equal((await inNode(b, w1.netns, `ping -c 1 -W 2 ${e1.ip}`)).code, 0, `w1 (host b) pings e1 (host a) at ${e1.ip}`);
  const dig = async (h: Host, netns: string, name: string) => (await inNode(h, netns, `dig +short +time=2 +tries=1 ${name}`)).out.trim();
  t.equal(await dig(a, e1.netns, 'w1'), w1.ip, 'e1 resolves w1 (a node of another lab on another host) by its name');
  t.equal(await dig(a, e1.netns, 'w1.wan'), w1.ip, 'and as w1.wan');
  t.equal(await dig(b, w1.netns, 'e1.wan'), e1.ip, 'w1 resolves e1.wan');
  t.equal((await inNode(b, w1.netns, 'ping -c 1 -W 2 e1')).code, 0, 'w1 pings e1 by name');
  t.equal(await dig(b, w1.netns, 'e2'), '', "w1 does not resolve e2: it is on east's LAN only, not on wan");

  // A lab asking for another subnet of wan is refused, naming both, and makes nothing.
  const bad = join(dir, 'bad.json');
  writeFileSync(bad, JSON.stringify({ name: 'bad', networks: { wan: { driver: 'overlay', subnet: '10.92.0.0/24' } }, nodes: { x1: {} }, links: [{ endpoints: ['x1', 'wan'] }] }));
  const refused = await b.tnet('create', bad);
  t.equal(refused.code, 4, `b: a lab asking wan for 10.92.0.0/24 is refused as a conflict: ${refused.err.trim()}`);
  t.match(refused.err, /10\.91\.0\.0\/24/, "the message names wan's subnet");
  t.match(refused.err, /10\.92\.0\.0\/24/, 'and the one asked for');
  t.notMatch((await b.tnet('ls')).out, /\bbad\b/, 'no lab bad is recorded');
  t.notOk((await b.leftovers()).netns.some((n) => n.includes('bad+')), 'and no node of it made');

  // east goes: wan stays for west, on both hosts.
  const de = await a.tnet('destroy', 'east');
  t.equal(de.code, 0, `a: tnet destroy east (${de.err.trim()})`);
  t.ok((await networks(a)).some((n) => n.name === 'wan'), 'wan stays on a (west still has a node on it)');
  t.ok((await networks(b)).some((n) => n.name === 'wan'), 'and on b');
  t.equal((await b.tnet('network', 'rm', 'wan')).code, 4, 'b: wan is still in use (tnet network rm refuses)');
  const after = await inspectLab(b, 'west');
  t.ok(after.nodes.find((n) => n.name === 'w1')?.interfaces.some((i) => i.network === 'wan'), "west's w1 keeps its port on wan");

  // west drops ops from its file: w1 leaves it, and ops stays (a person made it).
  const westNoOps = join(dir, 'west-no-ops.json');
  writeFileSync(westNoOps, JSON.stringify(parse(readFileSync(WEST, 'utf8'))));
  const leaveDry = await b.tnet('create', westNoOps, '--dry-run');
  t.match(leaveDry.out, /would remove: .*network mgmt \(leaves overlay ops\)/, `the dry run says west would leave ops (${leaveDry.out.split('\n').filter((l) => l.startsWith('would')).join('; ')})`);
  const left = await b.tnet('create', westNoOps);
  t.equal(left.code, 0, `b: tnet create west without ops (${left.err.trim()})`);
  t.notOk((await inspectLab(b, 'west')).nodes.find((n) => n.name === 'w1')?.interfaces.some((i) => i.network === 'mgmt'), 'w1 has no port on ops any more');
  t.equal((await inNode(b, w1.netns, `ip link show ${w1ops.ifname}`)).code, 1, `and no interface ${w1ops.ifname}`);
  t.ok((await networks(b)).some((n) => n.name === 'ops'), 'ops stays (a person made it)');

  // west goes: wan goes on every host (the last lab on it), ops stays (a person made it).
  const dw = await b.tnet('destroy', 'west');
  t.equal(dw.code, 0, `b: tnet destroy west (${dw.err.trim()})`);
  const goneA = await within(5000, async () => !(await networks(a)).some((n) => n.name === 'wan'));
  t.ok(goneA !== undefined, `wan is gone on a (${goneA ?? '>5000'} ms)`);
  t.notOk((await networks(b)).some((n) => n.name === 'wan'), 'and on b');
  t.ok((await networks(a)).some((n) => n.name === 'ops') && (await networks(b)).some((n) => n.name === 'ops'), 'ops stays on both hosts');
  t.same(storeNetworks(cluster.keys('/tnet/v1/networks/')), ['/tnet/v1/networks/ops'], 'the store holds only ops');
  const rm = await a.tnet('network', 'rm', 'ops');
  t.equal(rm.code, 0, `a: tnet network rm ops (${rm.err.trim()})`);
  t.ok(await within(5000, async () => !(await networks(b)).some((n) => n.name === 'ops')), 'ops is gone on b too');
  t.same(storeNetworks(cluster.keys('/tnet/v1/networks/')), [], 'nothing is left in the store under /tnet/v1/networks/');
  await cluster.finish(t);
});
