/**
 * Chaos: a kill -9 at every failpoint of every operation class (network create/rm, sandbox
 * create/rm, connect/disconnect with and without published ports, the hand-over of the default
 * route, and the start-up reconcile after a simulated reboot), then a restart (a fresh
 * Controller.open, which is what a daemon start does). After each, the doctor's checker
 * (libnetwork/doctor.ts, the code behind `tnet doctor`) must find nothing missing, stray or
 * duplicated, and every endpoint must ping its gateway.
 *
 * The operation runs in a child process (chaos-child.ts) armed with TNET_FAILPOINT; the points
 * are sampled once each, not in combination, to keep the file short. The child is bundled once
 * with esbuild when it is there (a start in ~0.3 s instead of ~2 s through the TypeScript loader).
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { assertClean, isolate, sh, stateDir } from './harness.js';

type Op = [dir: string, op: string, ...args: string[]];

await isolate();

const HERE = dirname(fileURLToPath(import.meta.url));
const CHILD_TS = join(HERE, 'chaos-child.ts');
/** How the child is started: the bundle, or the TypeScript loader this file runs under. */
const childCommand = await (async (): Promise<string[]> => {
  const out = join(HERE, '../../node_modules/.cache/tnet-chaos', `child-${process.pid}.mjs`);
  try {
    const { build } = (await import('esbuild' as string)) as { build: (o: Record<string, unknown>) => Promise<unknown> };
    mkdirSync(dirname(out), { recursive: true });
    await build({ entryPoints: [CHILD_TS], bundle: true, platform: 'node', format: 'esm', packages: 'external', outfile: out, target: 'node20', logLevel: 'error' });
    t.teardown(() => sh(`rm -f ${out}`));
    return [out];
  } catch (e) {
    t.comment(`esbuild not usable (${(e as Error).message}): the child runs through the TypeScript loader, slower`);
    return [...process.execArgv, CHILD_TS];
  }
})();
const { Controller } = await import('../../libnetwork/controller.js');
type Controller = import('../../libnetwork/controller.js').Controller;
const { FAILPOINTS } = await import('../../libnetwork/failpoint.js');

const PORTS = JSON.stringify([{ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 18080, hostPortEnd: 18080 }]);
const PORTS2 = JSON.stringify([{ proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 18081, hostPortEnd: 18081 }]);

