/**
 * The planner: a lab spec (topology.ts) -> a plan that says every address, interface name and MTU.
 * Pure: it takes the pools the lab holds and the plan it had (so a re-create keeps every address
 * that did not have to change) and decides the rest; lab/apply.ts makes the plan real.
 *
 * Auto-numbering follows munet's scheme, inside pools the lab holds in tnet's IPAM (apply.ts):
 * point-to-point links get /31s (IPv6 /127s) in order, loopbacks /32s (/128s), LANs are tnet
 * networks (their subnet given, or a free 10.0.N.0/24).
 */
import { invalid } from '../errors.js';
import { IpAddr } from '../ipam/address.js';
import { Subnet } from '../ipam/subnet.js';
import type { LabLinkSpec, LabNodeSpec, LabSpec } from './topology.js';

export const DEFAULT_MTU = 1500;
/**
 * An overlay without `mtu` has each host's underlay MTU minus what VXLAN adds (50 bytes over
 * IPv4): the plan says what a 1500-byte underlay gives, and apply corrects it from the interface
 * the node got.
 */
export const OVERLAY_PLAN_MTU = DEFAULT_MTU - 50;

/** One interface of a node as planned. */
export interface PlannedInterface {
  ifname: string;
  /** CIDRs. */
  addresses: string[];
  mtu: number;
  /** Point-to-point: the other end. */
  peer?: { node: string; ifname: string };
  /** On a LAN: the lab network's name. */
  network?: string;
}

export interface PlannedNode {
  name: string;
  /** The namespace's name under /run/netns (`ip netns exec NAME`). */
  netns: string;
  /** Addresses on `lo` (CIDR). */
  loopback: string[];
  interfaces: PlannedInterface[];
  sysctls: Record<string, string>;
  exec: string[];
  run: string[];
  aliases: string[];
}

export interface PlannedNetwork {
  name: string;
  driver: string;
  /** Given in the file; else chosen when the network is made (then recorded here). */
  subnet?: string;
  gateway?: string;
  subnet6?: string;
  gateway6?: string;
  ipv6: boolean;
  mtu: number;
  internal: boolean;
  parent?: string;
  options?: Record<string, string>;
  /**
   * overlay: the global network's name in the cluster. Not the lab's own network: it is joined
   * (or made, when no host has it) under this name, so labs on other hosts meet on it.
   */
  global?: string;
}

export interface WireEnd {
  node: string;
  ifname: string;
  addresses: string[];
}

/** A point-to-point link: a veth with one end in each node. */
export interface PlannedWire {
  /** "a:ifa|b:ifb" in the file's order: how a re-create finds the same link. */
  key: string;
  /** The link as written ("r1|r2", "#2" for a second one): how a re-create keeps auto interface names. */
  link?: string;
  a: WireEnd;
  b: WireEnd;
  mtu: number;
  rate?: string;
  delay?: string;
  loss?: string;
}

/** A node's interface on a LAN. */
export interface PlannedAttachment {
  /** "node:ifname". */
  key: string;
  /** As PlannedWire.link. */
  link?: string;
  node: string;
  ifname: string;
  network: string;
  /** Given in the file (address only, no prefix); else the network's IPAM picks one. */
  ipv4?: string;
  ipv6?: string;
}

/** The pools a lab's auto-numbered addresses come from (CIDR), as held in tnet's IPAM. */
export interface LabPoolSet {
  p2p4?: string;
  loopback4?: string;
  v6?: string;
}

export interface LabPlan {
  name: string;
  pools: LabPoolSet;
  nodes: Record<string, PlannedNode>;
  networks: Record<string, PlannedNetwork>;
  wires: PlannedWire[];
  attachments: PlannedAttachment[];
}

/** What the planner needs from the pools: which auto-numbered kinds the spec uses. */
export function poolNeeds(spec: LabSpec): { p2p4: boolean; loopback4: boolean; v6: boolean } {
  let p2p4 = false;
  let loopback4 = false;
  for (const l of spec.links) if (!isLan(spec, l) && l.ipv4 === undefined) p2p4 = true;
  for (const n of Object.values(spec.nodes)) if (n.loopback === 'auto') loopback4 = true;
  const v6 = Boolean(spec.ipv6) || Object.values(spec.nodes).some((n) => n.loopback6 === 'auto');
  return { p2p4, loopback4, v6 };
}

const isLan = (spec: LabSpec, l: LabLinkSpec) => l.endpoints.some((e) => !e.includes(':') && e in spec.networks);

/** "node:ifname" -> its parts; a bare node gets its interface named by the planner. */
function splitEnd(end: string): { node: string; ifname?: string } {
  const i = end.indexOf(':');
  return i < 0 ? { node: end } : { node: end.slice(0, i), ifname: end.slice(i + 1) };
}

