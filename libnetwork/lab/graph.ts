/**
 * A picture of a lab (`tnet graph`): nodes as boxes, networks (LANs) as hexagons (an overlay,
 * shared with other hosts, with a double border in DOT and "overlay (all hosts)" in its label),
 * links labelled with their interfaces and addresses. Mermaid and DOT are text; SVG is DOT laid out in-process by
 * a WebAssembly build of Graphviz, so no system binary is needed. The same lab gives the same
 * output byte for byte: nodes and networks by name, links in the lab's order.
 */
import type { LabLinkSpec, LabSpec } from './topology.js';

export type GraphFormat = 'mermaid' | 'dot' | 'svg';
export const GRAPH_FORMATS: readonly GraphFormat[] = ['mermaid', 'dot', 'svg'];

/** What is known of one end of a link beyond the file: the planned or running interface and addresses. */
export interface GraphEnd {
  ifname?: string;
  addresses?: readonly string[];
}

export interface GraphOptions {
  /**
   * Per link (by index in `lab.links`), per end (in endpoint order, the network end second): the
   * planner's or the running lab's interface names and addresses. They replace what the file says.
   */
  ends?: ReadonlyArray<readonly [GraphEnd | undefined, GraphEnd | undefined] | undefined>;
  /** Per network: its subnets as planned (the file's `subnet`/`subnet6` when left out). */
  subnets?: Readonly<Record<string, readonly string[]>>;
  /** Per node: its loopback addresses as planned. */
  loopbacks?: Readonly<Record<string, readonly string[]>>;
}

/** The lab as the renderers see it: everything resolved to labels, in a stable order. */
interface Picture {
  name: string;
  nodes: { name: string; lines: string[] }[];
  /** `global`: an overlay, shared by the cluster's hosts under that name (drawn with a double border). */
  networks: { name: string; lines: string[]; global?: string }[];
  edges: { from: End; to: End; props: string[] }[];
}
interface End {
  kind: 'node' | 'network';
  name: string;
  lines: string[];
}

const byName = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

function picture(lab: LabSpec, opts: GraphOptions): Picture {
  const networks = Object.keys(lab.networks ?? {}).sort(byName);
  const nodes = Object.keys(lab.nodes ?? {}).sort(byName);
  const netSet = new Set(networks);
  return {
    name: lab.name,
    nodes: nodes.map((name) => {
      const n = lab.nodes[name] ?? {};
      const lo = opts.loopbacks?.[name] ?? [n.loopback, n.loopback6].filter((x): x is string => !!x && x !== 'auto');
      return { name, lines: [...lo] };
    }),
    networks: networks.map((name) => {
      const n = lab.networks[name] ?? {};
      const subnets = opts.subnets?.[name] ?? [n.subnet, n.subnet6].filter((x): x is string => !!x);
      const lines = [...subnets, ...(n.mtu ? [`mtu ${n.mtu}`] : [])];
      if (n.driver !== 'overlay') return { name, lines };
      const global = n.name ?? name;
      return { name, global, lines: [global === name ? 'overlay (all hosts)' : `overlay ${global} (all hosts)`, ...lines] };
    }),
    edges: (lab.links ?? []).map((link, i) => {
      const ends = link.endpoints.map((text, k) => endOf(text.trim(), k, link, netSet, opts.ends?.[i]?.[k])) as [End, End];
      // The network end second, as the loader normalizes it, whatever the caller handed in.
      const [from, to] = ends[0].kind === 'network' ? [ends[1], ends[0]] : ends;
      const props = [
        ...(link.mtu ? [`mtu ${link.mtu}`] : []),
        ...(link.rate ? [link.rate] : []),
        ...(link.delay ? [`delay ${link.delay}`] : []),
        ...(link.loss ? [`loss ${link.loss}`] : []),
      ];
      return { from, to, props };
    }),
  };
}

function endOf(text: string, k: number, link: LabLinkSpec, networks: Set<string>, known: GraphEnd | undefined): End {
  const colon = text.indexOf(':');
  const name = colon < 0 ? text : text.slice(0, colon);
  if (colon < 0 && networks.has(name)) return { kind: 'network', name, lines: [] };
  const ifname = known?.ifname ?? (colon < 0 ? undefined : text.slice(colon + 1));
  // A list gives one address per end (one for a node on a network); a text is the node end's.
  const given = (v: string | readonly string[] | undefined): string[] =>
    v === undefined ? [] : typeof v === 'string' ? [v] : v.length === 2 ? [v[k]!] : v.slice(0, 1);
  const addresses = known?.addresses ?? [...given(link.ipv4), ...given(link.ipv6)];
  return { kind: 'node', name, lines: [...(ifname ? [ifname] : []), ...addresses] };
}

