/**
 * What every benchmark script shares: JSON lines on stdout and progress on stderr, medians,
 * a CPU stall meter (how far to trust a number on this shared 2-core machine), and a command
 * runner that fails loudly.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join, relative } from 'node:path';
import { rerunInPrivateNamespace } from '../test/private-namespace.js';

/**
 * The output of one benchmark: results as JSON lines on stdout, progress and failures on stderr
 * tagged with its name; and the two steps every benchmark of tnet takes before timing anything.
 */
export function benchOutput(name: string): {
  fail(msg: string): never;
  progress(msg: string): void;
  emit(o: object): void;
  /** Re-runs this script inside its own network + mount namespace (as the tests run) and returns its JSON lines. */
  runIsolated<T = object>(): T[];
  /** Fails when a source under root is newer than its dist/ build: the benchmark would time old code. */
  checkDistFresh(root: string): void;
  /** Before anything is timed: root, a fresh dist/, and (unless `peers` is false) the peer kit set up. */
  prepareHost(root: string, peers: boolean): void;
} {
  const fail = (msg: string): never => {
    process.stderr.write(`[${name}] FAIL: ${msg}\n`);
    process.exit(1);
  };
  const emit = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
  const progress = (msg: string) => process.stderr.write(`[${name}] ${msg}\n`);
  const out = {
    fail,
    progress,
    emit,
    runIsolated<T>(): T[] {
      const r = rerunInPrivateNamespace('TNET_BENCH_ISOLATED', { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8', maxBuffer: 16 << 20 });
      if (r.error) fail(`cannot isolate the benchmark (unshare): ${r.error.message}`);
      const lines = String(r.stdout).trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as T);
      if (r.status !== 0) {
        for (const l of lines) emit(l as object);
        fail(`the isolated tnet run exited ${r.status ?? r.signal}`);
      }
      return lines;
    },
    checkDistFresh(root: string): void {
      const stale: string[] = [];
      const walk = (dir: string) => {
        for (const e of readdirSync(dir, { withFileTypes: true })) {
          const p = join(dir, e.name);
          if (e.isDirectory()) walk(p);
          else if (e.name.endsWith('.ts') && !e.name.endsWith('.d.ts')) {
            const js = join(root, 'dist', relative(root, p)).replace(/\.ts$/, '.js');
            let jsTime = 0;
            try {
              jsTime = statSync(js).mtimeMs;
            } catch {
              /* missing: stale */
            }
            if (statSync(p).mtimeMs > jsTime) stale.push(relative(root, p));
          }
        }
      };
      for (const d of ['libnetwork', 'drivers', 'cli', 'dns']) walk(join(root, d));
      if (stale.length) fail(`dist/ is older than ${stale.slice(0, 3).join(', ')}${stale.length > 3 ? ', ...' : ''}: run \`npx tsc -p tsconfig.json\` first`);
    },
    prepareHost(root: string, peers: boolean): void {
      if (process.getuid?.() !== 0) fail('needs root (it creates namespaces and links)');
      out.checkDistFresh(root);
      if (!peers) return;
      progress('peers: setup.sh');
      progress(run(join(root, '../shared/peers/setup.sh'), []).trim().split('\n').pop()!); // the kernel line
    },
  };
  return out;
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const r2 = (x: number) => Math.round(x * 100) / 100;

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : r2((s[m - 1]! + s[m]!) / 2);
}

/**
 * CPU pressure stall time (/proc/pressure/cpu "some", µs): on a shared 2-core machine other work
 * competes with a phase, and its share of the phase's wall time says how far to trust the number.
 */
function cpuStallUs(): number | undefined {
  try {
    const m = /^some .*total=(\d+)/m.exec(readFileSync('/proc/pressure/cpu', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Starts a stall meter; calling the result gives the % of wall time since then that some task waited for a CPU. */
export function stallMeter(): () => number | undefined {
  const s0 = cpuStallUs();
  const t0 = performance.now();
  return () => {
    const s1 = cpuStallUs();
    return s0 === undefined || s1 === undefined ? undefined : r2(((s1 - s0) / 1000 / (performance.now() - t0)) * 100);
  };
}

/** Runs a command to completion; its stdout, or an error with its exit status and output. */
export function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/**
 * One endpoint-setup line, as ../shared/peers/endpoint-setup.sh prints it and as tnet's own
 * endpoint runs print it next to the peer's (with variant and extra keys of their own).
 */
export interface EndpointResult {
  tool: string;
  variant?: string;
  n: number;
  setup_ms: number;
  per_endpoint_ms: number;
  teardown_ms: number;
  netns_create_ms: number;
  verified: boolean;
  [extra: string]: unknown;
}

/** Runs `fn(1..n)` in batches of `width` at once (1: one after the other, as the peers do). */
export async function batches(n: number, width: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  for (let i = 1; i <= n; i += width) {
    const work: Promise<unknown>[] = [];
    for (let j = i; j < i + width && j <= n; j++) work.push(fn(j));
    await Promise.all(work);
  }
}

/** GET /ping on a daemon's unix socket: true on a 200, false if nothing answers yet. */
export function daemonAnswers(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ socketPath, path: '/ping', method: 'GET', timeout: 1000 }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200));
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}
