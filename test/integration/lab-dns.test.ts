import { execFile, spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { assertClean, isolate, stateDir } from './harness.js';

// Lab names through the embedded DNS, as `tnet daemon` serves them: a Controller and the DNS
// service in this process; dig and ping (glibc) inside the nodes read the node's resolv.conf.

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');
const { startDnsService } = await import('../../dns/service.js');
type LabSpec = import('../../libnetwork/lab/topology.js').LabSpec;

if (spawnSync('dig', ['-v'], { stdio: 'ignore' }).error) {
  t.plan(0, 'needs dig (bind9-dnsutils): run scripts/setup.sh');
  process.exit(0);
}

// asynchronous: the DNS server answers from this process
const run = promisify(execFile);
async function inNode(netns: string, ...cmd: string[]): Promise<{ code: number; out: string }> {
  try {
    const r = await run('ip', ['netns', 'exec', netns, ...cmd], { timeout: 20_000 });
    return { code: 0, out: r.stdout + r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : 1, out: (x.stdout ?? '') + (x.stderr ?? '') };
  }
}
const dig = async (netns: string, ...args: string[]) => (await inNode(netns, 'dig', '+short', '+time=2', '+tries=1', ...args)).out.trim().split('\n').filter(Boolean);

const spec: LabSpec = {
  name: 'lab1',
  networks: { lan0: { subnet: '10.10.0.0/24' } },
  nodes: { r1: {}, r2: { loopback: '10.0.0.2/32', aliases: ['core'] }, h1: {} },
  links: [
    { endpoints: ['r1:eth1', 'r2:eth1'] },
    { endpoints: ['h1:eth0', 'lan0'] },
    { endpoints: ['r1:eth2', 'lan0'], ipv4: '10.10.0.254/24' },
  ],
};

t.test('nodes resolve each other by name, NAME.LAB and PTR', async (tt) => {
  const dir = stateDir(tt);
  const resolvConf = join(dir, 'host-resolv.conf');
  writeFileSync(resolvConf, 'nameserver 192.0.2.53\n'); // nothing answers there: lab names never need it
  const c = await Controller.open({ stateDir: dir, etcNetns: '/etc/netns' });
  const dns = await startDnsService(c, { resolvConf, server: { upstreamTimeoutMs: 300, forwardDeadlineMs: 600 } });
  tt.teardown(async () => {
    await dns.close();
    c.close();
  });
  const r = await c.applyLab(spec);
  await dns.settled();
  const ns = (n: string) => c.labNodeNetns('lab1', n);
  const r2p2p = r.plan.wires[0]!.b.addresses[0]!.split('/')[0]!;
  const r1p2p = r.plan.wires[0]!.a.addresses[0]!.split('/')[0]!;
  const h1 = r.plan.nodes.h1!.interfaces[0]!.addresses[0]!.split('/')[0]!;

  tt.same(await dig(ns('r1'), 'r2'), [r2p2p], 'r1 asking r2 gets its address on their link');
  tt.same(await dig(ns('r1'), 'r2.lab1'), [r2p2p], 'r2.lab1 too');
  tt.same(await dig(ns('r1'), 'core'), [r2p2p], 'an alias too');
  tt.same(await dig(ns('h1'), 'r1'), ['10.10.0.254'], 'h1 asking r1 gets its LAN address');
  tt.same(await dig(ns('h1'), 'r1.lab1'), ['10.10.0.254'], 'r1.lab1 from h1 too');
  tt.same(await dig(ns('h1'), 'r2'), ['10.0.0.2'], 'a node sharing no segment gets the loopback');
  tt.same(await dig(ns('r2'), 'h1.lab1'), [h1], 'otherwise the first address');
  tt.equal((await inNode(ns('r1'), 'ping', '-c', '1', '-W', '2', 'r2')).code, 0, 'ping r2 works in r1 (glibc, resolv.conf)');
  tt.equal((await inNode(ns('r2'), 'ping', '-c', '1', '-W', '2', 'r1.lab1')).code, 0, 'ping r1.lab1 works in r2');
  tt.same(await dig(ns('h1'), '-x', r1p2p), ['r1.lab1.'], 'PTR of an address on a link the asker is not on');
  tt.same(await dig(ns('r1'), '-x', '10.0.0.2'), ['r2.lab1.'], 'PTR of a loopback');
  tt.ok((await dig(ns('r1'), '-x', h1)).includes('h1.lab1.'), 'PTR of a LAN address');

  // a second lab with the same node names: its names stay its own
  const other: LabSpec = { name: 'lab2', networks: {}, nodes: { r1: {}, r2: {} }, links: [{ endpoints: ['r1', 'r2'] }] };
  const r2nd = await c.applyLab(other);
  await dns.settled();
  const lab2r2 = r2nd.plan.wires[0]!.b.addresses[0]!.split('/')[0]!;
  tt.same(await dig(c.labNodeNetns('lab2', 'r1'), 'r2'), [lab2r2], "lab2's r1 gets lab2's r2");
  tt.same(await dig(ns('r1'), 'r2'), [r2p2p], "lab1's r1 still gets lab1's r2");

  await c.destroyLab('lab2');
  await c.destroyLab('lab1');
  await dns.settled();
  await assertClean(tt);
});
