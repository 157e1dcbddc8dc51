/** `tnet destroy NAME|FILE|--all`: removes everything a lab owns; no file needed, safe to repeat. */
import { existsSync, statSync } from 'node:fs';
import type { LabSummary } from '../libnetwork/lab/apply.js';
import { GLOBAL_HELP, UsageError, daemon, parseVerb, printJson } from './lab-common.js';
import { formatProblems, loadLabFile } from './lab-file.js';

export const HELP = `Usage: tnet destroy NAME|FILE... | --all [--json]

Removes everything the lab owns: its nodes (namespaces), links, networks, address pools and the
processes its nodes' run: started. Found by the lab's name alone, so it works when the file is
gone and after a crash; nothing another lab or network owns is touched. Destroying a lab that is
not there is not an error (safe to run twice).

Arguments:
  NAME      a lab's name (tnet ls)
  FILE      a lab file: its name: is the lab's
  --all     every lab

${GLOBAL_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const v = parseVerb(argv, { all: { type: 'boolean' }, json: { type: 'boolean' } }, HELP);
  if (!v) return 0;
  if (v.values.all ? v.positionals.length !== 0 : v.positionals.length === 0) throw new UsageError('tnet destroy takes NAME|FILE... or --all; see tnet destroy --help');
  const client = await daemon(v);
  const names: string[] = [];
  if (v.values.all) names.push(...(await client.call<LabSummary[]>('GET', '/labs')).map((l) => l.name));
  for (const arg of v.positionals) {
    if (arg === '-' || (existsSync(arg) && statSync(arg).isFile())) {
      const { lab, problems } = await loadLabFile(arg);
      if (!lab) {
        process.stderr.write(formatProblems(problems) + '\n');
        return 2;
      }
      names.push(lab.name);
    } else names.push(arg);
  }
  const out: { name: string; removed: number }[] = [];
  for (const name of names) {
    const r = await client.call<{ removed: number }>('DELETE', `/labs/${encodeURIComponent(name)}`);
    out.push({ name, ...r });
    if (!v.values.json) process.stdout.write(r.removed ? `lab ${name}: removed ${r.removed} objects\n` : `lab ${name}: nothing to remove\n`);
  }
  if (v.values.json) printJson(out);
  return 0;
}
