/** `tnet ls`: the labs. */
import type { LabSummary } from '../libnetwork/lab/apply.js';
import { GLOBAL_HELP, UsageError, daemon, parseVerb, printJson, table } from './lab-common.js';

export const HELP = `Usage: tnet ls [--json]

Lists the labs: name, state (ready, or creating for a create that did not finish: create again or
destroy), nodes, links, networks and when it was created.

${GLOBAL_HELP}`;

export async function run(argv: string[]): Promise<number> {
  const v = parseVerb(argv, { json: { type: 'boolean' } }, HELP);
  if (!v) return 0;
  if (v.positionals.length) throw new UsageError('tnet ls takes no arguments; see tnet ls --help');
  const labs = await (await daemon(v)).call<LabSummary[]>('GET', '/labs');
  if (v.values.json) printJson(labs);
  else
    process.stdout.write(
      table([['NAME', 'STATE', 'NODES', 'LINKS', 'NETWORKS', 'CREATED'], ...labs.map((l) => [l.name, l.state, String(l.nodes), String(l.links), String(l.networks), l.created])]) + '\n',
    );
  return 0;
}
