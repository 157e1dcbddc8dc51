/** `tnet exec LAB NODE -- CMD`: runs CMD in a lab's node, output streamed, its exit code returned. */
import { spawnSync } from 'node:child_process';
import { GLOBAL_HELP, UsageError, daemon, parseVerb } from './lab-common.js';

export const HELP = `Usage: tnet exec LAB NODE -- CMD [ARGS...]
       tnet exec SANDBOX -- CMD [ARGS...]

Runs CMD inside the node's network namespace (with the node's resolv.conf, so lab names resolve),
its output streamed, and exits with CMD's exit code. With one name before --, SANDBOX is a
sandbox made by tnet sandbox create.

${GLOBAL_HELP}`;

export async function run(argv: string[], after: string[]): Promise<number> {
  const v = parseVerb(argv, {}, HELP);
  if (!v) return 0;
  if (v.positionals.length !== 2) throw new UsageError('tnet exec takes LAB NODE -- CMD; see tnet exec --help');
  if (after.length === 0) throw new UsageError('tnet exec needs a command after "--"');
  const [lab, node] = v.positionals as [string, string];
  const { netns } = await (await daemon(v)).call<{ netns: string }>('GET', `/labs/${encodeURIComponent(lab)}/nodes/${encodeURIComponent(node)}`);
  const r = spawnSync('ip', ['netns', 'exec', netns, ...after], { stdio: 'inherit' });
  if (r.error) throw r.error;
  return r.status ?? (r.signal ? 128 : 1);
}
