/**
 * Checks a lab (a parsed file or a library caller's object) against lab.schema.json and against
 * the topology's own rules, and returns every problem at once in the user's words, each with the
 * JSON path of what is wrong (cli/lab-file.ts turns paths into file:line:column). Never throws for
 * a user's mistake. Pure: no kernel, no store; what depends on the host is the planner's business.
 *
 * Two stages, as containerlab's raw and resolved topologies: the schema says what the file may
 * contain (editors read the same schema), the rules say what a topology may be (a link end names a
 * node that exists, an address lies in its subnet, both ends of a link share an MTU). Where both
 * have something to say about one value, the rule's message wins: it knows the topology.
 */
import { existsSync, readFileSync } from 'node:fs';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { TnetError } from '../errors.js';
import { type Family, IpAddr, Subnet } from '../ipam/index.js';
import { ifnameProblem } from '../kernel/ifname.js';
import type { LabLinkSpec, LabNetworkSpec, LabNodeSpec, LabProblem, LabSpec, SpecPath } from './topology.js';

/**
 * Lab names are part of every namespace name (`tn-LAB+NODE`), every node's DNS name (`NODE.LAB`)
 * and every `tnet exec LAB NODE`: kept short so that these stay readable in `ip netns` and logs.
 */
export const LAB_NAME_MAX = 32;
const DEFAULT_MTU = 1500;

/**
 * The published schema. Read at run time next to this module (the sources, or dist when the build
 * copied it there), else from the sources beside dist, so one file is the schema everywhere.
 */
export const labSchema: Record<string, unknown> = JSON.parse(readFileSync(schemaFile(), 'utf8'));

function schemaFile(): URL {
  const candidates = [
    new URL('./lab.schema.json', import.meta.url),
    new URL('../../../libnetwork/lab/lab.schema.json', import.meta.url), // from dist/libnetwork/lab/
  ];
  return candidates.find((u) => existsSync(u)) ?? candidates[0]!;
}

let validator: ValidateFunction | undefined;
function validate(input: unknown): ErrorObject[] {
  // strict: a typo in the schema itself fails here, not silently in users' editors.
  validator ??= new Ajv({ allErrors: true, strict: true, allowUnionTypes: true, verbose: true }).compile(labSchema);
  return validator(input) ? [] : [...(validator.errors ?? [])];
}

/**
 * Checks `input` and returns the lab, normalized (link ends trimmed, a network end second, empty
 * nodes and networks as {}, `networks` and `links` present), or every problem found.
 */
export function checkLab(input: unknown): { lab?: LabSpec; problems: LabProblem[] } {
  const fromSchema = validate(input).flatMap((e) => schemaProblem(e, input));
  const fromRules = new Rules(input).run();
  // A rule's message replaces the schema's for the same value.
  const ruled = new Set(fromRules.map(problemKey));
  const seen = new Set<string>();
  const problems: LabProblem[] = [];
  for (const p of [...fromRules, ...fromSchema.filter((p) => !ruled.has(problemKey(p)))]) {
    const k = `${problemKey(p)}\0${p.message}`;
    if (!seen.has(k)) (seen.add(k), problems.push(p));
  }
  if (problems.length) return { problems: sortByInput(problems, input) };
  return { lab: normalize(input as RawLab), problems: [] };
}

/** `links[2].endpoints[0]`, `networks.lan0`, `nodes.r1.sysctls["net.ipv4.ip_forward"]`; "the lab" for the root. */
export function formatPath(path: SpecPath): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else if (/^[A-Za-z0-9_$-]+$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out || 'the lab';
}

/** One line per problem, `PATH: message`, for callers that have no file (library objects). */
export const problemLines = (problems: readonly LabProblem[]): string[] =>
  problems.map((p) => `${formatPath(p.path)}: ${p.message}`);

/** The error a library caller gets for a lab with problems: every problem, one per line. */
export function labInvalid(problems: readonly LabProblem[], name?: string): TnetError {
  const n = problems.length;
  return new TnetError(
    'invalid-argument',
    `lab${name ? ` "${name}"` : ''} has ${n} problem${n === 1 ? '' : 's'}; nothing was created:\n${problemLines(problems).join('\n')}`,
    { object: name ? `lab "${name}"` : 'lab' },
  );
}

// ---------------------------------------------------------------------------------------------
// Schema errors in the user's words

const TYPE_WORDS: Record<string, string> = {
  integer: 'a whole number',
  number: 'a number',
  string: 'text',
  boolean: 'true or false',
  array: 'a list',
  object: 'a mapping (key: value)',
  null: 'empty',
};

