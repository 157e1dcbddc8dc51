/**
 * The ready labs in examples/, each created, checked end to end with real traffic and destroyed,
 * through both faces: the `tnet` command against a daemon this test starts (line, frr-ospf) and
 * the library (leaf-spine). Nothing may be left behind.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { assertClean, isolate, stateDir, until } from './harness.js';

await isolate();
const { Client } = await import('../../cli/client.js');
const { createLab } = await import('../../libnetwork/lab/library.js');

const ROOT = join(import.meta.dirname, '../..');
const MAIN = join(ROOT, 'dist/cli/main.js');
const example = (f: string) => join(ROOT, 'examples', f);

/** A daemon of the test's own (state and socket in a temp dir), and `tnet ...` against it. */
async function startDaemon(tt: Test): Promise<{ tnet: (...args: string[]) => { code: number; out: string }; stop: () => Promise<void> }> {
  const dir = stateDir(tt);
  const socket = join(dir, 'tnet.sock');
  const env = { ...process.env, TNET_SOCKET: socket, TNET_STATE_DIR: dir };
  const daemon: ChildProcess = spawn(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', socket, '--no-docker-plugin'], { stdio: 'ignore', env });
  tt.teardown(() => void daemon.kill('SIGKILL'));
  const client = new Client(socket);
  tt.ok(await until(() => client.ping(), 15_000), 'the daemon answers');
  return {
    tnet: (...args: string[]) => {
      const r = spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', env, timeout: 60_000 });
      return { code: r.status ?? 1, out: (r.stdout ?? '') + (r.stderr ?? '') };
    },
    stop: async () => {
      daemon.kill('SIGTERM');
      await until(() => daemon.exitCode !== null, 10_000);
    },
  };
}

t.test('examples/line.yml through the tnet command: r1 reaches r3 only through r2', async (t) => {
  const { tnet, stop } = await startDaemon(t);
  const c = tnet('create', example('line.yml'));
  t.equal(c.code, 0, `tnet create examples/line.yml${c.code ? `: ${c.out}` : ''}`);
  const ping = (from: string, to: string) => tnet('exec', 'line', from, '--', 'ping', '-c1', '-W1', to).code === 0;
  t.ok(ping('r1', '10.0.23.2'), 'r1 pings r3 (two hops)');
  t.ok(ping('r3', '10.0.12.1'), 'r3 pings r1');
  t.ok(ping('r1', 'r2'), 'r1 pings r2 by name (tnet\'s DNS in the node)');
  t.match(tnet('exec', 'line', 'r1', '--', 'getent', 'hosts', 'r3.line').out, /^10\.0\.23\.2\s+r3\.line/, 'r3.line resolves in r1');
  t.equal(tnet('exec', 'line', 'r2', '--', 'sysctl', '-qw', 'net.ipv4.ip_forward=0').code, 0, 'r2 stops forwarding');
  t.notOk(ping('r1', '10.0.23.2'), 'and r1 no longer reaches r3: the path is through r2');
  tnet('exec', 'line', 'r2', '--', 'sysctl', '-qw', 'net.ipv4.ip_forward=1');
  const code = tnet('exec', 'line', 'r1', '--', 'sh', '-c', 'exit 7').code;
  t.equal(code, 7, 'tnet exec returns the command\'s exit code');
  const inspect = tnet('inspect', 'line', '--json');
  t.equal(inspect.code, 0, 'tnet inspect line --json');
  const d = JSON.parse(inspect.out) as { nodes: { name: string }[]; links: unknown[] };
  t.same([d.nodes.map((n) => n.name).sort(), d.links.length], [['r1', 'r2', 'r3'], 2], 'three nodes, two links');
  t.equal(tnet('destroy', 'line').code, 0, 'tnet destroy line');
  t.not(tnet('exec', 'line', 'r1', '--', 'true').code, 0, 'the lab is gone');
  await stop();
  await assertClean(t);
});

const noFrr =
  !existsSync('/usr/lib/frr/zebra') || !existsSync('/usr/lib/frr/ospfd')
    ? 'FRR is not installed (/usr/lib/frr/zebra, ospfd): Debian package frr, installed by scripts/setup.sh'
    : false;

t.test('examples/frr-ospf.yml through the tnet command: hosts reach each other only through routes FRR learned', { skip: noFrr }, async (t) => {
  const crashDirs = () => (existsSync('/var/tmp/frr') ? readdirSync('/var/tmp/frr').sort() : []);
  const crashBefore = crashDirs();
  const { tnet, stop } = await startDaemon(t);
  const c = tnet('create', example('frr-ospf.yml'));
  t.equal(c.code, 0, `tnet create examples/frr-ospf.yml${c.code ? `: ${c.out}` : ''}`);
  const x = (node: string, cmd: string) => tnet('exec', 'ospf', node, '--', 'sh', '-c', cmd);
  const t0 = performance.now();
  const learned = await until(() => x('r1', 'ip route show 10.3.0.0/24 proto ospf').out.includes('10.3.0.0/24'), 20_000);
  t.ok(learned, `r1 learns h3's LAN from OSPF (${Math.round(performance.now() - t0)} ms after create)`);
  t.match(x('r1', 'ip route show 10.3.0.0/24').out.trim(), /^10\.3\.0\.0\/24 .*proto ospf/, 'r1\'s only route to it is proto ospf');
  t.equal(x('r1', 'ip route show default').out.trim(), '', 'and r1 has no default route to fall back on');
  t.match(x('r3', 'ip route show 10.1.0.0/24').out, /proto ospf/, 'r3 learns h1\'s LAN from OSPF');
  t.ok(await until(() => x('h1', 'ping -c1 -W1 10.3.0.2').code === 0, 10_000), 'h1 pings h3 across three routers');
  t.match(x('r1', 'vtysh --vty_socket /etc/frr -c "show ip ospf neighbor"').out, /Full/, 'vtysh in the node talks to that node\'s ospfd');

  // Take OSPF away from the middle router: its neighbours drop it (dead interval 3 s), the learned
  // routes go, and with them the hosts' path.
  t.equal(x('r2', 'kill $(cat /etc/frr/ospfd.pid)').code, 0, 'ospfd on r2 is stopped');
  t.ok(await until(() => !x('r1', 'ip route show 10.3.0.0/24').out.trim(), 15_000), 'r1 loses the route when r2\'s OSPF goes');
  t.not(x('h1', 'ping -c1 -W1 10.3.0.2').code, 0, 'and h1 no longer reaches h3: nothing but OSPF carried it');

  const inspect = JSON.parse(tnet('inspect', 'ospf', '--json').out) as { nodes: { name: string; processes: { pid: number }[] }[] };
  const pids = inspect.nodes.flatMap((n) => n.processes.map((p) => p.pid));
  t.equal(pids.length, 6, 'zebra and ospfd were started in each of the three routers');
  t.equal(tnet('destroy', 'ospf').code, 0, 'tnet destroy ospf');
  t.ok(pids.every((p) => !existsSync(`/proc/${p}`)), 'every FRR daemon is stopped');
  t.same(crashDirs(), crashBefore, 'FRR left no crash-log directories (it was stopped cleanly)');
  await stop();
  await assertClean(t);
});

t.test('examples/leaf-spine.yml through the library: 4 spines x 8 leaves, hosts reach each other over ECMP', async (t) => {
  const lab = await createLab(example('leaf-spine.yml'));
  t.teardown(() => lab.destroy());
  const d = await lab.details();
  t.same([d.nodes.length, d.links.length], [20, 40], '20 nodes (4 spines, 8 leaves, 8 hosts) and 40 links');
  t.equal((await lab.exec('l1', 'ip route show default')).stdout.match(/nexthop via/g)?.length, 4, 'leaf 1\'s default route has a nexthop per spine');
  // What the spines forwarded from leaf 1 (each spine's eth1 faces leaf 1).
  const rx = async () => Promise.all(['s1', 's2', 's3', 's4'].map(async (s) => Number((await lab.exec(s, 'cat /sys/class/net/eth1/statistics/rx_packets')).stdout)));
  const before = await rx();
  for (const [from, to] of [[1, 8], [8, 1], [4, 5], [2, 7]] as const)
    t.equal((await lab.exec(`h${from}`, `ping -c1 -W1 10.1.${to}.2`)).code, 0, `h${from} pings h${to}`);
  // h1 to every other host: several destinations hash onto several spines.
  const all = await lab.exec('h1', 'for n in 2 3 4 5 6 7 8; do ping -c2 -i0.1 -W1 -q 10.1.$n.2 >/dev/null || exit 1; done');
  t.equal(all.code, 0, 'h1 reaches every other host');
  const after = await rx();
  const used = after.filter((v, i) => v > before[i]!).length;
  t.ok(used >= 2, `traffic from leaf 1 is spread over ${used} of 4 spines (ECMP)`);
  await lab.destroy();
  t.ok(lab.closed, 'destroyed');
  await assertClean(t);
});

t.test('the CI examples (examples/ci) pass, run as their users run them', async (t) => {
  // Not as a tap subtest of this file: a fresh runner, without this run's TAP_* environment.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('TAP') && !k.startsWith('_TAPJS')));
  const run = (cmd: string, args: string[], extra: NodeJS.ProcessEnv = {}) => spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', env: { ...env, ...extra }, timeout: 120_000 });
  const loader = join(ROOT, 'node_modules/@tapjs/typescript/dist/esm/import.mjs');
  const tapRun = run(process.execPath, ['--import', loader, 'examples/ci/tap.example.test.ts'], { TS_NODE_TRANSPILE_ONLY: '1' }); // as tap runs it
  t.equal(tapRun.status, 0, `tap example${tapRun.status ? `:\n${tapRun.stdout}${tapRun.stderr}` : ''}`);
  t.match(tapRun.stdout, /ok 1 - r1 reaches r3 through r2/, 'its test ran and passed');
  const vitestRun = run(join(ROOT, 'node_modules/.bin/vitest'), ['run', '-c', 'examples/ci/vitest.config.ts']);
  t.equal(vitestRun.status, 0, `vitest example${vitestRun.status ? `:\n${vitestRun.stdout}${vitestRun.stderr}` : ''}`);
  t.match(vitestRun.stdout, /Tests\s+2 passed/, 'its two tests ran and passed');
  await assertClean(t);
});