const pair = (v: string | [string, string] | undefined): [string | undefined, string | undefined] =>
  v === undefined ? [undefined, undefined] : typeof v === 'string' ? [v, undefined] : [v[0], v[1]];

const str = (v: string | number | boolean) => (typeof v === 'boolean' ? (v ? '1' : '0') : String(v));

/** The k-th /31 (or /127) of a pool, as the two host CIDRs. */
function p2pPair(pool: Subnet, k: number): [string, string] {
  const bits = pool.family === 4 ? 32 : 128;
  const len = bits - 1;
  const base = pool.network + BigInt(k) * 2n;
  if (base + 1n > pool.last.value) throw invalid(`lab pool ${pool} has no room for point-to-point link ${k + 1}`, `pool ${pool}`);
  return [`${IpAddr.of(pool.family, base)}/${len}`, `${IpAddr.of(pool.family, base + 1n)}/${len}`];
}

function nthHost(pool: Subnet, k: number): string {
  const bits = pool.family === 4 ? 32 : 128;
  const a = pool.network + BigInt(k) + 1n;
  if (a > pool.last.value) throw invalid(`lab pool ${pool} has no room for loopback ${k + 1}`, `pool ${pool}`);
  return `${IpAddr.of(pool.family, a)}/${bits}`;
}

/** The part of a v6 lab pool (/48) each kind uses: /64 number 0 for p2p /127s, 1 for loopbacks. */
function v6Part(pool: Subnet, n: number): Subnet {
  return Subnet.parse(`${IpAddr.of(6, pool.network + (BigInt(n) << 64n))}/64`);
}

/**
 * Plans the lab. `old`: the plan the lab had (addresses of links and loopbacks that still exist
 * keep theirs); `netns(node)`: the node's namespace name.
 */
