/**
 * The README's main job (`bash scripts/demo.sh`) works as the README says: a bridge network with
 * two sandboxes pinging by address and by name, then the line lab made from its file, pinged end
 * to end by name and destroyed; nothing left behind.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { assertClean, isolate } from './harness.js';

await isolate();
const ROOT = join(import.meta.dirname, '../..');

t.test('scripts/demo.sh: the main job runs to its end', { skip: existsSync(join(ROOT, 'dist/cli/main.js')) ? false : 'dist/ is not built (npx tsc -p tsconfig.json)' }, async (t) => {
  const r = spawnSync('bash', ['scripts/demo.sh'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env: { ...process.env, TNET_LOG_LEVEL: 'warn' } });
  t.equal(r.status, 0, 'exit 0', { stderr: (r.stderr ?? '').split('\n').slice(-15).join('\n') });
  t.match(r.stdout, /demo: ok — two sandboxes on bridge network 'demo' reach each other by address and by name; lab 'line' made, pinged end to end and destroyed/, 'it says so');
  t.match(r.stdout + r.stderr, /64 bytes from r3\.line \(10\.0\.23\.2\).*ttl=63/, 'r1 reached r3 by name across r2 (one hop: ttl 63)');
  await assertClean(t);
});
