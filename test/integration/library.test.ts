/**
 * Labs as a library for CI tests (libnetwork/lab/library.ts): the lab lives in namespaces owned
 * by a worker process, so the caller's death (kill -9 included) takes the lab and every process
 * started in its nodes with it; exec gives exit codes and output; apply changes a running lab and
 * leaves the rest running; two labs, even with the same name and addresses, never see each other.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import t from 'tap';
import { assertClean, isolate, leftovers, sh, until } from './harness.js';

await isolate();
const { createLab } = await import('../../libnetwork/lab/library.js');
type LabSpec = import('../../libnetwork/lab/topology.js').LabSpec;

const ROOT = join(import.meta.dirname, '../..');

/** Two nodes on a /24 point-to-point link; `a` runs a long-lived process. */
const pair = (name: string, extra: Partial<LabSpec> = {}): LabSpec => ({
  name,
  networks: {},
  nodes: { a: { run: ['exec sleep 600'] }, b: { sysctls: { 'net.ipv4.ip_forward': 1 } } },
  links: [{ endpoints: ['a:eth1', 'b:eth1'], ipv4: ['10.9.0.1/24', '10.9.0.2/24'] }],
  ...extra,
});

/**
 * Live processes in the caller's view whose namespace of `kind` is `ns` ("net:[4026...]"). Zombies
 * do not count: a killed process whose parent died too waits for the host's init to reap it,
 * holding nothing but its PID.
 */
function processesIn(kind: 'pid' | 'net', ns: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readlinkSync(`/proc/${p}/ns/${kind}`) === ns && alive(Number(p))) out.push(Number(p));
    } catch {
      /* gone meanwhile, or a kernel thread */
    }
  }
  return out;
}

const alive = (pid: number) => {
  try {
    return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
  } catch {
    return false;
  }
};

t.test('kill -9 of the test process takes the lab, its namespaces and its nodes\' processes with it', async (t) => {
  const before = leftovers();
  // The "test process": a separate Node process using the package entry (as a CI test would).
  const script = `
    const { createLab } = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'dist/index.js')).href)});
    const lab = await createLab(${JSON.stringify({
      ...pair('doomed'),
      nodes: { a: { run: ['exec sleep 600'] }, b: { exec: ['setsid sleep 600 >/dev/null 2>&1 &'] } },
    })});
    const streaming = await lab.spawn('b', ['sleep', '600'], { stdio: 'ignore' });
    const ping = await lab.exec('a', 'ping -c1 -W1 10.9.0.2');
    process.stdout.write(JSON.stringify({ pid: lab.pid, ping: ping.code, streaming: streaming.pid }) + '\\n');
    setInterval(() => {}, 1e6);
  `;
  const parent: ChildProcess = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.teardown(() => void parent.kill('SIGKILL'));
  const line = await new Promise<string>((res, rej) => {
    let buf = '';
    parent.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      if (buf.includes('\n')) res(buf.split('\n')[0]!);
    });
    parent.once('exit', (c) => rej(new Error(`the parent exited ${c} before the lab was up`)));
  });
  const info = JSON.parse(line) as { pid: number; ping: number; streaming: number };
  t.equal(info.ping, 0, 'the lab carries traffic');

  const pidNs = readlinkSync(`/proc/${info.pid}/ns/pid_for_children`);
  const netNs = readlinkSync(`/proc/${info.pid}/ns/net`);
  t.not(netNs, readlinkSync('/proc/self/ns/net'), 'the lab is not in the caller\'s network namespace');
  const inLab = processesIn('pid', pidNs);
  // the worker, `run: sleep`, the setsid sleep from exec:, the streaming sleep (+ their sh/ip wrappers)
  t.ok(inLab.length >= 4, `processes live in the lab's PID namespace (${inLab.length})`);
  const nodeNs = sh(`nsenter --target ${info.pid} --mount ls /run/netns`).out.split('\n').filter(Boolean);
  t.equal(nodeNs.length, 2, `the nodes' namespaces are in the lab's private /run/netns (${nodeNs.join(' ')})`);
  const nodeNetIds = nodeNs.map((n) => `net:[${sh(`nsenter --target ${info.pid} --mount stat -L -c %i /run/netns/${n}`).out.trim()}]`);
  t.ok(nodeNetIds.every((id) => processesIn('net', id).length > 0), 'processes run in the nodes\' namespaces');
  t.same(leftovers(), before, 'nothing of the lab is visible in the caller\'s namespace');

  // When each part went, in ms after the kill.
  const when: Record<string, number> = {};
  const checks: Record<string, () => boolean> = {
    worker: () => !alive(info.pid),
    pidns: () => processesIn('pid', pidNs).length === 0,
    labnet: () => processesIn('net', netNs).length === 0,
    nodes: () => nodeNetIds.every((id) => processesIn('net', id).length === 0),
  };
  const t0 = performance.now();
  parent.kill('SIGKILL');
  const gone = await until(() => {
    for (const [k, f] of Object.entries(checks)) if (when[k] === undefined && f()) when[k] = Math.round(performance.now() - t0);
    return Object.keys(when).length === Object.keys(checks).length;
  }, 2000);
  t.ok(gone, `within 2 s of kill -9 (ms: ${JSON.stringify(when)}): the worker, every process in the lab (${inLab.length}) and in its nodes are gone`);
  t.notOk(alive(info.streaming), 'the process started with lab.spawn is gone');
  // No process holds the lab's namespaces and no mount (its mount namespace went with its last
  // process): the kernel frees them, with their links.
  const refs = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try {
      return [netNs, ...nodeNetIds].includes(readlinkSync(`/proc/${p}/ns/net`));
    } catch {
      return false;
    }
  });
  t.same(refs, [], 'no process is left in any of the lab\'s network namespaces');
  t.same(leftovers(), before, 'the caller\'s namespace is as it was');
  await assertClean(t);
});

