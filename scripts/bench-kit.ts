/**
 * What every benchmark script shares: JSON lines on stdout and progress on stderr, medians,
 * a CPU stall meter (how far to trust a number on this shared 2-core machine), and a command
 * runner that fails loudly.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** The output of one benchmark: results as JSON lines on stdout, progress and failures on stderr tagged with its name. */
export function benchOutput(name: string): {
  fail(msg: string): never;
  progress(msg: string): void;
  emit(o: object): void;
} {
  return {
    fail(msg: string): never {
      process.stderr.write(`[${name}] FAIL: ${msg}\n`);
      process.exit(1);
    },
    progress: (msg) => process.stderr.write(`[${name}] ${msg}\n`),
    emit: (o) => process.stdout.write(`${JSON.stringify(o)}\n`),
  };
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