export function planLab(spec: LabSpec, pools: LabPoolSet, netns: (node: string) => string, old?: LabPlan): LabPlan {
  const nodes: Record<string, PlannedNode> = {};
  for (const [name, n] of Object.entries(spec.nodes)) nodes[name] = planNode(name, n, netns(name));
  const networks: Record<string, PlannedNetwork> = {};
  for (const [name, n] of Object.entries(spec.networks)) {
    const oldNet = old?.networks[name];
    // An overlay has no NAT and no way out of its own: `internal` there only says whether a given
    // gateway (a router node's address) becomes the nodes' default route, so it is off unless asked.
    const overlay = n.driver === 'overlay';
    networks[name] = {
      name, driver: n.driver ?? 'bridge', subnet: n.subnet, gateway: n.gateway, subnet6: n.subnet6, gateway6: n.gateway6,
      ipv6: Boolean(spec.ipv6 || n.subnet6), mtu: n.mtu ?? (overlay ? OVERLAY_PLAN_MTU : DEFAULT_MTU), internal: n.internal ?? !overlay, parent: n.parent, options: n.options,
      ...(overlay ? { global: n.name ?? name } : {}),
    };
    // an auto subnet chosen before stays (unless the network changes in another way)
    if (!n.subnet && oldNet?.subnet && sameNetwork({ ...networks[name], subnet: undefined }, { ...oldNet, subnet: undefined })) networks[name].subnet = oldNet.subnet;
  }
  const p2p4 = pools.p2p4 ? Subnet.parse(pools.p2p4) : undefined;
  const v6 = pools.v6 ? Subnet.parse(pools.v6) : undefined;
  const p2p6 = v6 ? v6Part(v6, 0) : undefined;
  const lo6 = v6 ? v6Part(v6, 1) : undefined;
  const lo4 = pools.loopback4 ? Subnet.parse(pools.loopback4) : undefined;

  // Loopbacks: an auto one keeps the address it had.
  const usedLo = new Set<string>();
  const oldLo = (node: string, fam: 4 | 6) => old?.nodes[node]?.loopback.find((c) => (c.includes(':') ? 6 : 4) === fam);
  for (const [name, n] of Object.entries(spec.nodes)) {
    for (const [want, fam] of [[n.loopback, 4], [n.loopback6, 6]] as const) {
      if (want === undefined) continue;
      if (want !== 'auto') nodes[name]!.loopback.push(want.includes('/') ? want : `${want}/${fam === 4 ? 32 : 128}`);
      else {
        const kept = oldLo(name, fam);
        const pool = fam === 4 ? lo4 : lo6;
        if (kept && pool?.contains(IpAddr.parse(kept.split('/')[0]!))) {
          nodes[name]!.loopback.push(kept);
          usedLo.add(kept);
        }
      }
    }
  }
  for (const [name, n] of Object.entries(spec.nodes)) {
    for (const [want, fam] of [[n.loopback, 4], [n.loopback6, 6]] as const) {
      if (want !== 'auto' || nodes[name]!.loopback.some((c) => (c.includes(':') ? 6 : 4) === fam)) continue;
      const pool = fam === 4 ? lo4 : lo6;
      if (!pool) throw invalid(`node "${name}" wants an automatic loopback but the lab holds no loopback pool`, `node "${name}"`);
      let k = 0;
      while (usedLo.has(nthHost(pool, k))) k++;
      const c = nthHost(pool, k);
      usedLo.add(c);
      nodes[name]!.loopback.push(c);
    }
  }

  // Interface names: given ones first, then eth0, eth1... for the rest, in the file's order.
  const taken = new Map<string, Set<string>>();
  const take = (node: string, ifname: string) => {
    let s = taken.get(node);
    if (!s) taken.set(node, (s = new Set()));
    if (s.has(ifname)) throw invalid(`interface "${node}:${ifname}" is used by two links`, `link "${node}:${ifname}"`);
    s.add(ifname);
  };
  const ends = spec.links.map((l) => l.endpoints.map((e) => (!e.includes(':') && e in spec.networks ? { network: e } : splitEnd(e))));
  const seen = new Map<string, number>();
  const linkIds = spec.links.map((l) => {
    const raw = l.endpoints.join('|');
    const k = (seen.get(raw) ?? 0) + 1;
    seen.set(raw, k);
    return k === 1 ? raw : `${raw}#${k}`;
  });
  for (const es of ends) for (const e of es) if ('node' in e && e.ifname) take(e.node, e.ifname);
  // An auto-named end keeps the name it had: removing one link must not rename the others.
  const oldNames = new Map<string, (string | undefined)[]>();
  for (const w of old?.wires ?? []) if (w.link) oldNames.set(w.link, [w.a.ifname, w.b.ifname]);
  for (const a of old?.attachments ?? []) if (a.link) oldNames.set(a.link, [a.ifname, undefined]);
  ends.forEach((es, i) => {
    const was = oldNames.get(linkIds[i]!);
    if (!was) return;
    let k = 0;
    for (const e of es) {
      if (!('node' in e)) continue;
      const name = was[k++];
      if (e.ifname || !name || !(e.node in spec.nodes) || taken.get(e.node)?.has(name)) continue;
      e.ifname = name;
      take(e.node, name);
    }
  });
  for (const es of ends)
    for (const e of es) {
      if (!('node' in e) || e.ifname) continue;
      if (!(e.node in spec.nodes)) continue;
      let k = 0;
      while (taken.get(e.node)?.has(`eth${k}`)) k++;
      e.ifname = `eth${k}`;
      take(e.node, e.ifname);
    }

  const wires: PlannedWire[] = [];
  const attachments: PlannedAttachment[] = [];
  const oldWires = new Map((old?.wires ?? []).map((w) => [w.key, w]));
  const usedP2p = new Set<number>();
  const usedP2p6 = new Set<number>();
  const pending: { w: PlannedWire; fam: 4 | 6 }[] = [];
  const indexIn = (pool: Subnet | undefined, cidr: string | undefined) => {
    if (!pool || !cidr) return undefined;
    const a = IpAddr.parse(cidr.split('/')[0]!);
    if (a.family !== pool.family || !pool.contains(a)) return undefined;
    return Number((a.value - pool.network) / 2n);
  };
  spec.links.forEach((l, i) => {
    const [x, y] = ends[i]!;
    for (const e of [x, y]) if ('node' in e && !(e.node in spec.nodes)) throw invalid(`link ${i + 1}: node "${e.node}" is not in the lab's nodes`, `link ${i + 1}`);
    if ('network' in x || 'network' in y) {
      const [nodeEnd, netEnd] = 'network' in x ? [y, x] : [x, y];
      if (!('node' in nodeEnd) || !('network' in netEnd)) throw invalid(`link ${i + 1} joins two networks; one end must be a node`, `link ${i + 1}`);
      const net = networks[netEnd.network]!;
      const [ip4] = pair(l.ipv4);
      const [ip6] = pair(l.ipv6);
      if (l.mtu !== undefined && l.mtu !== net.mtu)
        throw invalid(`link ${i + 1}: MTU ${l.mtu} differs from network "${net.name}"'s ${net.mtu}; both ends of a link need the same MTU`, `link ${i + 1}`);
      const key = `${nodeEnd.node}:${nodeEnd.ifname}`;
      attachments.push({ key, link: linkIds[i], node: nodeEnd.node, ifname: nodeEnd.ifname!, network: net.name, ipv4: ip4?.split('/')[0], ipv6: ip6?.split('/')[0] });
      nodes[nodeEnd.node]!.interfaces.push({ ifname: nodeEnd.ifname!, addresses: [ip4, ip6].filter((a): a is string => a !== undefined), mtu: net.mtu, network: net.name });
      return;
    }
    const a = x as { node: string; ifname: string };
    const b = y as { node: string; ifname: string };
    const key = `${a.node}:${a.ifname}|${b.node}:${b.ifname}`;
    const w: PlannedWire = {
      key, link: linkIds[i], a: { node: a.node, ifname: a.ifname, addresses: [] }, b: { node: b.node, ifname: b.ifname, addresses: [] }, mtu: l.mtu ?? DEFAULT_MTU,
      ...(l.rate ? { rate: l.rate } : {}), ...(l.delay ? { delay: l.delay } : {}), ...(l.loss ? { loss: l.loss } : {}),
    };
    const was = oldWires.get(key);
    for (const [given, fam, pool, used] of [[pair(l.ipv4), 4, p2p4, usedP2p], [pair(l.ipv6), 6, spec.ipv6 ? p2p6 : undefined, usedP2p6]] as const) {
      if (given[0] !== undefined || given[1] !== undefined) {
        if (given[0]) w.a.addresses.push(given[0]);
        if (given[1]) w.b.addresses.push(given[1]);
        continue;
      }
      if (!pool) continue;
      const k = indexIn(pool, was?.a.addresses.find((c) => (c.includes(':') ? 6 : 4) === fam));
      if (k !== undefined && !used.has(k)) {
        used.add(k);
        const [pa, pb] = p2pPair(pool, k);
        w.a.addresses.push(pa);
        w.b.addresses.push(pb);
      } else pending.push({ w, fam });
    }
    wires.push(w);
  });
  // New links take the lowest free /31s.
  const next = { 4: 0, 6: 0 };
  for (const { w, fam } of pending) {
    const used = fam === 4 ? usedP2p : usedP2p6;
    const pool = (fam === 4 ? p2p4 : p2p6)!;
    while (used.has(next[fam])) next[fam]++;
    used.add(next[fam]);
    const [pa, pb] = p2pPair(pool, next[fam]);
    w.a.addresses.push(pa);
    w.b.addresses.push(pb);
  }
  for (const w of wires) {
    nodes[w.a.node]!.interfaces.push({ ifname: w.a.ifname, addresses: w.a.addresses, mtu: w.mtu, peer: { node: w.b.node, ifname: w.b.ifname } });
    nodes[w.b.node]!.interfaces.push({ ifname: w.b.ifname, addresses: w.b.addresses, mtu: w.mtu, peer: { node: w.a.node, ifname: w.a.ifname } });
  }
  for (const n of Object.values(nodes)) n.interfaces.sort((p, q) => p.ifname.localeCompare(q.ifname, 'en', { numeric: true }));
  return { name: spec.name, pools, nodes, networks, wires, attachments };
}