t.test('exec: exit codes, stdout and stderr apart, argv, stdin, timeouts, unknown nodes; spawn streams', async (t) => {
  const steps: { done: number; total: number; what: string }[] = [];
  const lab = await createLab(pair('execs'), { onProgress: (p) => steps.push(p) });
  t.teardown(() => lab.destroy());
  const last = steps.at(-1);
  t.ok(last && last.total > 0 && last.done === last.total, `progress is reported as the lab is built (${steps.length} steps, last ${JSON.stringify(last)})`);
  const ok = await lab.exec('a', 'ping -c1 -W1 10.9.0.2');
  t.equal(ok.code, 0, `a pings b${ok.code ? `: ${ok.stdout}${ok.stderr}` : ''}`);
  t.match(ok.stdout, /1 received/, 'with its output');
  const mixed = await lab.exec('b', 'echo out; echo err >&2; exit 3');
  t.same([mixed.code, mixed.stdout, mixed.stderr], [3, 'out\n', 'err\n'], 'the exit code, stdout and stderr apart');
  const argv = await lab.exec('b', ['sh', '-c', 'echo "$1"', 'sh', 'a b; $c']);
  t.equal(argv.stdout, 'a b; $c\n', 'an argv array is not re-parsed by a shell');
  t.equal((await lab.exec('a', 'ip -o -4 addr show dev eth1')).stdout.includes('10.9.0.1/24'), true, 'it runs in the node (a\'s address)');
  t.equal((await lab.exec('b', 'cat', { input: 'hello' })).stdout, 'hello', 'stdin from input');
  const t0 = performance.now();
  const slow = await lab.exec('b', 'sleep 30', { timeoutMs: 300 });
  const slowMs = Math.round(performance.now() - t0);
  t.ok(slow.timedOut && slow.code !== 0 && slowMs < 5000, `a timeout kills the command, not only nsenter (code ${slow.code}, after ${slowMs} ms)`);
  t.equal((await lab.exec('b', ['pgrep', '-f', 'sleep 30'])).code, 1, 'and nothing of it is left running in the lab');
  await t.rejects(lab.exec('zz', 'true'), { code: 'not-found', message: /no node "zz"/ }, 'an unknown node is an error naming it');
  t.same(await lab.addresses('a'), { eth1: '10.9.0.1' }, 'addresses() lists the node\'s IPv4 addresses');

  const child = await lab.spawn('a', ['sh', '-c', 'for i in 1 2 3; do echo line$i; sleep 0.05; done']);
  const lines: string[] = [];
  child.stdout!.on('data', (d: Buffer) => lines.push(...d.toString().split('\n').filter(Boolean)));
  const code = await new Promise((r) => child.on('close', r));
  t.same([code, lines], [0, ['line1', 'line2', 'line3']], 'spawn streams the output as it comes');

  const d = await lab.details();
  t.same(d.nodes.map((n) => n.name).sort(), ['a', 'b'], 'details() lists the nodes');
  t.equal(d.nodes.find((n) => n.name === 'a')!.processes[0]?.running, true, 'and the run: process of a as running');
});

