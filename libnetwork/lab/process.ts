/**
 * Commands in a lab's nodes: `exec:` (run to completion, in order, after every link is up) and
 * `run:` (long-running, started detached in the node, recorded with their start time so a pid the
 * system recycled is never signalled, stopped on destroy: SIGTERM, SIGKILL after a grace).
 * Through `ip netns exec`, which also bind-mounts the node's /etc/netns/NS/resolv.conf.
 */
import { spawn } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TnetError } from '../errors.js';

/** Output kept from a failing command for its error message. */
const OUTPUT_LIMIT = 4000;

export interface ExecResult {
  code: number;
  output: string;
}

/** Runs `sh -c cmd` in the namespace; resolves with its exit code and its output (stdout and stderr together). */
export function execIn(netns: string, cmd: string, opts: { timeoutMs?: number } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('ip', ['netns', 'exec', netns, 'sh', '-c', cmd], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (d: Buffer) => {
      output += d.toString();
      if (output.length > OUTPUT_LIMIT * 2) output = output.slice(-OUTPUT_LIMIT);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined;
    child.on('error', (e) => reject(new TnetError('unsupported', `cannot run "ip netns exec": ${e.message} (iproute2 is needed)`)));
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 + 9 : 1), output: output.slice(-OUTPUT_LIMIT) });
    });
  });
}

/** Runs a node's `exec:` commands in order; the first failing one is an error naming the node, the command, its exit code and output. */
export async function execAll(lab: string, node: string, netns: string, cmds: readonly string[]): Promise<void> {
  for (const cmd of cmds) {
    const r = await execIn(netns, cmd, { timeoutMs: 120_000 });
    if (r.code !== 0)
      throw new TnetError(
        'internal',
        `lab "${lab}": node "${node}": exec "${cmd}" failed with exit code ${r.code}${r.output.trim() ? `:\n${r.output.trimEnd()}` : ' (no output)'}\n` +
          `The lab is left as created so you can look (tnet exec ${lab} ${node} -- ...); fix the file and run create again, or tnet destroy ${lab}.`,
        { object: `node "${node}"` },
      );
  }
}

/** Field 22 of /proc/PID/stat (start time in clock ticks since boot), or undefined if the process is gone. */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the command name (field 2) may hold spaces and parentheses: count from the last ')'
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Starts `sh -c cmd` in the namespace, detached in its own process group, output to `logDir/NODE.log`. */
export function startProcess(netns: string, node: string, cmd: string, logDir: string): { pid: number; start: string } {
  mkdirSync(logDir, { recursive: true, mode: 0o700 });
  const fd = openSync(join(logDir, `${node}.log`), 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', netns, 'sh', '-c', cmd], { detached: true, stdio: ['ignore', fd, fd] });
    if (child.pid === undefined) throw new TnetError('internal', `node "${node}": cannot start "${cmd}"`, { object: `node "${node}"` });
    child.unref();
    return { pid: child.pid, start: processStart(child.pid) ?? '' };
  } finally {
    closeSync(fd);
  }
}

/**
 * Stops recorded processes (and their process groups): SIGTERM, then SIGKILL for those still
 * there after `graceMs`. A pid whose start time differs is another process now: left alone.
 */
export async function stopProcesses(procs: readonly { pid: number; start: string }[], graceMs = 2000): Promise<void> {
  const ours = (p: { pid: number; start: string }) => p.start !== '' && processStart(p.pid) === p.start;
  const signal = (p: { pid: number }, sig: NodeJS.Signals) => {
    try {
      process.kill(-p.pid, sig); // its group: sh -c and what it started
    } catch {
      try {
        process.kill(p.pid, sig);
      } catch {
        /* gone */
      }
    }
  };
  const live = procs.filter(ours);
  for (const p of live) signal(p, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  while (live.some(ours) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  for (const p of live) if (ours(p)) signal(p, 'SIGKILL');
}