/** The lab as Mermaid, DOT or SVG text. */
export async function labGraph(lab: LabSpec, format: GraphFormat, opts: GraphOptions = {}): Promise<string> {
  const pic = picture(lab, opts);
  switch (format) {
    case 'mermaid':
      return mermaid(pic);
    case 'dot':
      return dot(pic);
    case 'svg':
      return svg(dot(pic));
    default:
      throw new Error(`graph format "${String(format)}" is not supported; supported formats are ${GRAPH_FORMATS.join(', ')}`);
  }
}

// Mermaid: ids are positions (names may hold characters Mermaid reads as syntax), text is quoted.
function mermaid(pic: Picture): string {
  const id = new Map<string, string>();
  pic.nodes.forEach((n, i) => id.set(`node:${n.name}`, `n${i}`));
  pic.networks.forEach((n, i) => id.set(`network:${n.name}`, `w${i}`));
  const text = (lines: string[]) => `"${lines.map(mermaidEscape).join('<br/>')}"`;
  const out = ['graph LR', `  %% lab ${pic.name}`];
  for (const n of pic.nodes) out.push(`  ${id.get(`node:${n.name}`)}[${text([n.name, ...n.lines])}]`);
  for (const n of pic.networks) out.push(`  ${id.get(`network:${n.name}`)}{{${text([n.name, ...n.lines])}}}`);
  for (const e of pic.edges) {
    const a = id.get(`${e.from.kind}:${e.from.name}`);
    const b = id.get(`${e.to.kind}:${e.to.name}`);
    if (!a || !b) continue; // an end the lab does not define: the loader refuses such labs
    const label = [e.from.lines.join(' '), e.to.lines.join(' ')].filter(Boolean).join(' — ');
    const all = [label, e.props.join(', ')].filter(Boolean);
    out.push(all.length ? `  ${a} ---|${text(all)}| ${b}` : `  ${a} --- ${b}`);
  }
  return `${out.join('\n')}\n`;
}

const mermaidEscape = (s: string) => s.replace(/"/g, '#quot;').replace(/</g, '#lt;').replace(/>/g, '#gt;');

// DOT: ids carry the kind ("node:r1", "network:lan0"), so a node and a network never share one.
function dot(pic: Picture): string {
  const q = (s: string) => `"${s.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  const label = (lines: string[]) => q(lines.join('\n')).replace(/\n/g, '\\n');
  const out = [
    `graph ${q(`lab ${pic.name}`)} {`,
    `  graph [rankdir=LR, label=${q(`lab ${pic.name}`)}, labelloc=t, fontname="Helvetica"];`,
    '  node [fontname="Helvetica", fontsize=12];',
    '  edge [fontname="Helvetica", fontsize=10];',
  ];
  for (const n of pic.nodes) out.push(`  ${q(`node:${n.name}`)} [shape=box, style=rounded, label=${label([n.name, ...n.lines])}];`);
  for (const n of pic.networks) {
    const shared = n.global !== undefined ? ', peripheries=2' : '';
    out.push(`  ${q(`network:${n.name}`)} [shape=hexagon, style=filled, fillcolor="#e8eef9"${shared}, label=${label([n.name, ...n.lines])}];`);
  }
  const known = new Set([...pic.nodes.map((n) => `node:${n.name}`), ...pic.networks.map((n) => `network:${n.name}`)]);
  for (const e of pic.edges) {
    const a = `${e.from.kind}:${e.from.name}`;
    const b = `${e.to.kind}:${e.to.name}`;
    if (!known.has(a) || !known.has(b)) continue;
    const attrs = [
      ...(e.from.lines.length ? [`taillabel=${label(e.from.lines)}`] : []),
      ...(e.to.lines.length ? [`headlabel=${label(e.to.lines)}`] : []),
      ...(e.props.length ? [`label=${label([e.props.join(', ')])}`] : []),
    ];
    out.push(`  ${q(a)} -- ${q(b)}${attrs.length ? ` [${attrs.join(', ')}]` : ''};`);
  }
  out.push('}');
  return `${out.join('\n')}\n`;
}

let graphviz: Promise<{ dot(src: string, format?: 'svg'): string }> | undefined;
async function svg(source: string): Promise<string> {
  // Loaded on first use: the WebAssembly module costs ~100 ms that `tnet graph --format dot` need not pay.
  graphviz ??= import('@hpcc-js/wasm-graphviz').then((m) => m.Graphviz.load());
  return (await graphviz).dot(source, 'svg');
}