t.test('apply changes a running lab: new parts made, removed parts gone, the rest untouched and running', async (t) => {
  const lab = await createLab(pair('change'));
  t.teardown(() => lab.destroy());
  const sleepPid = () => lab.exec('a', 'pgrep -x sleep').then((r) => r.stdout.trim());
  const pidBefore = await sleepPid();
  t.match(pidBefore, /^\d+$/, 'a runs its run: process');

  const bigger = pair('change');
  bigger.nodes.c = { exec: ['ip route add 10.9.0.0/24 via 10.9.1.1'] };
  bigger.links.push({ endpoints: ['b:eth2', 'c:eth1'], ipv4: ['10.9.1.1/24', '10.9.1.2/24'] });
  const dry = await lab.apply(bigger, { dryRun: true });
  t.ok(dry.created.includes('node c'), 'a dry run says what would be made');
  await t.rejects(lab.exec('c', 'true'), { code: 'not-found' }, 'and makes nothing');

  const r = await lab.apply(bigger);
  t.ok(r.created.includes('node c') && r.created.some((x) => x.includes('c:eth1')), `the new node and link are made (${r.created.join(', ')})`);
  t.equal(await sleepPid(), pidBefore, 'a\'s process kept running: a was not touched');
  t.equal((await lab.exec('b', 'ping -c1 -W1 10.9.1.2')).code, 0, 'b reaches the new node c');

  const r2 = await lab.apply(pair('change'));
  t.ok(r2.removed.includes('node c'), 'applying the old spec removes c');
  await t.rejects(lab.exec('c', 'true'), { code: 'not-found' }, 'c is gone');
  t.equal((await lab.exec('a', 'ping -c1 -W1 10.9.0.2')).code, 0, 'a still reaches b');
  await t.rejects(lab.apply({ ...pair('other') }), { code: 'invalid-argument', message: /keeps the lab's name/ }, 'a change cannot rename the lab');
});

t.test('two labs with the same name and addresses, made at once, never see each other', async (t) => {
  const before = leftovers();
  const [one, two] = await Promise.all([createLab(pair('twin')), createLab(pair('twin'))]);
  t.teardown(() => Promise.all([one.destroy(), two.destroy()]));
  t.not(one.pid, two.pid, 'each has its own worker');
  for (const lab of [one, two]) t.equal((await lab.exec('a', 'ping -c1 -W1 10.9.0.2')).code, 0, 'each carries its own traffic');
  // A mark in one lab's node b (its eth1 alias) is not in the other's.
  t.equal((await one.exec('b', 'ip link set eth1 alias lab-one')).code, 0, 'lab one marks its node b');
  t.notMatch((await two.exec('b', 'ip -o link show eth1')).stdout, /lab-one/, 'lab two\'s b is another node');
  t.equal((await one.exec('a', 'ls /run/netns')).stdout.trim().split('\n').length, 2, 'a lab sees only its own two namespaces');
  t.same(leftovers(), before, 'neither shows in the caller\'s namespace');
  await one.destroy();
  t.equal((await two.exec('a', 'ping -c1 -W1 10.9.0.2')).code, 0, 'destroying one leaves the other running');
});

t.test('a bad spec is refused with every problem and creates nothing; destroy is final and safe twice', async (t) => {
  const bad = { name: 'bad', networks: {}, nodes: { a: {} }, links: [{ endpoints: ['a:eth1', 'zz:eth1'] }] } as LabSpec;
  await t.rejects(createLab(bad), { code: 'invalid-argument', message: /zz/ }, 'an unknown node in a link is named');
  await t.rejects(createLab(join(ROOT, 'examples/no-such-file.yml')), { code: 'invalid-argument', message: /no-such-file\.yml.*no such file/s }, 'a missing file is named');
  const failing = pair('failing');
  failing.nodes.b = { exec: ['echo boom; exit 4'] };
  await t.rejects(createLab(failing), { message: /node "b".*exit code 4.*boom/s }, 'a failing exec: names the node, the command\'s exit code and output');
  const unprivileged = spawnSync(
    'setpriv',
    ['--reuid', '65534', '--regid', '65534', '--clear-groups', '--', process.execPath, '--input-type=module', '-e',
      `import(${JSON.stringify(pathToFileURL(join(ROOT, 'dist/index.js')).href)}).then((m) => m.createLab(${JSON.stringify(pair('nobody'))})).catch((e) => { console.log(e.code + ': ' + e.message); })`],
    { encoding: 'utf8', timeout: 30_000 },
  );
  t.match(unprivileged.stdout, /^unsupported: a lab needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN .*uid 65534/, 'without privileges: a clear error, nothing started');
  {
    await using lab = await createLab(pair('scoped'));
    t.equal((await lab.exec('a', 'true')).code, 0, 'await using: the lab works inside the block');
    var worker = lab.pid; // eslint-disable-line no-var
  }
  t.ok(await until(() => !alive(worker), 3000), 'and is gone when the block ends');
  const lab = await createLab(pair('twice'));
  await lab.destroy();
  await lab.destroy();
  t.ok(lab.closed, 'destroy twice is fine; the lab is closed');
  await t.rejects(lab.exec('a', 'true'), { code: 'not-found', message: /gone/ }, 'exec on a destroyed lab is an error');
  await assertClean(t);
});

t.test('a test that forgets destroy() still ends, and its lab with it', async (t) => {
  const script = `
    const { createLab } = await import(${JSON.stringify(pathToFileURL(join(ROOT, 'dist/index.js')).href)});
    const lab = await createLab(${JSON.stringify(pair('forgotten'))});
    const r = await lab.exec('a', 'ping -c1 -W1 10.9.0.2');
    process.stdout.write(JSON.stringify({ pid: lab.pid, ping: r.code }) + '\\n');
  `;
  const t0 = performance.now();
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  const ms = Math.round(performance.now() - t0);
  t.equal(r.status, 0, `the process ends by itself (${ms} ms)${r.status ? `: ${r.stderr}` : ''}`);
  const info = JSON.parse(r.stdout.trim()) as { pid: number; ping: number };
  t.equal(info.ping, 0, 'its lab worked');
  t.ok(await until(() => !alive(info.pid), 2000), 'and the lab went with it');
  await assertClean(t);
});
