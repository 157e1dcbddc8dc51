/** `tnet graph`: a lab as Mermaid, DOT and SVG (Graphviz in WebAssembly, in-process). No kernel, no root. */
import { describe, expect, it } from 'vitest';
import { parseLabText } from '../../cli/lab-file.js';
import { labGraph } from '../../libnetwork/lab/graph.js';
import type { LabSpec } from '../../libnetwork/lab/topology.js';

const { lab } = parseLabText(
  `name: lab1
networks:
  lan0: { subnet: 10.10.0.0/24, mtu: 9000 }
nodes:
  r2: { loopback: 10.0.0.2/32 }
  r1: {}
  h1: {}
links:
  - endpoints: ["r1:eth1", "r2:eth1"]
    rate: 100mbit
    ipv4: [10.0.1.0/31, 10.0.1.1/31]
  - endpoints: ["lan0", "h1:eth0"]
  - endpoints: ["r1:eth2", "lan0"]
    ipv4: 10.10.0.254/24
    mtu: 9000
`,
  'lab1.yml',
);
const LAB = lab!;

describe('labGraph', () => {
  it('mermaid: nodes as boxes, networks as hexagons, links labelled with interfaces and addresses', async () => {
    expect(await labGraph(LAB, 'mermaid')).toBe(
      [
        'graph LR',
        '  %% lab lab1',
        '  n0["h1"]',
        '  n1["r1"]',
        '  n2["r2<br/>10.0.0.2/32"]',
        '  w0{{"lan0<br/>10.10.0.0/24<br/>mtu 9000"}}',
        '  n1 ---|"eth1 10.0.1.0/31 — eth1 10.0.1.1/31<br/>100mbit"| n2',
        '  n0 ---|"eth0"| w0',
        '  n1 ---|"eth2 10.10.0.254/24<br/>mtu 9000"| w0',
        '',
      ].join('\n'),
    );
  });

  it('dot: a node and a network never share an id; tail and head labels name each end', async () => {
    expect(await labGraph(LAB, 'dot')).toBe(
      [
        'graph "lab lab1" {',
        '  graph [rankdir=LR, label="lab lab1", labelloc=t, fontname="Helvetica"];',
        '  node [fontname="Helvetica", fontsize=12];',
        '  edge [fontname="Helvetica", fontsize=10];',
        '  "node:h1" [shape=box, style=rounded, label="h1"];',
        '  "node:r1" [shape=box, style=rounded, label="r1"];',
        '  "node:r2" [shape=box, style=rounded, label="r2\\n10.0.0.2/32"];',
        '  "network:lan0" [shape=hexagon, style=filled, fillcolor="#e8eef9", label="lan0\\n10.10.0.0/24\\nmtu 9000"];',
        '  "node:r1" -- "node:r2" [taillabel="eth1\\n10.0.1.0/31", headlabel="eth1\\n10.0.1.1/31", label="100mbit"];',
        '  "node:h1" -- "network:lan0" [taillabel="eth0"];',
        '  "node:r1" -- "network:lan0" [taillabel="eth2\\n10.10.0.254/24", label="mtu 9000"];',
        '}',
        '',
      ].join('\n'),
    );
  });

  it('shows the planned or running interfaces and addresses it is given, instead of the file\'s', async () => {
    const dot = await labGraph(LAB, 'dot', {
      ends: [undefined, [{ ifname: 'eth0', addresses: ['10.10.0.2/24'] }, undefined]],
      subnets: { lan0: ['10.10.0.0/24', 'fd00:10::/64'] },
      loopbacks: { r1: ['10.255.0.1/32'] },
    });
    expect(dot).toContain('"node:h1" -- "network:lan0" [taillabel="eth0\\n10.10.0.2/24"];');
    expect(dot).toContain('label="lan0\\n10.10.0.0/24\\nfd00:10::/64\\nmtu 9000"');
    expect(dot).toContain('"node:r1" [shape=box, style=rounded, label="r1\\n10.255.0.1/32"];');
  });

  it('is the same for the same lab, whatever order its nodes and networks were written in', async () => {
    const shuffled: LabSpec = {
      ...LAB,
      nodes: Object.fromEntries(Object.entries(LAB.nodes).reverse()),
      networks: Object.fromEntries(Object.entries(LAB.networks).reverse()),
    };
    for (const format of ['mermaid', 'dot'] as const) {
      expect(await labGraph(shuffled, format)).toBe(await labGraph(LAB, format));
    }
  });

  it('quotes names and text that would break the syntax', async () => {
    const odd: LabSpec = { name: 'q', networks: {}, nodes: { a: {}, b: {} }, links: [{ endpoints: ['a:e"1', 'b:<x>'] }] };
    expect(await labGraph(odd, 'mermaid')).toContain('n0 ---|"e#quot;1 — #lt;x#gt;"| n1');
    expect(await labGraph(odd, 'dot')).toContain('[taillabel="e\\"1", headlabel="<x>"]');
  });

  it('svg: rendered in-process, well-formed XML holding every node and network name', async () => {
    const t0 = performance.now();
    const svg = await labGraph(LAB, 'svg');
    const ms = performance.now() - t0;
    expect(svg).toMatch(/^<\?xml /);
    const root = parseXml(svg);
    expect(root.name).toBe('svg');
    const texts = collectText(root);
    for (const name of ['h1', 'r1', 'r2', 'lan0', 'eth1', '10.0.1.0/31', '100mbit']) expect(texts).toContain(name);
    // one <g class="node"> per node and network, one <g class="edge"> per link
    expect(count(root, (e) => e.name === 'g' && e.attrs.class === 'node')).toBe(4);
    expect(count(root, (e) => e.name === 'g' && e.attrs.class === 'edge')).toBe(3);
    expect(ms, 'first SVG (loads the WebAssembly module)').toBeLessThan(10_000);
    expect(await labGraph(LAB, 'svg')).toBe(svg);
    // and the reader above does refuse what is not well-formed
    expect(() => parseXml('<svg><g></svg>')).toThrow('</svg> closes <g>');
    expect(() => parseXml('<svg a=1></svg>')).toThrow(/malformed tag/);
  });

  it('refuses a format it does not know, naming those it does', async () => {
    await expect(labGraph(LAB, 'png' as never)).rejects.toThrow('graph format "png" is not supported; supported formats are mermaid, dot, svg');
  });
});

