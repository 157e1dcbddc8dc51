/** `tnet create FILE|-`: builds the lab, or applies the difference to the running lab of that name. */
import { request } from 'node:http';
import { ApiFailure, type ApiError, type Client } from './client.js';
import { GLOBAL_HELP, UsageError, daemon, parseVerb, printJson, table } from './lab-common.js';
import { formatProblems, loadLabFile } from './lab-file.js';
import { progress } from './progress.js';
import type { LabApplyResult, LabPlan } from '../libnetwork/lab/apply.js';
import type { LabSpec } from '../libnetwork/lab/topology.js';

export const HELP = `Usage: tnet create FILE|- [--dry-run] [--json]

Builds the lab described by FILE (YAML or JSON; - reads standard input) and returns when every
link is up, every node's exec: commands have run and its run: processes are started. Run it again
on a changed file to apply the difference: nodes, links and networks added, removed or changed;
the rest is left untouched and running. The file is checked first: every problem is reported
with file:line:column and nothing is created.

If an exec: command fails, create fails with the node, the command, its exit code and output,
and the lab is left as created so you can look (tnet exec LAB NODE -- ...); fix the file and
create again (the failed node is made anew), or tnet destroy LAB.

Options:
  --dry-run   print the plan (every interface, address and MTU) and what would change; change nothing
  --json      print the result (the plan and what changed) as JSON

${GLOBAL_HELP}`;

/** POST /labs with progress: NDJSON lines until the result. */
function createStreaming(client: Client, body: unknown, onProgress: (p: { done: number; total: number; what: string }) => void): Promise<LabApplyResult> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request(
      { socketPath: client.socket, method: 'POST', path: '/labs', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } },
      (res) => {
        let buf = '';
        let settled = false;
        const line = (l: string) => {
          if (!l.trim()) return;
          const m = JSON.parse(l) as { progress?: { done: number; total: number; what: string }; result?: LabApplyResult; error?: ApiError };
          if (m.progress) onProgress(m.progress);
          else if (m.result) (settled = true), resolve(m.result);
          else if (m.error) (settled = true), reject(new ApiFailure(res.statusCode ?? 500, m.error));
        };
        res.on('data', (c: Buffer) => {
          buf += c.toString();
          let i: number;
          while ((i = buf.indexOf('\n')) >= 0) {
            line(buf.slice(0, i));
            buf = buf.slice(i + 1);
          }
        });
        res.on('end', () => {
          try {
            if (buf) line(buf);
            if (!settled) reject(new ApiFailure(500, { code: 'internal', message: 'the daemon ended the answer early' }));
          } catch (e) {
            reject(e);
          }
        });
      },
    );
    req.on('error', reject);
    req.end(data);
  });
}

export function planTable(plan: LabPlan): string {
  const rows = [['NODE', 'INTERFACE', 'ADDRESSES', 'MTU', 'TO']];
  for (const n of Object.values(plan.nodes)) {
    if (n.loopback.length) rows.push([n.name, 'lo', n.loopback.join(' '), '', '']);
    for (const i of n.interfaces)
      rows.push([n.name, i.ifname, i.addresses.join(' ') || (i.network ? '(from the network)' : '-'), String(i.mtu), i.peer ? `${i.peer.node}:${i.peer.ifname}` : `network ${i.network}`]);
    if (!n.loopback.length && !n.interfaces.length) rows.push([n.name, '-', '-', '', '']);
  }
  const nets = Object.values(plan.networks);
  const out = [table(rows)];
  if (nets.length)
    out.push(table([['NETWORK', 'DRIVER', 'SUBNET', 'MTU'], ...nets.map((n) => [n.name, n.driver + (n.internal ? ' (internal)' : ''), [n.subnet ?? '(auto)', n.subnet6].filter(Boolean).join(' '), String(n.mtu)])]));
  return out.join('\n\n');
}

export async function run(argv: string[]): Promise<number> {
  const v = parseVerb(argv, { 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } }, HELP);
  if (!v) return 0;
  if (v.positionals.length !== 1) throw new UsageError('tnet create takes FILE (or - for standard input); see tnet create --help');
  const { lab, problems } = await loadLabFile(v.positionals[0]!);
  if (!lab) {
    process.stderr.write(formatProblems(problems) + '\n');
    return 2;
  }
  const spec: LabSpec = lab;
  const client = await daemon(v);
  const dryRun = Boolean(v.values['dry-run']);
  const t0 = performance.now();
  const bar = progress(`creating ${spec.name}`);
  let r: LabApplyResult;
  try {
    r = process.stderr.isTTY && !dryRun
      ? await createStreaming(client, { spec, progress: true }, (p) => bar.update(p))
      : await client.call<LabApplyResult>('POST', '/labs', { spec, dryRun });
  } finally {
    bar.done();
  }
  if (v.values.json) {
    printJson(r);
    return 0;
  }
  const what = (l: string[]) => (l.length ? l.join(', ') : 'nothing');
  if (dryRun) {
    process.stdout.write(`${planTable(r.plan)}\n\nwould create: ${what(r.created)}\nwould remove: ${what(r.removed)}\nwould change: ${what(r.changed)}\nunchanged: ${r.unchanged}\n`);
    return 0;
  }
  const s = ((performance.now() - t0) / 1000).toFixed(2);
  const counts = `${Object.keys(r.plan.nodes).length} nodes, ${r.plan.wires.length + r.plan.attachments.length} links, ${Object.keys(r.plan.networks).length} networks`;
  process.stdout.write(
    r.created.length + r.removed.length + r.changed.length === 0
      ? `lab ${spec.name}: up to date (${counts})\n`
      : `lab ${spec.name}: ${counts}; created ${r.created.length}, removed ${r.removed.length}, changed ${r.changed.length}, unchanged ${r.unchanged} in ${s} s\n`,
  );
  return 0;
}