/** What a value is, for "must be a list; got text "x"". */
function describe(v: unknown): string {
  if (v === null || v === undefined) return 'nothing';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'string') return `text ${JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)}`;
  if (typeof v === 'number') return `the number ${v}`;
  if (typeof v === 'boolean') return `${v}`;
  if (typeof v === 'object') return 'a mapping';
  return typeof v;
}

/** Keys people bring from containerlab and munet, and where tnet has them. */
const FOREIGN_KEYS: Record<string, string> = {
  topology: 'nodes, networks and links sit at the top level of a tnet lab (containerlab nests them under "topology")',
  kind: 'a tnet node is a network namespace: there is no kind',
  image: 'a tnet node is a network namespace, not a container: there is no image',
  connections: 'connections are written as links at the top level: links: [{endpoints: ["r1:eth1", "r2:eth1"]}]',
  'mgmt-ipv4': 'nodes have no management network; give addresses on links, or a loopback',
  mgmt: 'nodes have no management network; give addresses on links, or a loopback',
};

function schemaProblem(e: ErrorObject, input: unknown): LabProblem[] {
  const path = pointerPath(e.instancePath);
  const where = formatPath(path);
  const value = valueAt(input, path);
  const last = path[path.length - 1];
  const field = typeof last === 'string' ? last : where;
  const p = e.params as Record<string, unknown>;
  switch (e.keyword) {
    case 'additionalProperties': {
      const key = String(p.additionalProperty);
      const valid = Object.keys((e.parentSchema as { properties?: object }).properties ?? {}).filter((k) => k !== '$schema');
      const near = nearest(key, valid);
      const hint = FOREIGN_KEYS[key];
      const tail = near
        ? `; did you mean "${near}"?`
        : hint
          ? `: ${hint}`
          : `; valid keys are ${valid.join(', ')}`;
      return [{ path: [...path, key], at: 'key', message: `unknown key "${key}" in ${where}${tail}` }];
    }
    case 'propertyNames':
      return []; // the pattern error beside it names the key
    case 'pattern':
      if (e.propertyName !== undefined) {
        return [{ path: [...path, e.propertyName], at: 'key', message: `"${e.propertyName}" is not a valid name in ${where}` }];
      }
      return [{ path, message: `${field} ${JSON.stringify(value)} is not valid here` }];
    case 'type': {
      const types = ([] as string[]).concat(p.type as string | string[]);
      const words = types.map((t) => (t === 'boolean' && types.length > 1 ? 'true/false' : (TYPE_WORDS[t] ?? t)));
      const want = words.length > 1 ? `${words.slice(0, -1).join(', ')} or ${words[words.length - 1]}` : words[0];
      return [{ path, message: `${field} must be ${want}, not ${describe(value)}` }];
    }
    case 'required': {
      const key = String(p.missingProperty);
      const why: Record<string, string> = {
        name: 'every lab needs a name (name: lab1)',
        nodes: 'a lab needs at least its nodes (nodes: {r1: {}})',
        endpoints: 'a link needs its two ends (endpoints: ["r1:eth1", "r2:eth1"])',
      };
      return [{ path, message: `missing key "${key}" in ${where}${why[key] ? `: ${why[key]}` : ''}` }];
    }
    case 'enum': {
      const allowed = (p.allowedValues as unknown[]).map(String);
      const near = typeof value === 'string' ? nearest(value, allowed) : undefined;
      return [
        {
          path,
          message: `${field} ${JSON.stringify(value)} is not supported; supported: ${allowed.join(', ')}${near ? ` (did you mean "${near}"?)` : ''}`,
        },
      ];
    }
    case 'minimum':
    case 'maximum':
      return [
        {
          path,
          message: `${field} ${String(value)} is ${e.keyword === 'minimum' ? 'below the minimum' : 'above the maximum'} of ${String(p.limit)}`,
        },
      ];
    case 'minItems':
    case 'maxItems':
      if (field === 'endpoints') {
        return [{ path, message: `a link has exactly two endpoints; this one has ${(value as unknown[]).length}` }];
      }
      return [{ path, message: `${field} needs ${e.keyword === 'minItems' ? 'at least' : 'at most'} ${String(p.limit)} items` }];
    case 'minLength':
      return [{ path, message: `${field} is empty` }];
    case 'maxLength':
      return [{ path, message: `${field} is ${String(value).length} characters long; at most ${String(p.limit)}` }];
    default:
      return [{ path, message: `${where} is not valid (${e.keyword})` }];
  }
}

const pointerPath = (pointer: string): (string | number)[] =>
  pointer === ''
    ? []
    : pointer
        .slice(1)
        .split('/')
        .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'))
        .map((s) => (/^(0|[1-9][0-9]*)$/.test(s) ? Number(s) : s));

function valueAt(input: unknown, path: SpecPath): unknown {
  let v = input;
  for (const seg of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string | number, unknown>)[seg];
  }
  return v;
}