// A small XML reader, enough to prove the SVG well-formed: every tag closed in order, attributes
// quoted, entities known. (No XML parser is among the project's dependencies.)
interface El {
  name: string;
  attrs: Record<string, string>;
  children: (El | string)[];
}

function parseXml(xml: string): El {
  let i = 0;
  const stack: El[] = [];
  let root: El | undefined;
  const decode = (s: string) => {
    const bad = /&(?!(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);)/.exec(s);
    if (bad) throw new Error(`bad entity at ${bad.index}`);
    return s.replace(/&lt;/g, '<').replace(/&gt;/g, '>').replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&#(\d+);/g, (_, n) => String.fromCodePoint(Number(n))).replace(/&amp;/g, '&');
  };
  while (i < xml.length) {
    if (xml.startsWith('<?', i)) i = xml.indexOf('?>', i) + 2;
    else if (xml.startsWith('<!--', i)) i = xml.indexOf('-->', i) + 3;
    else if (xml.startsWith('<!', i)) i = xml.indexOf('>', i) + 1;
    else if (xml.startsWith('</', i)) {
      const end = xml.indexOf('>', i);
      const name = xml.slice(i + 2, end).trim();
      const open = stack.pop();
      if (!open || open.name !== name) throw new Error(`</${name}> closes <${open?.name}>`);
      i = end + 1;
    } else if (xml[i] === '<') {
      const m = /^<([A-Za-z_][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>/.exec(xml.slice(i));
      if (!m) throw new Error(`malformed tag at ${i}: ${xml.slice(i, i + 40)}`);
      const attrs: Record<string, string> = {};
      for (const a of m[2]!.matchAll(/([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g)) {
        if (a[1]! in attrs) throw new Error(`duplicate attribute ${a[1]}`);
        attrs[a[1]!] = decode(a[2] ?? a[3]!);
      }
      const el: El = { name: m[1]!, attrs, children: [] };
      if (stack.length) stack[stack.length - 1]!.children.push(el);
      else if (root) throw new Error('two root elements');
      else root = el;
      if (!m[3]) stack.push(el);
      i += m[0].length;
    } else {
      const end = xml.indexOf('<', i) < 0 ? xml.length : xml.indexOf('<', i);
      const text = xml.slice(i, end);
      if (stack.length) stack[stack.length - 1]!.children.push(decode(text));
      else if (text.trim()) throw new Error('text outside the root element');
      i = end;
    }
  }
  if (stack.length || !root) throw new Error(`unclosed <${stack[stack.length - 1]?.name}>`);
  return root;
}

const collectText = (e: El): string[] => e.children.flatMap((c) => (typeof c === 'string' ? [c.trim()].filter(Boolean) : collectText(c)));
const count = (e: El, f: (e: El) => boolean): number =>
  (f(e) ? 1 : 0) + e.children.reduce((n, c) => n + (typeof c === 'string' ? 0 : count(c, f)), 0);
