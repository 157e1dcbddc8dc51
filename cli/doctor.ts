/**
 * `tnet doctor [--repair] [--json]`: the daemon compares its state with the kernel
 * (libnetwork/doctor.ts) and this prints every difference in plain words. Exit 0: the kernel
 * matches the state (after --repair: nothing is left); 1: differences found (or left).
 */
import type { Client } from './client.js';

interface Finding {
  problem: string;
  object: string;
  record?: string;
  detail: string;
}

function lines(fs: readonly Finding[]): string {
  return fs.map((f) => `${f.problem.padEnd(11)} ${f.object}${f.record ? ` (${f.record})` : ''}: ${f.detail}\n`).join('');
}

export async function doctor(client: Client, opts: { repair?: boolean; json?: boolean }): Promise<number> {
  if (opts.repair) {
    const r = await client.call<{ found: Finding[]; left: Finding[] }>('POST', '/doctor/repair', {});
    if (opts.json) process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    else if (r.found.length === 0) process.stdout.write('no differences: the kernel matches the state; nothing to repair\n');
    else {
      process.stdout.write(`found ${r.found.length} difference(s):\n${lines(r.found)}`);
      process.stdout.write(r.left.length ? `left after the repair (${r.left.length}):\n${lines(r.left)}` : 'all repaired\n');
    }
    return r.left.length ? 1 : 0;
  }
  const { findings } = await client.call<{ findings: Finding[] }>('GET', '/doctor');
  if (opts.json) process.stdout.write(JSON.stringify(findings, null, 2) + '\n');
  else if (findings.length === 0) process.stdout.write('no differences: the kernel matches the state\n');
  else process.stdout.write(`${lines(findings)}${findings.length} difference(s); \`tnet doctor --repair\` fixes what a restart would\n`);
  return findings.length ? 1 : 0;
}