/** The valid word closest to a mistyped one, if it is close enough to be what was meant. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestD) (best = c), (bestD = d);
  }
  // One edit for short words, up to a third of the word for longer ones ("subent" -> "subnet");
  // none for one- or two-letter words, where every name is one or two edits away ("r9", "r1").
  if (word.length < 3) return undefined;
  return best !== undefined && bestD <= Math.max(1, Math.floor(word.length / 3)) ? best : undefined;
}

/** Edit distance with adjacent transpositions (optimal string alignment): "subent" is 1 from "subnet". */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0]![j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

const problemKey = (p: LabProblem) => `${JSON.stringify(p.path)}${p.at ? '@key' : ''}`;

/** Problems in the order of the input's own keys and items, so they read top to bottom. */
function sortByInput(problems: LabProblem[], input: unknown): LabProblem[] {
  const rank = (path: SpecPath): number[] => {
    const out: number[] = [];
    let v = input;
    for (const seg of path) {
      if (Array.isArray(v) && typeof seg === 'number') out.push(seg);
      else if (v && typeof v === 'object') {
        const i = Object.keys(v).indexOf(String(seg));
        out.push(i < 0 ? Number.MAX_SAFE_INTEGER : i);
      } else out.push(0);
      v = v && typeof v === 'object' ? (v as Record<string, unknown>)[seg as string] : undefined;
    }
    return out;
  };
  const ranked = problems.map((p, i) => ({ p, r: rank(p.path), i }));
  ranked.sort((x, y) => {
    for (let k = 0; k < Math.min(x.r.length, y.r.length); k++) if (x.r[k] !== y.r[k]) return x.r[k]! - y.r[k]!;
    return x.r.length - y.r.length || x.i - y.i;
  });
  return ranked.map((x) => x.p);
}

// ---------------------------------------------------------------------------------------------
// The topology's own rules

type RawLab = Record<string, unknown>;
const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const DNS_LABEL = /^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$/;
const DNS_NAME = /^[a-zA-Z0-9]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)*$/;

/** "r1, r2, h1" or "r1, r2, ... (1000 in all)": lists stay readable in a 1000-node lab. */
function listNames(names: readonly string[]): string {
  if (names.length === 0) return 'none';
  return names.length <= 8 ? names.join(', ') : `${names.slice(0, 8).join(', ')}, ... (${names.length} in all)`;
}

/** A link end as written: a node (with or without an interface) or a network. */
interface End {
  text: string;
  node?: string;
  ifname?: string;
  network?: string;
}

/** One address given in the file, to find the same address given twice. */
interface Given {
  addr: IpAddr;
  where: string;
}

/** An interface address, "10.0.0.1/24": an address and the subnet it sits in. */
interface IfAddr {
  addr: IpAddr;
  prefix: number;
  subnet: Subnet;
}

function parseIfAddr(text: string, family: Family): IfAddr | string {
  const slash = text.indexOf('/');
  const fam = `IPv${family}`;
  const example = family === 4 ? '10.0.0.1/24' : 'fd00::1/64';
  if (slash < 0) {
    const bare = tryParse(() => IpAddr.parse(text));
    if (bare instanceof IpAddr) return `address "${text}" has no prefix length; write it as ${text}/${family === 4 ? 24 : 64} or the length of its subnet`;
    return `"${text}" is not an ${fam} address with a prefix length, like ${example}`;
  }
  const addr = tryParse(() => IpAddr.parse(text.slice(0, slash)));
  if (!(addr instanceof IpAddr)) return `"${text}" is not an ${fam} address with a prefix length, like ${example}`;
  if (addr.family !== family) return `"${text}" is an IPv${addr.family} address; this key takes ${fam} (like ${example})`;
  const p = text.slice(slash + 1);
  const bits = family === 4 ? 32 : 128;
  if (!/^(0|[1-9][0-9]{0,2})$/.test(p) || Number(p) > bits) return `"${text}" has an invalid prefix length "${p}" (0-${bits})`;
  const prefix = Number(p);
  const host = (1n << BigInt(bits - prefix)) - 1n;
  return { addr, prefix, subnet: Subnet.of(family, addr.value & ~host, prefix) };
}

function parseSubnet(text: string, family: Family): Subnet | string {
  const s = tryParse(() => Subnet.parse(text));
  if (!(s instanceof Subnet)) return s.message;
  if (s.family !== family) return `subnet "${text}" is IPv${s.family}; this key takes an IPv${family} subnet`;
  return s;
}

