/** `tnet graph NAME|FILE --format mermaid|dot|svg`: a picture of a lab. */
import { existsSync, statSync } from 'node:fs';
import type { LabDetails, LabPlan } from '../libnetwork/lab/apply.js';
import { GRAPH_FORMATS, type GraphEnd, type GraphFormat, type GraphOptions, labGraph } from '../libnetwork/lab/graph.js';
import type { LabSpec } from '../libnetwork/lab/topology.js';
import { GLOBAL_HELP, UsageError, daemon, parseVerb } from './lab-common.js';
import { formatProblems, loadLabFile } from './lab-file.js';

export const HELP = `Usage: tnet graph NAME|FILE [--format mermaid|dot|svg]

Prints a picture of a lab: nodes, networks, links with their interfaces and addresses. A running
lab (NAME) shows the addresses it got; a FILE shows what the file says (no daemon needed).
SVG is laid out in-process (a WebAssembly build of Graphviz): no system binary is needed.

Options:
  --format F   mermaid (default), dot or svg

${GLOBAL_HELP}`;

/** The running lab's interfaces and addresses per link end, in the spec's link order (the planner keeps it). */
export function graphOptions(spec: LabSpec, plan: LabPlan): GraphOptions {
  let wi = 0;
  let ai = 0;
  const ends: ([GraphEnd | undefined, GraphEnd | undefined] | undefined)[] = [];
  for (const l of spec.links) {
    const lan = l.endpoints.some((e) => !e.includes(':') && e in spec.networks);
    if (lan) {
      const a = plan.attachments[ai++];
      const iface = a && plan.nodes[a.node]?.interfaces.find((i) => i.ifname === a.ifname);
      ends.push(a ? [{ ifname: a.ifname, addresses: iface?.addresses ?? [] }, undefined] : undefined);
    } else {
      const w = plan.wires[wi++];
      ends.push(w ? [{ ifname: w.a.ifname, addresses: w.a.addresses }, { ifname: w.b.ifname, addresses: w.b.addresses }] : undefined);
    }
  }
  const subnets: Record<string, string[]> = {};
  for (const n of Object.values(plan.networks)) subnets[n.name] = [n.subnet, n.subnet6].filter((s): s is string => Boolean(s));
  const loopbacks: Record<string, string[]> = {};
  for (const n of Object.values(plan.nodes)) if (n.loopback.length) loopbacks[n.name] = n.loopback;
  return { ends, subnets, loopbacks };
}

export async function run(argv: string[]): Promise<number> {
  const v = parseVerb(argv, { format: { type: 'string' } }, HELP);
  if (!v) return 0;
  if (v.positionals.length !== 1) throw new UsageError('tnet graph takes NAME or FILE; see tnet graph --help');
  const format = (v.values.format as string | undefined) ?? 'mermaid';
  if (!(GRAPH_FORMATS as readonly string[]).includes(format)) throw new UsageError(`--format "${format}" is not supported; supported formats are ${GRAPH_FORMATS.join(', ')}`);
  const arg = v.positionals[0]!;
  let out: string;
  if (arg === '-' || (existsSync(arg) && statSync(arg).isFile())) {
    const { lab, problems } = await loadLabFile(arg);
    if (!lab) {
      process.stderr.write(formatProblems(problems) + '\n');
      return 2;
    }
    out = await labGraph(lab, format as GraphFormat);
  } else {
    const d = await (await daemon(v)).call<LabDetails>('GET', `/labs/${encodeURIComponent(arg)}`);
    out = await labGraph(d.spec, format as GraphFormat, graphOptions(d.spec, d.plan));
  }
  process.stdout.write(out.endsWith('\n') ? out : out + '\n');
  return 0;
}
