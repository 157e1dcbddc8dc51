/** `tnet inspect NAME`: a lab's nodes, interfaces, addresses, links and networks. */
import type { LabDetails } from '../libnetwork/lab/apply.js';
import { GLOBAL_HELP, UsageError, daemon, parseVerb, printJson, table } from './lab-common.js';

export const HELP = `Usage: tnet inspect NAME [--json]

Shows a lab as it runs: each node with its namespace, interfaces, addresses, MTUs and what each
interface connects to; the point-to-point links; the networks (LANs) with their subnets; the
processes its run: started. --json prints all of it, with the spec and the plan.

${GLOBAL_HELP}`;

export function detailsText(d: LabDetails): string {
  const nodes = [['NODE', 'NETNS', 'INTERFACE', 'ADDRESSES', 'MTU', 'TO']];
  for (const n of d.nodes) {
    nodes.push([n.name, n.netns, 'lo', n.loopback.join(' ') || '-', '', '']);
    for (const i of n.interfaces) nodes.push(['', '', i.ifname, i.addresses.join(' ') || '-', String(i.mtu), i.peer ?? `network ${i.network}`]);
  }
  const parts = [`lab ${d.name} (${d.state})`, table(nodes)];
  if (d.links.length)
    parts.push(table([['LINK', '', 'MTU', 'ADDRESSES', 'RATE'], ...d.links.map((l) => [l.a, l.b, String(l.mtu), `${l.addresses[0].join(' ')} | ${l.addresses[1].join(' ')}`, l.rate ?? ''])]));
  if (d.networks.length)
    parts.push(
      table([
        ['NETWORK', 'DRIVER', 'SUBNET', 'MTU', 'BRIDGE'],
        ...d.networks.map((n) => [
          // an overlay is the cluster's: its global name and VNI say which one
          n.scope === 'global' ? `${n.name} (global ${n.global ?? n.name}, vni ${n.vni ?? '?'})` : n.name,
          n.driver + (n.internal ? ' (internal)' : ''), [n.subnet, n.subnet6].filter(Boolean).join(' '), String(n.mtu), n.bridge ?? '',
        ]),
      ]),
    );
  const procs = d.nodes.flatMap((n) => n.processes.map((p) => [n.name, String(p.pid), p.running ? 'running' : 'exited', p.cmd]));
  if (procs.length) parts.push(table([['NODE', 'PID', 'STATE', 'COMMAND'], ...procs]));
  return parts.join('\n\n');
}

export async function run(argv: string[]): Promise<number> {
  const v = parseVerb(argv, { json: { type: 'boolean' } }, HELP);
  if (!v) return 0;
  if (v.positionals.length !== 1) throw new UsageError('tnet inspect takes NAME; see tnet inspect --help');
  const d = await (await daemon(v)).call<LabDetails>('GET', `/labs/${encodeURIComponent(v.positionals[0]!)}`);
  if (v.values.json) printJson(d);
  else process.stdout.write(detailsText(d) + '\n');
  return 0;
}