function tryParse<T>(f: () => T): T | Error {
  try {
    return f();
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
}

const RATE = /^(\d+(\.\d+)?)(bit|kbit|mbit|gbit|tbit|kibit|mibit|gibit|tibit|bps|kbps|mbps|gbps|tbps|kibps|mibps|gibps|tibps)$/i;
const TIME = '(\\d+(\\.\\d+)?)(us|usec|ms|msec|s|sec)';
const DELAY = new RegExp(`^${TIME}(\\s+${TIME})?$`, 'i');
const LOSS = /^(\d+(\.\d+)?)%$/;
const SYSCTL = /^net(\.[A-Za-z0-9_@+-]+(\/[A-Za-z0-9_@+-]+)*)+$/;

class Rules {
  private readonly problems: LabProblem[] = [];
  private readonly lab: RawLab;
  private readonly nodes: Record<string, unknown>;
  private readonly networks: Record<string, unknown>;
  /** Every address given anywhere, by family and value: the same address twice is a conflict. */
  private readonly given = new Map<string, Given>();

  constructor(input: unknown) {
    this.lab = isMap(input) ? input : {};
    this.nodes = isMap(this.lab.nodes) ? this.lab.nodes : {};
    this.networks = isMap(this.lab.networks) ? this.lab.networks : {};
  }

  run(): LabProblem[] {
    this.name();
    this.pools();
    this.networkRules();
    this.nodeRules();
    this.linkRules();
    return this.problems;
  }

  private add(path: SpecPath, message: string, at?: 'key') {
    this.problems.push(at ? { path, message, at } : { path, message });
  }

  private name() {
    const name = this.lab.name;
    if (typeof name !== 'string') return;
    if (name.length > LAB_NAME_MAX) {
      this.add(
        ['name'],
        `lab name "${name}" is ${name.length} characters; at most ${LAB_NAME_MAX}: it is part of the name of every namespace the lab makes (tn-${name}+NODE), of every node's DNS name (NODE.${name}) and of every command that names the lab`,
      );
    } else if (!DNS_LABEL.test(name)) {
      this.add(['name'], `lab name "${name}" may only contain letters, digits and "-", and must start and end with a letter or digit: it is the DNS suffix of the lab's nodes (r1.${name})`);
    }
  }

  private pools() {
    const pools = this.lab.pools;
    if (!isMap(pools)) return;
    const fams: Record<string, Family> = { lan4: 4, p2p4: 4, loopback4: 4, ipv6: 6 };
    let lan4: Subnet | undefined;
    for (const [key, family] of Object.entries(fams)) {
      const v = pools[key];
      if (typeof v !== 'string') continue;
      const s = parseSubnet(v, family);
      if (typeof s === 'string') this.add(['pools', key], s);
      else if (key === 'lan4') lan4 = s;
    }
    const lp = pools.lanPrefix;
    if (lan4 && typeof lp === 'number' && lp < lan4.prefix) {
      this.add(['pools', 'lanPrefix'], `lanPrefix ${lp} is shorter than the pool lan4 (${lan4}): networks of /${lp} do not fit in it`);
    }
  }

  private dnsName(kind: 'node' | 'network', name: string, path: SpecPath) {
    if (!DNS_LABEL.test(name)) {
      const why = kind === 'node' ? 'other nodes resolve it by name' : 'it is part of DNS names on the network';
      this.add(path, `${kind} name "${name}" may only contain letters, digits and "-" (at most 63), and must start and end with a letter or digit: ${why}`, 'key');
      return false;
    }
    return true;
  }

  private networkRules() {
    const subnets: { subnet: Subnet; name: string }[] = [];
    /** Global network name (lowercase) -> the lab's key for it: two keys for one overlay is a mistake. */
    const globalNames = new Map<string, string>();
    for (const [name, raw] of Object.entries(this.networks)) {
      const path = ['networks', name];
      if (!this.dnsName('network', name, path)) continue;
      if (Object.hasOwn(this.nodes, name)) {
        this.add(path, `"${name}" is both a node and a network; a link end "${name}" would be ambiguous: rename one`, 'key');
      }
      if (!isMap(raw)) continue;
      const net = raw as LabNetworkSpec & Record<string, unknown>;
      const driver = typeof net.driver === 'string' ? net.driver : 'bridge';
      const subnet = this.subnetField(net.subnet, 4, [...path, 'subnet']);
      const subnet6 = this.subnetField(net.subnet6, 6, [...path, 'subnet6']);
      for (const [gwKey, s, family] of [['gateway', subnet, 4], ['gateway6', subnet6, 6]] as const) {
        const gw = net[gwKey];
        if (typeof gw !== 'string') continue;
        const a = tryParse(() => IpAddr.parse(gw));
        const subKey = family === 4 ? 'subnet' : 'subnet6';
        if (!(a instanceof IpAddr) || a.family !== family) {
          this.add([...path, gwKey], `${gwKey} "${gw}" is not an IPv${family} address (a bare address, like ${family === 4 ? '10.10.0.1' : 'fd00:10::1'})`);
        } else if (net[subKey] === undefined) {
          this.add([...path, gwKey], `${gwKey} ${gw} needs the network's ${subKey}: add ${subKey} to networks.${name}`);
        } else if (s && !s.contains(a)) {
          this.add([...path, gwKey], `${gwKey} ${gw} is outside networks.${name}'s ${subKey} ${s}`);
        } else if (s && this.edgeAddress(a, s)) {
          this.add([...path, gwKey], `${gwKey} ${gw} is the ${a.equals(s.first) ? 'network' : 'broadcast'} address of ${s}`);
        } else if (s) {
          this.claim(a, `the gateway of network ${name}`, [...path, gwKey]);
        }
      }
      for (const s of [subnet, subnet6]) {
        if (!s) continue;
        const other = subnets.find((o) => o.subnet.overlaps(s));
        if (other) {
          this.add([...path, s.family === 4 ? 'subnet' : 'subnet6'], `subnet ${s} overlaps network ${other.name}'s subnet ${other.subnet}: every network needs its own`);
        } else subnets.push({ subnet: s, name });
      }
      if (driver === 'macvlan' && net.parent === undefined) {
        this.add(path, `network ${name} uses the macvlan driver and needs a parent: the host interface it sits on (parent: eth0)`);
      }
      if (typeof net.parent === 'string') {
        if (driver !== 'macvlan') {
          this.add([...path, 'parent'], `parent is for macvlan networks only; network ${name} uses the ${driver} driver`);
        } else {
          const why = ifnameProblem(net.parent);
          if (why) this.add([...path, 'parent'], `parent "${net.parent}" is not an interface name: it ${why}`);
        }
      }
      if (net.name !== undefined && driver !== 'overlay') {
        this.add([...path, 'name'], `name is for overlay networks only (the global network's name on every host); network ${name} uses the ${driver} driver and is named by its key`);
      } else if (typeof net.name === 'string' && !DNS_LABEL.test(net.name)) {
        this.add([...path, 'name'], `name "${net.name}" may only contain letters, digits and "-" (at most 63), and must start and end with a letter or digit: it is part of DNS names on the network`);
      }
      if (driver === 'overlay') {
        const global = typeof net.name === 'string' ? net.name : name;
        const twin = globalNames.get(global.toLowerCase());
        if (twin !== undefined) this.add(path, `networks ${twin} and ${name} both name the global network ${global}; a lab joins a network once: keep one`);
        else globalNames.set(global.toLowerCase(), name);
        // The overlay driver's own floor (drivers/overlay/options.ts), said here with the file's position.
        if (typeof net.mtu === 'number' && net.mtu < 1280) this.add([...path, 'mtu'], `mtu ${net.mtu} is below 1280, the least an overlay network takes`);
      } else if (typeof net.mtu === 'number' && net.mtu < 1280 && (this.lab.ipv6 === true || net.subnet6 !== undefined)) {
        this.add([...path, 'mtu'], `mtu ${net.mtu} is below 1280, the least IPv6 works with, and network ${name} carries IPv6`);
      }
    }
  }

  private subnetField(v: unknown, family: Family, path: SpecPath): Subnet | undefined {
    if (typeof v !== 'string') return undefined;
    const s = parseSubnet(v, family);
    if (typeof s === 'string') return void this.add(path, s);
    return s;
  }

  /** The network or broadcast address of an IPv4 subnet of /30 or wider (no host may have them). */
  private edgeAddress(a: IpAddr, s: Subnet): boolean {
    if (s.family === 4 && s.prefix >= 31) return false;
    if (s.family === 6) return a.equals(s.first) && s.prefix < 127; // the subnet-router anycast
    return a.equals(s.first) || a.equals(s.last);
  }

  /** Records an address; the same address given twice is a problem at the second. */
  private claim(a: IpAddr, where: string, path: SpecPath) {
    const key = `${a.family}:${a.value}`;
    const first = this.given.get(key);
    if (first) this.add(path, `address ${a} is already given to ${first.where}`);
    else this.given.set(key, { addr: a, where });
  }

  private nodeRules() {
    const lowered = new Map<string, string>();
    for (const [name, raw] of Object.entries(this.nodes)) {
      const path = ['nodes', name];
      if (!this.dnsName('node', name, path)) continue;
      const twin = lowered.get(name.toLowerCase());
      if (twin !== undefined) {
        this.add(path, `nodes "${twin}" and "${name}" differ only in case; DNS names do not, so both would answer to ${name.toLowerCase()}`, 'key');
      } else lowered.set(name.toLowerCase(), name);
      if (!isMap(raw)) continue;
      const node = raw as LabNodeSpec & Record<string, unknown>;
      if (isMap(node.sysctls)) {
        for (const [key, value] of Object.entries(node.sysctls)) {
          const p = [...path, 'sysctls', key];
          if (!key.startsWith('net.')) {
            this.add(p, `sysctl "${key}" is not a network setting: a node is a network namespace, so only net.* settings are its own (any other would change the host)`, 'key');
          } else if (!SYSCTL.test(key) || key.split(/[./]/).some((s) => s === '' || s === '.' || s === '..')) {
            this.add(p, `sysctl "${key}" is not a valid name: words joined by dots, like net.ipv4.ip_forward`, 'key');
          }
          if (typeof value === 'string' && /[\n\r]/.test(value)) this.add(p, `the value of sysctl "${key}" spans several lines; give one line`);
        }
      }
      for (const key of ['exec', 'run'] as const) {
        const list = node[key];
        if (!Array.isArray(list)) continue;
        list.forEach((cmd, i) => {
          if (typeof cmd === 'string' && cmd.trim() === '') this.add([...path, key, i], `${key}[${i}] of node ${name} is an empty command`);
        });
      }
      for (const [key, family] of [['loopback', 4], ['loopback6', 6]] as const) {
        const v = node[key];
        if (typeof v !== 'string' || v === 'auto') continue;
        const a = parseIfAddr(v, family);
        if (typeof a === 'string') this.add([...path, key], `${key} of node ${name}: ${a} (or auto)`);
        else this.claim(a.addr, `the loopback of node ${name}`, [...path, key]);
      }
      if (Array.isArray(node.aliases)) {
        node.aliases.forEach((alias, i) => {
          if (typeof alias !== 'string') return;
          if (!DNS_NAME.test(alias) || alias.length > 253) {
            this.add([...path, 'aliases', i], `alias "${alias}" is not a valid DNS name (labels of letters, digits, "-", "_", joined by dots)`);
          } else if (alias !== name && Object.hasOwn(this.nodes, alias)) {
            this.add([...path, 'aliases', i], `alias "${alias}" of node ${name} is the name of another node`);
          }
        });
      }
    }
  }

  private parseEnd(raw: string, path: SpecPath): End | undefined {
    const text = raw.trim();
    if (text === '') return void this.add(path, 'an endpoint is empty; write "NODE:IFNAME", "NODE" or a network name');
    const colon = text.indexOf(':');
    const name = colon < 0 ? text : text.slice(0, colon).trim();
    const ifname = colon < 0 ? undefined : text.slice(colon + 1).trim();
    if (Object.hasOwn(this.networks, name) && !Object.hasOwn(this.nodes, name)) {
      if (ifname !== undefined) {
        return void this.add(path, `"${text}": ${name} is a network; the interface name goes on the node's end ("NODE:IFNAME", "${name}")`);
      }
      return { text: name, network: name };
    }
    if (!Object.hasOwn(this.nodes, name)) {
      const nodes = Object.keys(this.nodes);
      const networks = Object.keys(this.networks);
      const near = nearest(name, [...nodes, ...networks]);
      const mean = near ? `did you mean "${near}"? ` : '';
      if (ifname !== undefined || networks.length === 0) {
        return void this.add(path, `node "${name}" is not defined; ${mean}nodes are ${listNames(nodes)}`);
      }
      return void this.add(path, `"${name}" is neither a node nor a network; ${mean}nodes are ${listNames(nodes)}; networks are ${listNames(networks)}`);
    }
    if (ifname !== undefined) {
      const why = ifnameProblem(ifname);
      if (why) return void this.add(path, `interface name "${ifname}" of node ${name} ${why}`);
      if (ifname === 'lo') return void this.add(path, `interface name "lo" of node ${name} is the node's loopback; name the link's interface otherwise (eth1)`);
    }
    return { text: ifname === undefined ? name : `${name}:${ifname}`, node: name, ...(ifname !== undefined ? { ifname } : {}) };
  }

  private linkRules() {
    const links = this.lab.links;
    if (!Array.isArray(links)) return;
    /** node -> interface -> the link that uses it */
    const used = new Map<string, Map<string, number>>();
    links.forEach((raw, i) => {
      if (!isMap(raw)) return;
      const link = raw as LabLinkSpec & Record<string, unknown>;
      const path = ['links', i];
      const eps = link.endpoints;
      if (!Array.isArray(eps) || eps.length !== 2) return;
      const ends = eps.map((e, k) => (typeof e === 'string' ? this.parseEnd(e, [...path, 'endpoints', k]) : undefined));
      const [a, b] = ends;
      const label = `links[${i}]`;
      this.shaping(link, path);
      if (!a || !b) return;
      if (a.network && b.network) {
        return void this.add([...path, 'endpoints'], `both ends (${a.network}, ${b.network}) are networks; a link joins two nodes, or a node to a network`);
      }
      if (a.node && a.node === b.node) {
        return void this.add([...path, 'endpoints'], `both ends are node ${a.node}; a link joins two different nodes (to give ${a.node} another address, use loopback)`);
      }
      ends.forEach((end, k) => {
        if (!end?.node || !end.ifname) return;
        const ifs = used.get(end.node) ?? new Map<string, number>();
        used.set(end.node, ifs);
        const first = ifs.get(end.ifname);
        if (first !== undefined) {
          this.add([...path, 'endpoints', k], `interface ${end.ifname} of node ${end.node} is already used by links[${first}]; give this link another interface`);
        } else ifs.set(end.ifname, i);
      });
      const network = a.network ?? b.network;
      const net = network !== undefined && isMap(this.networks[network]) ? (this.networks[network] as LabNetworkSpec) : {};
      if (network !== undefined && typeof link.mtu === 'number' && net.driver === 'overlay' && typeof net.mtu !== 'number') {
        this.add(
          [...path, 'mtu'],
          `${label} sets mtu ${link.mtu} but network ${network} is an overlay without mtu: its MTU is each host's underlay MTU minus what VXLAN adds (50 bytes); remove the link's mtu or set mtu: ${link.mtu} on ${network}`,
        );
      } else if (network !== undefined && typeof link.mtu === 'number') {
        const netMtu = typeof net.mtu === 'number' ? net.mtu : DEFAULT_MTU;
        if (netMtu !== link.mtu) {
          this.add(
            [...path, 'mtu'],
            `${label} sets mtu ${link.mtu} but network ${network} has mtu ${netMtu}${typeof net.mtu === 'number' ? '' : ' (the default)'}: both ends of a link must have the same MTU; remove the link's mtu or set mtu: ${link.mtu} on ${network}`,
          );
        }
      }
      if (typeof link.mtu === 'number' && link.mtu < 1280 && (this.lab.ipv6 === true || link.ipv6 !== undefined)) {
        this.add([...path, 'mtu'], `mtu ${link.mtu} is below 1280, the least IPv6 works with, and ${label} carries IPv6`);
      }
      for (const [key, family] of [['ipv4', 4], ['ipv6', 6]] as const) {
        const v = link[key];
        if (v === undefined) continue;
        if (network !== undefined) this.lanAddress(v, family, [...path, key], a.node ?? b.node!, network, net);
        else this.p2pAddresses(v, family, [...path, key], [a.text, b.text]);
      }
    });
  }

  private shaping(link: Record<string, unknown>, path: SpecPath) {
    const rate = link.rate;
    if (rate !== undefined && (typeof rate !== 'string' || !RATE.test(rate.trim()) || Number.parseFloat(rate) <= 0)) {
      this.add([...path, 'rate'], `rate ${JSON.stringify(rate)} is not a rate: a number and a unit, bit, kbit, mbit, gbit, tbit (bits/s) or bps, kbps, mbps, gbps, tbps (bytes/s), e.g. "100mbit"`);
    }
    const delay = link.delay;
    if (delay !== undefined && (typeof delay !== 'string' || !DELAY.test(delay.trim()))) {
      this.add([...path, 'delay'], `delay ${JSON.stringify(delay)} is not a delay: a number and a unit, us, ms or s, and optionally a jitter, e.g. "10ms" or "10ms 2ms"`);
    }
    const loss = link.loss;
    if (loss !== undefined) {
      const m = typeof loss === 'string' ? LOSS.exec(loss.trim()) : null;
      if (!m || Number(m[1]) > 100) this.add([...path, 'loss'], `loss ${JSON.stringify(loss)} is not a loss: a percentage from 0% to 100%, e.g. "1%"`);
    }
  }

  /** One address for a node on a network: a text, or a list of one. */
  private lanAddress(v: unknown, family: Family, path: SpecPath, node: string, network: string, net: LabNetworkSpec) {
    const key = family === 4 ? 'ipv4' : 'ipv6';
    if (Array.isArray(v) && v.length !== 1) {
      return void this.add(path, `a node on a network takes one ${key} address, its own; this link gives ${v.length}`);
    }
    const text = Array.isArray(v) ? v[0] : v;
    const at = Array.isArray(v) ? [...path, 0] : path;
    if (typeof text !== 'string') return;
    const a = parseIfAddr(text, family);
    if (typeof a === 'string') return void this.add(at, a);
    const subKey = family === 4 ? 'subnet' : 'subnet6';
    const subText = net[subKey];
    const s = typeof subText === 'string' ? tryParse(() => Subnet.parse(subText)) : undefined;
    if (s instanceof Subnet && s.family === family) {
      if (!s.contains(a.addr)) {
        return void this.add(at, `address ${text} is outside network ${network}'s subnet ${s}`);
      }
      if (a.prefix !== s.prefix) {
        return void this.add(at, `address ${text} has prefix length /${a.prefix} but network ${network}'s subnet is ${s}: write ${a.addr}/${s.prefix}`);
      }
    } else if (typeof subText !== 'string') {
      return void this.add(at, `address ${text} is given but network ${network} has no ${subKey}: add ${subKey}: ${a.subnet} to networks.${network} so that its other nodes are numbered in the same subnet`);
    }
    if (this.edgeAddress(a.addr, a.subnet)) {
      return void this.add(at, `address ${text} is the ${a.addr.equals(a.subnet.first) ? 'network' : 'broadcast'} address of ${a.subnet}; no node may have it`);
    }
    this.claim(a.addr, `${node} on network ${network}`, at);
  }

  /** Two addresses for a point-to-point link, one per end, in one subnet. */
  private p2pAddresses(v: unknown, family: Family, path: SpecPath, ends: string[]) {
    const key = family === 4 ? 'ipv4' : 'ipv6';
    if (!Array.isArray(v) || v.length !== 2) {
      const n = Array.isArray(v) ? `${v.length}` : 'one';
      const ex = family === 4 ? '["10.0.1.0/31", "10.0.1.1/31"]' : '["fd00:1::/127", "fd00:1::1/127"]';
      return void this.add(path, `a point-to-point link takes two ${key} addresses, one per end in endpoint order (e.g. ${ex}); this one gives ${n}`);
    }
    const parsed = v.map((t, k) => {
      if (typeof t !== 'string') return undefined;
      const a = parseIfAddr(t, family);
      if (typeof a === 'string') return void this.add([...path, k], a);
      return a;
    });
    const [x, y] = parsed;
    if (!x || !y) return;
    if (!x.subnet.equals(y.subnet)) {
      return void this.add(path, `the two ends' addresses ${v[0]} and ${v[1]} are not in one subnet (${x.subnet} and ${y.subnet}); a point-to-point link is one subnet, e.g. a /${family === 4 ? 31 : 127}`);
    }
    parsed.forEach((a, k) => {
      if (!a) return;
      if (this.edgeAddress(a.addr, a.subnet)) {
        this.add([...path, k], `address ${v[k]} is the ${a.addr.equals(a.subnet.first) ? 'network' : 'broadcast'} address of ${a.subnet}; use a /${family === 4 ? 31 : 127} or another address`);
      } else this.claim(a.addr, `${ends[k]}`, [...path, k]);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Normalization (only of a lab without problems)

function normalize(raw: RawLab): LabSpec {
  const networks: Record<string, LabNetworkSpec> = {};
  for (const [name, net] of Object.entries((raw.networks as Record<string, LabNetworkSpec | null>) ?? {})) {
    networks[name] = { ...(net ?? {}) };
    // Option values as `-o KEY=VALUE` would give them: text.
    const options = networks[name].options;
    if (options) networks[name].options = Object.fromEntries(Object.entries(options).map(([k, v]) => [k, String(v)]));
  }
  const nodes: Record<string, LabNodeSpec> = {};
  for (const [name, node] of Object.entries((raw.nodes as Record<string, LabNodeSpec | null>) ?? {})) {
    nodes[name] = { ...(node ?? {}) };
  }
  const links = ((raw.links as LabLinkSpec[] | undefined) ?? []).map((l) => {
    const trim = (e: string) => {
      const t = e.trim();
      const c = t.indexOf(':');
      return c < 0 ? t : `${t.slice(0, c).trim()}:${t.slice(c + 1).trim()}`;
    };
    let endpoints = l.endpoints.map(trim) as [string, string];
    // The network end second: the planner reads ["node:if", "network"] only.
    if (Object.hasOwn(networks, endpoints[0])) endpoints = [endpoints[1], endpoints[0]];
    const out: LabLinkSpec = { ...l, endpoints };
    for (const k of ['ipv4', 'ipv6'] as const) {
      const v = out[k];
      if (Array.isArray(v) && (v as string[]).length === 1) out[k] = v[0];
    }
    for (const k of ['rate', 'delay', 'loss'] as const) if (typeof out[k] === 'string') out[k] = out[k]!.trim();
    return out;
  });
  const lab: LabSpec = { name: raw.name as string, networks, nodes, links };
  if (raw.ipv6 !== undefined) lab.ipv6 = raw.ipv6 as boolean;
  if (raw.pools !== undefined) lab.pools = { ...(raw.pools as object) };
  return lab;
}