/** Runs one operation in a child armed at `point`; 'killed' when it died there. */
function crash(point: string, ...op: Op): 'killed' | 'finished' {
  const r = spawnSync(process.execPath, [...childCommand, JSON.stringify(op)], {
    env: { ...process.env, TNET_FAILPOINT: point },
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (r.signal === 'SIGKILL') return 'killed';
  if (r.status !== 0) throw new Error(`chaos child ${op[1]} at ${point} failed: ${r.stderr}`);
  return 'finished';
}

const nsOf = (c: Controller, sb: string) => c.sandbox(sb).netns.slice(c.sandbox(sb).netns.lastIndexOf('/') + 1);

/** Every ready lab endpoint pings its network's gateway; the ones that do not, by name. */
function silent(c: Controller): string[] {
  const out: string[] = [];
  for (const sb of c.sandboxes()) {
    for (const ep of c.endpointsOfSandbox(sb.id)) {
      const net = c.network(ep.networkId);
      const gw = net.ipv4?.gateway?.toString();
      if (!gw || net.internal) continue;
      if (sh(`ip netns exec ${nsOf(c, sb.name)} ping -c1 -W1 ${gw}`).code !== 0) out.push(`${sb.name} on ${net.name}`);
    }
  }
  return out;
}

const has = (c: Controller, net: string, sb: string) => {
  const s = c.sandboxes().find((x) => x.name === sb);
  const n = c.networks().find((x) => x.name === net);
  return !!s && !!n && c.endpointsOfSandbox(s.id).some((e) => e.networkId === n.id);
};

t.test('a kill -9 at any point of any operation is repaired by the next start', async (t) => {
  const dir = stateDir(t);
  const t0 = Date.now();
  let points = 0;
  let c = await Controller.open({ stateDir: dir });
  await c.createNetwork({ name: 'n1', subnet: '10.91.0.0/24' });
  await c.createNetwork({ name: 'n2', subnet: '10.92.0.0/24', ipv6: true, subnet6: 'fd00:92::/64' }); // dual stack: v6 addresses and routes checked too
  for (const s of ['a', 'b', 'c']) await c.createSandbox({ name: s });
  await c.connect('n1', 'a');
  await c.connect('n2', 'a');
  await c.connect('n1', 'b', { ports: JSON.parse(PORTS) });
  c.close();

  /** Kill at `point` during `op`, restart, check, then bring the world back with `normalize`. */
  const round = async (point: string, op: Op, normalize: (c: Controller) => Promise<void>, extra?: (c: Controller) => void) => {
    const how = crash(point, ...op);
    t.equal(how, 'killed', `${op[1]}: killed at ${point}`);
    points++;
    c = await Controller.open({ stateDir: dir });
    const found = await c.diagnose();
    t.same(found.map((f) => `${f.problem} ${f.object}${f.record ? ` (${f.record})` : ''}: ${f.detail}`), [], `${point}: the doctor finds nothing after the restart`);
    t.same(silent(c), [], `${point}: every endpoint pings its gateway`);
    extra?.(c);
    await normalize(c);
    c.close();
  };

  // Network create and delete.
  for (const p of FAILPOINTS.createNetwork) {
    await round(p, [dir, 'create-network', 'x', '10.93.0.0/24'], async (c) => {
      if (c.findNetwork('x')) await c.deleteNetwork('x');
    });
  }
  for (const p of FAILPOINTS.deleteNetwork) {
    c = await Controller.open({ stateDir: dir });
    await c.createNetwork({ name: 'x', subnet: '10.93.0.0/24' });
    c.close();
    await round(p, [dir, 'delete-network', 'x'], async (c) => {
      if (c.findNetwork('x')) await c.deleteNetwork('x');
    });
  }
  // Sandbox create and delete (the deleted one has endpoints, one with a published port).
  for (const p of FAILPOINTS.createSandbox) {
    await round(p, [dir, 'create-sandbox', 'd'], async (c) => {
      if (c.sandboxes().some((s) => s.name === 'd')) await c.deleteSandbox('d');
    });
  }
  for (const p of FAILPOINTS.deleteSandbox) {
    c = await Controller.open({ stateDir: dir });
    await c.createSandbox({ name: 'd' });
    await c.connect('n1', 'd', { ports: JSON.parse(PORTS2) });
    await c.connect('n2', 'd');
    c.close();
    await round(p, [dir, 'delete-sandbox', 'd'], async (c) => {
      if (c.sandboxes().some((s) => s.name === 'd')) await c.deleteSandbox('d');
    });
  }
  // Connect, without ports and with.
  for (const p of FAILPOINTS.connect.filter((x) => x !== 'connect:published')) {
    await round(p, [dir, 'connect', 'n2', 'c'], async (c) => {
      if (has(c, 'n2', 'c')) await c.disconnect('n2', 'c');
    });
  }
  for (const p of ['connect:joined', 'connect:published']) {
    await round(p, [dir, 'connect', 'n1', 'c', PORTS2], async (c) => {
      if (has(c, 'n1', 'c')) await c.disconnect('n1', 'c');
    });
  }
  // Disconnect of the endpoint supplying a's default route (a stays on the other network), and of
  // b's endpoint with a published port: after the restart a still has its default route.
  for (const p of FAILPOINTS.disconnect.filter((x) => x !== 'endpoint:unpublished')) {
    const provider = (c: Controller) => c.endpointsOfSandbox(c.sandbox('a').id).find((e) => e.gatewayProvider);
    c = await Controller.open({ stateDir: dir });
    const from = c.network(provider(c)!.networkId).name;
    c.close();
    await round(
      p,
      [dir, 'disconnect', from, 'a'],
      async (c) => {
        if (!has(c, from, 'a')) await c.connect(from, 'a');
      },
      (c) => {
        t.match(sh(`ip netns exec ${nsOf(c, 'a')} ip -4 route show default`).out, /default via 10\.9[12]\.0\.1/, `${p}: a has a default route after the hand-over`);
      },
    );
  }
  for (const p of ['endpoint:unpublished', 'disconnect:left']) {
    await round(p, [dir, 'disconnect', 'n1', 'b'], async (c) => {
      if (!has(c, 'n1', 'b')) await c.connect('n1', 'b', { ports: JSON.parse(PORTS) });
    });
  }

  // A simulated reboot (every namespace, link and nft table of the instance gone), then a kill
  // during the start-up reconcile that rebuilds them, then a clean start.
  const reboot = (c: Controller) => {
    for (const s of c.sandboxes()) sh(`ip netns del ${nsOf(c, s.name)}`);
    for (const n of c.networks()) sh(`ip link del ${c.networkDetails(n).bridge}`);
    sh(`ip -o link show | grep -o 'tn[0-9a-f]\\{12\\}' | sort -u | xargs -r -n1 ip link del`);
    sh(`nft delete table inet tnet-${c.scope}`);
  };
  for (const p of ['reconcile:restored', 'reconcile:netns-made@2', 'reconcile:endpoint-left@1', 'reconcile:endpoint-joined@2', 'reconcile:endpoint-configured@3']) {
    c = await Controller.open({ stateDir: dir });
    reboot(c);
    c.close();
    await round(p, [dir, 'open'], async () => undefined);
  }

  c = await Controller.open({ stateDir: dir });
  for (const s of ['a', 'b', 'c']) await c.deleteSandbox(s);
  for (const n of ['n1', 'n2']) await c.deleteNetwork(n);
  c.close();
  await assertClean(t);
  t.comment(`chaos: ${points} kill points in ${Math.round((Date.now() - t0) / 1000)} s`);
});
