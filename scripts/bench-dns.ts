/**
 * bench-dns.ts — tnet's embedded DNS server against dnsmasq and unbound, with dnsperf, in the same run.
 * A benchmark, not a test: it prints numbers and asserts nothing.
 *
 *   npx vite-node scripts/bench-dns.ts [DURATION_S=10] [ROUNDS=1]          (as root)
 *
 * Needs root (the peer kit installs packages and pins processes). Steps:
 *   1. ../shared/peers/setup.sh (installs dnsmasq, unbound, nsd, dnsperf if missing);
 *   2. ../shared/peers/dns-peers.sh start: dnsmasq 127.0.0.53:5300, unbound 127.0.0.55:5302 (and nsd),
 *      authoritative for bench.test with c0000..c0999, records also in /tmp/tnet-peers/dns/hosts;
 *   3. tnet's server in a child process (scripts/bench-dns-server.ts) pinned to CPU1 like the peers
 *      (`taskset -c 1`), on 127.0.0.60:5310, loaded with that hosts file as a network named
 *      `bench.test`, served through a gateway-style network scope whose subnet is 127.0.0.0/8 (that is
 *      the benchmark's scope: it answers loopback clients and pays the same source check a gateway
 *      listener does);
 *   4. ../shared/peers/dnsperf.sh against tnet, dnsmasq and unbound, one after the other, ROUNDS times
 *      (the order rotates each round); dnsperf is pinned to CPU0 by the script;
 *   5. stops what it started, by pid: its child, then `dns-peers.sh stop`.
 *
 * stdout: JSON lines. One per server and round with dnsperf.sh's keys
 * {"server","qps_exist","qps_nx","p50_ms","p99_ms"} plus "round"; tnet's line also carries its ratios
 * to each peer of the same round: qps_exist_vs_dnsmasq, qps_nx_vs_dnsmasq, p50_vs_dnsmasq,
 * p99_vs_dnsmasq, and the same for unbound (qps: above 1 is better; latency: below 1 is better).
 * With ROUNDS > 1 a last line {"summary":true,...} gives the medians. Progress goes to stderr, with
 * the load average before each dnsperf run: on a shared 2-CPU machine other work moves every number
 * by tens of percent, so compare rounds run on a quiet machine, or the medians of several rounds.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PEERS = resolve(REPO, '../shared/peers');
const HOSTS = '/tmp/tnet-peers/dns/hosts';
const TNET = { name: 'tnet', addr: '127.0.0.60', port: 5310 };
const PEER_NAMES = ['dnsmasq', 'unbound'] as const;

const duration = Number(process.argv[2] ?? 10);
const rounds = Number(process.argv[3] ?? 1);

interface PerfLine {
  server: string;
  qps_exist: number;
  qps_nx: number;
  p50_ms: number;
  p99_ms: number;
}

const say = (m: string) => process.stderr.write(`[bench-dns] ${m}\n`);
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

let child: ChildProcess | null = null;
let peersStarted = false;

/** Run a peer-kit script; its stdout is returned, its stderr passed through. */
function kit(script: string, args: string[]): string {
  const r = spawnSync(resolve(PEERS, script), args, { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${script} ${args.join(' ')} failed (exit ${r.status})`);
  return r.stdout;
}

async function stopChild(): Promise<void> {
  const c = child;
  child = null;
  if (!c || c.exitCode !== null || c.signalCode !== null || c.pid === undefined) return;
  const exited = new Promise<void>((r) => c.once('exit', () => r()));
  process.kill(c.pid, 'SIGTERM');
  const t = setTimeout(() => {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
  }, 3000);
  await exited;
  clearTimeout(t);
}

async function cleanup(): Promise<void> {
  await stopChild();
  if (peersStarted) {
    peersStarted = false;
    try {
      kit('dns-peers.sh', ['stop']);
    } catch (e) {
      say(`dns-peers.sh stop: ${(e as Error).message}`);
    }
  }
}

async function startTnet(): Promise<void> {
  const viteNode = resolve(REPO, 'node_modules/.bin/vite-node');
  const cmd = [viteNode, resolve(REPO, 'scripts/bench-dns-server.ts'), HOSTS, TNET.addr, String(TNET.port)];
  const pinned = cpus().length >= 2 ? ['taskset', '-c', '1', ...cmd] : cmd;
  child = spawn(pinned[0]!, pinned.slice(1), { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, TNET_LOG_LEVEL: 'warn' } });
  const c = child;
  const ready = await new Promise<{ pid: number; records: number }>((resolveReady, reject) => {
    const t = setTimeout(() => reject(new Error('tnet DNS server not ready within 60 s')), 60_000);
    c.once('exit', (code) => reject(new Error(`tnet DNS server exited (${code})`)));
    createInterface({ input: c.stdout! }).once('line', (line) => {
      clearTimeout(t);
      try {
        resolveReady(JSON.parse(line) as { pid: number; records: number });
      } catch {
        reject(new Error(`unexpected output from the tnet DNS server: ${line}`));
      }
    });
  });
  if (ready.pid !== c.pid) say(`note: server pid ${ready.pid} (spawned ${c.pid})`);
  say(`tnet up on ${TNET.addr}:${TNET.port} (pid ${c.pid}, ${ready.records} records, CPU1)`);
}

function dnsperf(name: string, addr: string, port: number): PerfLine {
  say(`dnsperf ${name} ${addr}:${port} (${duration} s x 3), load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  const line = kit('dnsperf.sh', [name, addr, String(port), String(duration)]).trim().split('\n').pop()!;
  return JSON.parse(line) as PerfLine;
}

const r3 = (x: number) => Math.round(x * 1000) / 1000;
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

function ratios(t: PerfLine, peer: PerfLine, name: string): Record<string, number> {
  return {
    [`qps_exist_vs_${name}`]: r3(t.qps_exist / peer.qps_exist),
    [`qps_nx_vs_${name}`]: r3(t.qps_nx / peer.qps_nx),
    [`p50_vs_${name}`]: r3(t.p50_ms / peer.p50_ms),
    [`p99_vs_${name}`]: r3(t.p99_ms / peer.p99_ms),
  };
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    say('run as root (the peer kit installs packages, starts servers and pins CPUs)');
    process.exit(2);
  }
  if (!existsSync(resolve(PEERS, 'dnsperf.sh'))) throw new Error(`peer kit not found in ${PEERS}`);
  say('setup.sh');
  process.stderr.write(kit('setup.sh', []));
  say('dns-peers.sh start');
  peersStarted = true;
  const servers = kit('dns-peers.sh', ['start'])
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { server: string; addr: string; port: number });
  await startTnet();
  const targets = [TNET, ...PEER_NAMES.map((n) => {
    const s = servers.find((x) => x.server === n);
    if (!s) throw new Error(`dns-peers.sh did not start ${n}`);
    return { name: n, addr: s.addr, port: s.port };
  })];
  const all: Record<string, number>[] = [];
  for (let round = 1; round <= rounds; round++) {
    const order = targets.map((_, i) => targets[(i + round - 1) % targets.length]!);
    const res = new Map<string, PerfLine>();
    for (const t of order) res.set(t.name, dnsperf(t.name, t.addr, t.port));
    const tn = res.get('tnet')!;
    for (const n of PEER_NAMES) out({ ...res.get(n)!, round });
    const line = { ...tn, round, ...Object.assign({}, ...PEER_NAMES.map((n) => ratios(tn, res.get(n)!, n))) };
    all.push(line);
    out(line);
  }
  if (rounds > 1) {
    const keys = Object.keys(all[0]!).filter((k) => k !== 'server' && k !== 'round');
    out({ summary: true, server: 'tnet', rounds, ...Object.fromEntries(keys.map((k) => [k, r3(median(all.map((l) => l[k]!)))])) });
  }
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    say(`${sig}: stopping`);
    void cleanup().then(() => process.exit(130));
  });
}

try {
  await main();
} catch (e) {
  say(`FAIL: ${(e as Error).message}`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