function planNode(name: string, n: LabNodeSpec, netns: string): PlannedNode {
  const sysctls: Record<string, string> = {};
  for (const [k, v] of Object.entries(n.sysctls ?? {})) sysctls[k] = str(v);
  return { name, netns, loopback: [], interfaces: [], sysctls, exec: [...(n.exec ?? [])], run: [...(n.run ?? [])], aliases: [...(n.aliases ?? [])] };
}

// ---------------------------------------------------------------- what changed

/** A node's own settings (not its links): a change recreates the node. */
export const nodeSignature = (n: PlannedNode) =>
  JSON.stringify({ l: [...n.loopback].sort(), s: n.sysctls, e: n.exec, r: n.run, a: n.aliases });

export const wireSignature = (w: PlannedWire) =>
  JSON.stringify({ k: w.key, a: w.a.addresses, b: w.b.addresses, m: w.mtu, r: w.rate ?? null, d: w.delay ?? null, l: w.loss ?? null });

export function sameNetwork(x: PlannedNetwork, y: PlannedNetwork): boolean {
  return JSON.stringify(networkKey(x)) === JSON.stringify(networkKey(y));
}

const networkKey = (n: PlannedNetwork) => ({
  d: n.driver, s: n.subnet ?? null, g: n.gateway ?? null, s6: n.subnet6 ?? null, g6: n.gateway6 ?? null, v6: n.ipv6, m: n.mtu, i: n.internal,
  p: n.parent ?? null, o: n.options ?? {},
  // only where set: the signatures recorded for the labs' own networks stay what they were
  ...(n.global !== undefined ? { gl: n.global } : {}),
});

export const networkSignature = (n: PlannedNetwork) => JSON.stringify(networkKey(n));
