/**
 * A lab made real, and taken away, by its owner `lab:NAME`: plan (plan.ts), compare with what the
 * lab has, remove what went or changed, make what is new, run `exec:`, start `run:`, commit.
 *
 * Everything the lab makes carries its owner: networks (tnet networks, via the controller),
 * sandboxes (one namespace per node, `tn-[SCOPE-]LAB+NODE`), wires (wire.ts), the pools its
 * auto-numbered addresses come from (tnet's IPAM, owner `lab:NAME`), the processes of `run:`.
 * So `destroy` needs no file and touches nothing else, and two labs never collide: the IPAM makes
 * pool choice atomic, and every host-wide name carries the lab.
 *
 * Speed, for the 1000-node ring: namespaces are made in-process (~0.1 ms), their rows written in
 * one fsync-free transaction, every kernel request on a per-namespace netlink handle pipelined,
 * at most CONCURRENCY nodes or wires in flight, one durable commit at the end; destroy deletes
 * namespaces (the kernel frees their links), never link by link.
 */
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Controller } from '../controller.js';
import { type Core, explain } from '../core.js';
import { conflict, isTnetError, notFound } from '../errors.js';
import { failpoint } from '../failpoint.js';
import { clusterOf } from '../global-network.js';
import { Subnet } from '../ipam/subnet.js';
import { Netns, addrAdd, cidr, linkByName, linkSetUp, netnsAdd, netnsDel, netnsExists, sysctlSet } from '../kernel/index.js';
import { log } from '../log.js';
import type { Network, Owner, Sandbox } from '../model.js';
import { netnsName } from '../names.js';
import { DRIVER_MTU, VXLANID_LIST } from '../netlabel.js';
import type { WireRecord } from '../store/labs.js';
import { newId } from '../store/state.js';
import { NsHandles, type WireRequest, checkWireConfig, createWires, deleteWires, labStore } from '../wire.js';
import {
  type LabPlan, type LabPoolSet, type PlannedNetwork, type PlannedNode, networkSignature, nodeSignature, planLab, poolNeeds,
} from './plan.js';
import { execAll, processStart, startProcess, stopProcesses } from './process.js';
import { checkLab, labInvalid } from './check.js';
import { type LabSpec, labOwner } from './topology.js';

export type { LabPlan, PlannedAttachment, PlannedInterface, PlannedNetwork, PlannedNode, PlannedWire } from './plan.js';

export interface LabProgress {
  done: number;
  total: number;
  what: string;
}

export interface LabApplyOptions {
  /** Plan and compare only: nothing is recorded or made. */
  dryRun?: boolean;
  onProgress?: (p: LabProgress) => void;
}

export interface LabApplyResult {
  plan: LabPlan;
  /** What was made ("node r1", "link r1:eth1|r2:eth1", "network lan0", "attachment h1:eth0"). */
  created: string[];
  removed: string[];
  /** Removed and made again with new settings (also listed in neither of the above). */
  changed: string[];
  /** Parts left as they were. */
  unchanged: number;
}

export interface LabSummary {
  name: string;
  /** 'ready', or 'creating' for a lab whose last create did not finish (destroy it, or create again). */
  state: string;
  nodes: number;
  links: number;
  networks: number;
  created: string;
}

export interface LabInterfaceView {
  ifname: string;
  addresses: string[];
  mtu: number;
  /** "node:ifname" of the other end of a point-to-point link. */
  peer?: string;
  network?: string;
}

export interface LabDetails {
  name: string;
  state: string;
  spec: LabSpec;
  plan: LabPlan;
  nodes: { name: string; netns: string; interfaces: LabInterfaceView[]; loopback: string[]; processes: { pid: number; cmd: string; running: boolean }[] }[];
  links: { a: string; b: string; mtu: number; addresses: [string[], string[]]; rate?: string }[];
  networks: {
    name: string; driver: string; subnet?: string; subnet6?: string; mtu: number; internal: boolean; bridge?: string;
    /** An overlay: 'global' (shared by the cluster's hosts, not the lab's own), its name there and VNI. */
    scope?: 'global'; global?: string; vni?: number;
  }[];
}

/** What the lab code needs from the controller: its private core and its public verbs. */
export interface LabContext {
  readonly core: Core;
  readonly controller: Controller;
}

/**
 * Nodes or wires in flight at once. The kernel serializes this work under its rtnl lock, so more
 * in flight only adds contention: a 1000-node ring here took 3.0-4.1 s with 4, 4.6 s with 8,
 * 6.0 s with 32 (2 loaded cores).
 */
const CONCURRENCY = 4;

/** The namespace of a lab node: tnet's prefix, the instance's scope, the lab; "+" cannot be in either name, so no two labs' nodes share one. */
export const labNetnsName = (scope: string, lab: string, node: string) => netnsName(scope, `${lab}+${node}`);

// ---------------------------------------------------------------- pools

/** Where auto pools are looked for (munet's scheme), first free one wins. */
function* candidates(kind: keyof LabPoolSet): Generator<string> {
  if (kind === 'p2p4') for (let i = 254; i >= 128; i--) yield `10.${i}.0.0/16`;
  if (kind === 'loopback4') for (let i = 0; i < 256; i++) yield `10.255.${i}.0/24`;
  if (kind === 'v6') for (let i = 0; i < 4096; i++) yield `fc00:0:${i.toString(16)}::/48`;
}

/** Auto LAN subnets: the lab's `pools.lan4` carved in /`lanPrefix` (default 24), else 10.0.N.0/24 on. */
function* lanCandidates(pools: LabSpec['pools']): Generator<string> {
  const prefix = pools?.lanPrefix ?? 24;
  if (pools?.lan4) {
    const base = Subnet.parse(pools.lan4);
    const step = 1n << BigInt(32 - prefix);
    for (let a = base.network; a + step - 1n <= base.last.value; a += step) yield Subnet.of(4, a, prefix).toString();
    return;
  }
  for (let hi = 0; hi < 128; hi++) for (let n = 0; n < 256; n++) yield `10.${hi}.${n}.0/24`;
}

const overlapsAny = (s: Subnet, taken: readonly Subnet[]) => taken.some((t) => t.prefix > 0 && t.family === s.family && t.overlaps(s));

/** The lab's pools, requested in tnet's IPAM where missing (atomic: two labs never get the same). */
async function ensurePools(ctx: LabContext, owner: Owner, spec: LabSpec, dryRun: boolean): Promise<LabPoolSet> {
  const needs = poolNeeds(spec);
  const held = (await ctx.controller.pools()).filter((p) => p.owner === owner);
  const out: LabPoolSet = {};
  const given: LabPoolSet = { p2p4: spec.pools?.p2p4, loopback4: spec.pools?.loopback4, v6: spec.pools?.ipv6 };
  let taken: Subnet[] | undefined;
  for (const kind of ['p2p4', 'loopback4', 'v6'] as const) {
    if (!needs[kind]) continue;
    const mine = held.find((p) => p.options.labPool === kind);
    if (mine && (given[kind] === undefined || mine.subnet.toString() === given[kind])) {
      out[kind] = mine.subnet.toString();
      continue;
    }
    if (mine) await ctx.controller.releasePool(mine.id);
    const tries = given[kind] !== undefined ? [given[kind]!] : [...candidates(kind)];
    taken ??= [...(await ctx.core.taken()), ...(await ctx.controller.pools()).map((p) => p.subnet)];
    for (const c of tries) {
      const s = Subnet.parse(c);
      if (given[kind] === undefined && overlapsAny(s, taken)) continue;
      if (dryRun) {
        out[kind] = c;
        break;
      }
      try {
        await ctx.controller.requestPool({ subnet: c, owner, noGateway: true, options: { labPool: kind }, v6: kind === 'v6' });
        out[kind] = c;
        break;
      } catch (e) {
        if (!isTnetError(e, 'conflict') || given[kind] !== undefined) throw e;
        taken.push(s); // another lab took it meanwhile: the next one
      }
    }
    if (!out[kind]) throw conflict(`no free ${kind} pool for lab "${spec.name}" (set pools.${kind === 'v6' ? 'ipv6' : kind} in the file)`, `lab "${spec.name}"`);
  }
  return out;
}

// ---------------------------------------------------------------- apply

interface Counter {
  done: number;
  total: number;
  tick(what: string): void;
}

export async function applyLab(ctx: LabContext, input: LabSpec, opts: LabApplyOptions = {}): Promise<LabApplyResult> {
  // The same checks as a file gets (cli/lab-file.ts): a spec from the API or the library too.
  const { lab: spec, problems } = checkLab(input);
  if (!spec) throw labInvalid(problems, typeof input?.name === 'string' ? input.name : undefined);
  const name = spec.name; // a DNS label of at most 32 characters: checkLab made sure
  const owner = labOwner(name);
  const { core } = ctx;
  // Before anything is recorded: a lab whose overlay this host cannot reach makes nothing (the
  // message names --store, or says the store is not reached yet).
  const overlay = Object.keys(spec.networks).find((k) => spec.networks[k]!.driver === 'overlay');
  if (overlay !== undefined) clusterOf(core, `lab "${name}": network "${overlay}" (overlay)`);
  return core.locks.exclusive(`lab:${name}`, async () => {
    const store = labStore(core);
    const row = store.lab(name);
    const oldPlan = row ? (JSON.parse(row.plan) as LabPlan) : undefined;
    const joined = joinedOverlays(row);
    // An overlay that exists already must have what the file asks for: refused before anything
    // is recorded (a shared network's subnet is not one lab's to change).
    for (const [k, n] of Object.entries(spec.networks)) {
      if (n.driver !== 'overlay') continue;
      const global = n.name ?? k;
      const have = core.state.findNetwork(global, '');
      const asked: PlannedNetwork = {
        name: k, global, driver: 'overlay', subnet: n.subnet, gateway: n.gateway, subnet6: n.subnet6, gateway6: n.gateway6,
        ipv6: Boolean(spec.ipv6 || n.subnet6), mtu: n.mtu ?? 0, internal: n.internal ?? false, options: n.options,
      };
      if (have?.name === global) checkJoin(core, name, asked, n.mtu, have);
    }
    for (const l of spec.links) checkWireConfig(l.endpoints.join('|'), { a: [], b: [], rate: l.rate, delay: l.delay, loss: l.loss });
    const now = new Date().toISOString();
    if (!opts.dryRun) {
      // The intent first: from here `destroy NAME` finds everything (pools and objects by owner).
      core.state.unsynced(() =>
        store.putLab({ name, state: 'creating', spec: JSON.stringify(spec), plan: row?.plan ?? '{}', created: row?.created ?? now, updated: now }),
      );
    }
    const pools = await ensurePools(ctx, owner, spec, Boolean(opts.dryRun));
    failpoint('lab:pools');
    const plan = planLab(spec, pools, (n) => labNetnsName(core.scope, name, n), oldPlan?.nodes ? oldPlan : undefined);

    // ---- compare with what the lab has
    const parts = store.parts(name);
    const sbs = core.state.sandboxes().filter((s) => s.owner === owner);
    const nets = core.state.networks().filter((n) => n.owner === owner);
    const wires = store.wires(owner);
    const sbByNode = new Map(sbs.map((s) => [s.name, s]));
    // By the lab's key: its own networks, and the global networks its overlays name.
    const netByName = new Map(nets.map((n) => [n.name, n]));
    for (const n of Object.values(plan.networks)) {
      const g = n.global !== undefined ? globalNetwork(core, n.global) : undefined;
      if (g) netByName.set(n.name, g);
    }
    /** The lab's key of a network a node is on: its own network's name, or the overlay's key. */
    const keyOf = (net: Network) =>
      net.owner === owner ? net.name : core.isGlobal(net) ? Object.values(plan.networks).find((n) => n.global === net.name)?.name ?? [...joined].find(([, g]) => g === net.name)?.[0] : undefined;
    const keepNode = new Set(
      Object.values(plan.nodes).filter((n) => sbByNode.get(n.name)?.state === 'ready' && parts.get(`node/${n.name}`) === nodeSignature(n)).map((n) => n.name),
    );
    const keepNet = new Set(
      Object.values(plan.networks)
        .filter((n) => netByName.get(n.name)?.state === 'ready' && parts.get(`net/${n.name}`) === networkSignature(withSubnet(n, netByName.get(n.name))))
        .map((n) => n.name),
    );
    // an auto subnet kept with its network
    for (const n of keepNet) fillSubnets(plan.networks[n]!, netByName.get(n)!);
    const wantWire = new Map(plan.wires.map((w) => [w.key, w]));
    const sameWire = (r: WireRecord) => {
      const w = wantWire.get(r.key);
      return (
        w !== undefined && r.state === 'ready' && keepNode.has(w.a.node) && keepNode.has(w.b.node) && r.mtu === w.mtu &&
        r.config === JSON.stringify(wireConfig(w))
      );
    };
    const keepWires = wires.filter(sameWire);
    const keptWireKeys = new Set(keepWires.map((w) => w.key));
    const attachKey = (node: string, ifname: string) => `${node}:${ifname}`;
    const epsOf = (sb: Sandbox) => core.state.endpointsOfSandbox(sb.id);
    const keepAttach = new Set<string>();
    for (const a of plan.attachments) {
      const sb = sbByNode.get(a.node);
      const net = netByName.get(a.network);
      if (!sb || !net || !keepNode.has(a.node) || !keepNet.has(a.network)) continue;
      const ep = epsOf(sb).find((e) => e.networkId === net.id && e.ifname === a.ifname && e.state === 'ready');
      if (ep && (a.ipv4 === undefined || ep.ipv4?.toString() === a.ipv4) && (a.ipv6 === undefined || ep.ipv6?.toString() === a.ipv6)) keepAttach.add(a.key);
    }

    const created: string[] = [];
    const removed: string[] = [];
    const changed: string[] = [];
    // An overlay says whether it joins the cluster's network or makes it (what a dry run shows).
    const netLabel = (n: string) => {
      const g = plan.networks[n]?.global;
      if (g !== undefined) return `network ${n} (${netByName.get(n) ? 'joins' : 'makes'} overlay ${g})`;
      const left = plan.networks[n] ? undefined : joined.get(n);
      return left === undefined ? `network ${n}` : `network ${n} (leaves overlay ${left})`;
    };
    const label = { node: (n: string) => `node ${n}`, net: netLabel, wire: (k: string) => `link ${k}`, att: (k: string) => `attachment ${k}` };
    const had = {
      nodes: new Set(sbs.map((s) => s.name)), nets: new Set([...nets.map((n) => n.name), ...joined.keys()]), wires: new Set(wires.map((w) => w.key)),
      atts: new Set(sbs.flatMap((s) => epsOf(s).map((e) => attachKey(s.name, e.ifname)))),
    };
    const note = (kind: keyof typeof label, key: string, present: boolean, wanted: boolean) => {
      if (present && wanted) changed.push(label[kind](key));
      else if (present) removed.push(label[kind](key));
      else if (wanted) created.push(label[kind](key));
    };
    for (const n of had.nodes) if (!keepNode.has(n)) note('node', n, true, n in plan.nodes);
    for (const n of Object.keys(plan.nodes)) if (!had.nodes.has(n)) note('node', n, false, true);
    for (const n of had.nets) if (!keepNet.has(n)) note('net', n, true, n in plan.networks);
    for (const n of Object.keys(plan.networks)) if (!had.nets.has(n)) note('net', n, false, true);
    for (const k of had.wires) if (!keptWireKeys.has(k)) note('wire', k, true, wantWire.has(k));
    for (const w of plan.wires) if (!had.wires.has(w.key)) note('wire', w.key, false, true);
    const wantAtt = new Set(plan.attachments.map((a) => a.key));
    for (const k of had.atts) if (!keepAttach.has(k)) note('att', k, true, wantAtt.has(k));
    for (const a of plan.attachments) if (!had.atts.has(a.key)) note('att', a.key, false, true);
    const unchanged = keepNode.size + keepNet.size + keepWires.length + keepAttach.size;
    if (opts.dryRun) return { plan, created, removed, changed, unchanged };

    const nodesToMake = Object.values(plan.nodes).filter((n) => !keepNode.has(n.name));
    const netsToMake = Object.values(plan.networks).filter((n) => !keepNet.has(n.name));
    const wiresToMake = plan.wires.filter((w) => !keptWireKeys.has(w.key));
    const attsToMake = plan.attachments.filter((a) => !keepAttach.has(a.key));
    const total = nodesToMake.length + netsToMake.length + wiresToMake.length + attsToMake.length;
    const counter: Counter = {
      done: 0, total,
      tick(what) {
        this.done++;
        opts.onProgress?.({ done: this.done, total: this.total, what });
      },
    };

    const handles = new NsHandles();
    try {
      // ---- remove what went or changed
      const goneNodes = sbs.filter((s) => !keepNode.has(s.name));
      await stopNodeProcesses(ctx, name, goneNodes.map((s) => s.name));
      const goneWires = wires.filter((w) => !keptWireKeys.has(w.key));
      // Every wire that goes is deleted by hand, even one whose node goes too: the kernel frees a
      // deleted namespace's links asynchronously, so the end left in a kept node could still hold
      // its name when the same link is made again (EEXIST on a node recreated next to its peer).
      await deleteWires(core, goneWires, handles);
      for (const sb of sbs) {
        if (!keepNode.has(sb.name)) continue;
        for (const ep of epsOf(sb)) {
          if (keepAttach.has(attachKey(sb.name, ep.ifname))) continue;
          const net = core.state.network(ep.networkId);
          const key = net && keyOf(net);
          // an overlay the lab leaves is not deleted with the node's port on it: the port goes first
          if (net && key !== undefined && (keepNet.has(key) || core.isGlobal(net))) await ctx.controller.disconnect(net.id, sb.id);
        }
      }
      for (const sb of goneNodes) handles.forget(sb.netns);
      await removeSandboxes(ctx, goneNodes);
      for (const n of nets) if (!keepNet.has(n.name)) await ctx.controller.deleteNetwork(n.id, { owner, removeEndpoints: true });
      const leaving = [...joined].filter(([k]) => !keepNet.has(k));
      for (const [, g] of leaving) await leaveOverlay(ctx, name, g);
      core.state.unsynced(() => {
        for (const n of goneNodes) store.deletePart(name, 'node', n.name);
        for (const n of nets) if (!keepNet.has(n.name)) store.deletePart(name, 'net', n.name);
        for (const [k] of leaving) store.deletePart(name, 'net', k);
      });
      failpoint('lab:removed');

      // ---- make what is new
      for (const n of netsToMake) {
        const net = n.global !== undefined ? await joinOverlay(ctx, name, n, spec.networks[n.name]?.mtu) : await makeNetwork(ctx, owner, n, spec.pools);
        // the settings asked for (an auto subnet as chosen), not what the network filled in
        const sig = networkSignature(withSubnet(n, net));
        fillSubnets(n, net);
        core.state.unsynced(() => store.putPart(name, 'net', n.name, sig));
        counter.tick(`network ${n.name}`);
      }
      failpoint('lab:networks');
      const made = await makeNodes(ctx, owner, nodesToMake, handles, counter);
      failpoint('lab:nodes');
      const sbOf = (node: string) => made.get(node) ?? sbByNode.get(node)!;
      const reqs: WireRequest[] = wiresToMake.map((w) => ({
        key: w.key, a: sbOf(w.a.node), aIfname: w.a.ifname, b: sbOf(w.b.node), bIfname: w.b.ifname, mtu: w.mtu, config: wireConfig(w),
      }));
      const rows = await createWires(core, owner, reqs, handles, { concurrency: CONCURRENCY, onDone: () => counter.tick('link') });
      core.state.unsynced(() => {
        for (const r of rows) store.setWireState(r.id, 'ready');
      });
      failpoint('lab:wires');
      await pool(attsToMake, 8, async (a) => {
        const want = plan.networks[a.network]!;
        const net = want.global !== undefined ? globalNetwork(core, want.global) : core.state.findNetwork(a.network, owner);
        if (!net) throw notFound(`network "${want.global ?? a.network}" of lab "${name}" is gone (removed meanwhile); create the lab again`, `network "${a.network}"`);
        await ctx.controller.connect(net.id, sbOf(a.node).id, { ifname: a.ifname, ip: a.ipv4, ip6: a.ipv6 });
        counter.tick(`attachment ${a.key}`);
      });
      failpoint('lab:attached');
      // Planned addresses of LAN interfaces: what the networks' IPAM gave.
      for (const node of Object.values(plan.nodes)) {
        const sb = sbOf(node.name);
        for (const i of node.interfaces) {
          if (!i.network) continue;
          const ep = epsOf(sb).find((e) => e.ifname === i.ifname);
          const net = ep && core.state.network(ep.networkId);
          if (ep && net)
            i.addresses = [
              ...(ep.ipv4 && net.ipv4 ? [`${ep.ipv4}/${net.ipv4.subnet.prefix}`] : []),
              ...(ep.ipv6 && net.ipv6 ? [`${ep.ipv6}/${net.ipv6.subnet.prefix}`] : []),
            ];
          // An overlay without mtu has this host's (the underlay's minus VXLAN's): what the node got.
          const pn = plan.networks[i.network];
          if (ep && pn?.global !== undefined && !spec.networks[i.network]?.mtu) {
            const link = await linkByName(handles.get(sb.netns), i.ifname);
            if (link?.mtu) i.mtu = pn.mtu = link.mtu;
          }
        }
      }
      store.putLab({ name, state: 'creating', spec: JSON.stringify(spec), plan: JSON.stringify(plan), created: row?.created ?? now, updated: now });
      ctx.core.events.emit('lab', 'up', name, plan, (node) => sbOf(node).id);

      // ---- exec (nodes in parallel, each node's commands in order), then run
      const fresh = nodesToMake.filter((n) => n.exec.length);
      await pool(fresh, 8, (n) => execAll(name, n.name, n.netns, n.exec));
      const logDir = join(ctx.controller.stateDir, 'labs', name);
      for (const n of nodesToMake) {
        for (const cmd of n.run) {
          const p = startProcess(n.netns, n.name, cmd, logDir);
          core.state.unsynced(() => store.insertProcess({ lab: name, node: n.name, pid: p.pid, start: p.start, cmd }));
        }
      }
      failpoint('lab:running');
      // One durable commit for the whole create: the node records and the lab's state.
      core.state.tx(() => {
        for (const n of nodesToMake) store.putPart(name, 'node', n.name, nodeSignature(n));
        store.putLab({ name, state: 'ready', spec: JSON.stringify(spec), plan: JSON.stringify(plan), created: row?.created ?? now, updated: new Date().toISOString() });
      });
      return { plan, created, removed, changed, unchanged };
    } catch (e) {
      throw explain(e);
    } finally {
      handles.close();
    }
  });
}

const wireConfig = (w: LabPlan['wires'][number]) => ({
  a: w.a.addresses, b: w.b.addresses, ...(w.rate ? { rate: w.rate } : {}), ...(w.delay ? { delay: w.delay } : {}), ...(w.loss ? { loss: w.loss } : {}),
});

function withSubnet(n: PlannedNetwork, net: Network | undefined): PlannedNetwork {
  return net ? { ...n, subnet: n.subnet ?? net.ipv4?.subnet.toString(), subnet6: n.subnet6 } : n;
}

function fillSubnets(n: PlannedNetwork, net: Network): void {
  n.subnet ??= net.ipv4?.subnet.toString();
  n.gateway ??= net.ipv4?.gateway?.toString();
  if (net.ipv6) n.subnet6 ??= net.ipv6.subnet.toString();
}

/** Runs `fn` over `items`, at most `width` at once; the first error wins (the rest finish first). */
async function pool<T>(items: readonly T[], width: number, fn: (x: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  let failed: { e: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      const x = items[next++]!;
      try {
        await fn(x);
      } catch (e) {
        failed ??= { e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  if (failed) throw failed.e;
}

/** A LAN: a tnet network owned by the lab; an auto subnet is the first free 10.x.N.0/24. */
async function makeNetwork(ctx: LabContext, owner: Owner, n: PlannedNetwork, pools: LabSpec['pools']): Promise<Network> {
  const options: Record<string, string> = { ...(n.options ?? {}) };
  if (n.driver === 'bridge') options.mtu ??= String(n.mtu);
  if (n.parent) options.parent ??= n.parent;
  const req = {
    name: n.name, owner, driver: n.driver, gateway: n.gateway, ipv6: n.ipv6 || undefined, subnet6: n.subnet6, gateway6: n.gateway6,
    internal: n.internal, options,
  };
  if (n.subnet) return ctx.controller.createNetwork({ ...req, subnet: n.subnet });
  const taken = await ctx.core.taken();
  for (const c of lanCandidates(pools)) {
    const s = Subnet.parse(c);
    if (overlapsAny(s, taken)) continue;
    try {
      return await ctx.controller.createNetwork({ ...req, subnet: c });
    } catch (e) {
      if (!isTnetError(e, 'conflict') || !/overlaps/.test((e as Error).message)) throw e;
    }
  }
  throw conflict(`no free LAN subnet in ${pools?.lan4 ?? '10.0.0.0/9'} for network "${n.name}"; give it a subnet or set pools.lan4`, `network "${n.name}"`);
}

// ---------------------------------------------------------------- overlays

/**
 * The label on a global network a lab made (value: that lab's name). Such a network goes with the
 * last lab that leaves it; one without it (made with `tnet network create -d overlay`) is never
 * removed by a lab.
 */
export const LAB_MADE_LABEL = 'tnet.lab';

/** The global network of that name as this host mirrors it, if there is one. */
function globalNetwork(core: Core, name: string): Network | undefined {
  const n = core.state.findNetwork(name, '');
  return n && n.name === name && core.isGlobal(n) ? n : undefined;
}

/**
 * The overlays a lab had (its key -> the global name), from its last plan and the spec it was last
 * asked for: a create that stopped halfway wrote the spec but maybe not the plan.
 */
function joinedOverlays(row: { spec: string; plan: string } | undefined): Map<string, string> {
  const out = new Map<string, string>();
  if (!row) return out;
  const plan = JSON.parse(row.plan) as Partial<LabPlan>;
  for (const n of Object.values(plan.networks ?? {})) if (n.global !== undefined) out.set(n.name, n.global);
  const spec = JSON.parse(row.spec) as Partial<LabSpec>;
  for (const [k, n] of Object.entries(spec.networks ?? {})) if (n?.driver === 'overlay' && !out.has(k)) out.set(k, n.name ?? k);
  return out;
}

const optionOf = (o: Readonly<Record<string, string>> | undefined, short: string, long: string) => o?.[short] ?? o?.[long];

/**
 * The global network an overlay of the lab names: joined when it exists (an overlay with what the
 * file asks for), else made, marked as a lab's. Two labs making it at the same moment on two
 * hosts: the store lets one make it, and the other joins it.
 */
async function joinOverlay(ctx: LabContext, lab: string, n: PlannedNetwork, mtu: number | undefined): Promise<Network> {
  const { core } = ctx;
  const name = n.global!;
  const existing = () => {
    const have = core.state.findNetwork(name, '');
    return have?.name === name ? have : undefined;
  };
  let net = existing();
  if (!net) {
    const options: Record<string, string> = { ...(n.options ?? {}) };
    if (mtu !== undefined) options.mtu ??= String(mtu);
    try {
      return await ctx.controller.createNetwork({
        name, owner: '', driver: 'overlay', subnet: n.subnet, gateway: n.gateway, ipv6: n.ipv6 || undefined, subnet6: n.subnet6, gateway6: n.gateway6,
        internal: n.internal, options, labels: { [LAB_MADE_LABEL]: lab },
      });
    } catch (e) {
      if (!isTnetError(e, 'conflict') || !/already exists/.test((e as Error).message)) throw e;
      log.info({ lab, network: name }, 'lab: another host made the overlay a moment ago: joining it');
    }
  }
  if (!net || (core.isGlobal(net) && net.state !== 'ready')) {
    // Made by another host a moment ago (this host's watch may be mirroring it right now):
    // mirrored here from the store's record, which waits for a mirror under way.
    const { cluster, sync } = clusterOf(core, `network "${name}"`);
    const g = await cluster.networks.get(name);
    net = (g && (await sync.adopt(g))) || existing();
    if (net?.state !== 'ready') throw conflict(`lab "${lab}": network "${name}" was made by another host a moment ago and is not usable on this host yet; create the lab again`, `network "${name}"`);
  }
  checkJoin(core, lab, n, mtu, net);
  return net;
}

/** An existing network the lab joins has what the file asks for; else a conflict naming both. */
function checkJoin(core: Core, lab: string, n: PlannedNetwork, mtu: number | undefined, net: Network): void {
  const obj = `network "${n.global}"`;
  const rename = n.global === n.name ? `name the lab's one otherwise (networks.${n.name}.name)` : `change networks.${n.name}.name`;
  if (!core.isGlobal(net) || net.driver !== 'overlay')
    throw conflict(`lab "${lab}": network "${net.name}" of this host is a ${net.driver} network, not an overlay shared by the cluster; ${rename}`, obj);
  const differs = (what: string, has: string | undefined, asks: string) =>
    conflict(
      `lab "${lab}": overlay network "${net.name}" exists with ${what} ${has ?? 'none'}, but networks.${n.name} asks for ${asks}; give the same, leave it out to take the network's, or ${rename}`,
      obj,
    );
  const same = (a: string | undefined, b: string) => a !== undefined && Subnet.parse(a).equals(Subnet.parse(b));
  if (n.subnet && !same(net.ipv4?.subnet.toString(), n.subnet)) throw differs('subnet', net.ipv4?.subnet.toString(), n.subnet);
  if (n.gateway && net.ipv4?.gateway?.toString() !== n.gateway) throw differs('gateway', net.ipv4?.gateway?.toString(), n.gateway);
  if (n.ipv6 && !net.ipv6) throw differs('IPv6 subnet', undefined, n.subnet6 ?? 'IPv6');
  if (n.subnet6 && !same(net.ipv6?.subnet.toString(), n.subnet6)) throw differs('IPv6 subnet', net.ipv6?.subnet.toString(), n.subnet6);
  if (n.gateway6 && net.ipv6?.gateway?.toString() !== n.gateway6) throw differs('IPv6 gateway', net.ipv6?.gateway?.toString(), n.gateway6);
  const vni = optionOf(n.options, 'vni', VXLANID_LIST);
  if (vni !== undefined && net.options[VXLANID_LIST] !== String(Number(vni))) throw differs('vni', net.options[VXLANID_LIST], vni);
  const has = optionOf(net.options, 'mtu', DRIVER_MTU);
  const asked = mtu !== undefined ? String(mtu) : optionOf(n.options, 'mtu', DRIVER_MTU);
  if (asked !== undefined && has !== asked) throw differs('mtu', has ?? "each host's underlay MTU minus 50", asked);
}

/**
 * The lab is off overlay `name` on this host (its nodes' ports on it are gone). A network a lab
 * made goes once no host has endpoints on it; one still in use on another host stays (the store
 * refuses the delete 'busy', which here only means "not the last one"); one a person made stays.
 * Whether it went.
 */
async function leaveOverlay(ctx: LabContext, lab: string, name: string): Promise<boolean> {
  const { core } = ctx;
  const net = globalNetwork(core, name);
  if (!net || net.state !== 'ready' || net.labels[LAB_MADE_LABEL] === undefined) return false;
  if (core.state.endpointsOfNetwork(net.id).length) return false; // another lab or a sandbox of this host is on it
  if (!core.cluster()) {
    log.warn({ lab, network: name }, 'lab: the global store is not reached: the overlay the lab made is left (remove it with tnet network rm once no host uses it)');
    return false;
  }
  try {
    await ctx.controller.deleteNetwork(net.id, { owner: '' });
    return true;
  } catch (e) {
    if (isTnetError(e, 'busy')) {
      log.info({ lab, network: name }, 'lab: the overlay stays: other hosts have endpoints on it');
      return false;
    }
    if (isTnetError(e, 'not-found')) return false; // removed meanwhile, by another host's lab
    throw e;
  }
}

/**
 * The nodes' sandboxes, in a batch: rows (one fsync-free transaction), namespaces in-process,
 * then per node on its own netlink handle: lo up, loopback addresses, sysctls. A failure takes
 * back the namespaces and rows of this batch.
 */
async function makeNodes(ctx: LabContext, owner: Owner, nodes: readonly PlannedNode[], handles: NsHandles, counter: Counter): Promise<Map<string, Sandbox>> {
  const { core } = ctx;
  const out = new Map<string, Sandbox>();
  if (!nodes.length) return out;
  const now = new Date().toISOString();
  const sbs: Sandbox[] = nodes.map((n) => ({ id: newId(), name: n.name, owner, kind: 'lab', state: 'creating', netns: Netns.named(n.netns).path, created: now }));
  for (const n of nodes)
    if (netnsExists(n.netns))
      throw conflict(`a network namespace named "${n.netns}" already exists and this lab does not own it (remove it with ip netns del ${n.netns} if it is a leftover)`, `netns "${n.netns}"`);
  core.state.unsynced(() => {
    for (const s of sbs) core.state.insertSandbox(s);
  });
  failpoint('lab:node-intent');
  const made: string[] = [];
  try {
    // Namespaces one after the other (synchronous, kernel-bound); each node's few requests go out
    // at once on its own handle, all nodes together (they are tiny, and on different sockets).
    const setups: Promise<unknown>[] = [];
    nodes.forEach((n, i) => {
      netnsAdd(n.netns);
      made.push(n.netns);
      const ns = Netns.named(n.netns);
      for (const [k, v] of Object.entries(n.sysctls)) sysctlSet(k, v, ns);
      const h = handles.get(sbs[i]!.netns);
      const p = Promise.all([linkSetUp(h, 'lo'), ...n.loopback.map((c) => addrAdd(h, 1, 'lo', cidr(c)))]).then(() => counter.tick(`node ${n.name}`));
      p.catch(() => undefined); // awaited below; a rejection before then is not unhandled
      setups.push(p);
    });
    await Promise.all(setups);
  } catch (e) {
    for (const ns of made) {
      try {
        netnsDel(ns);
      } catch {
        /* the next reconcile */
      }
    }
    core.state.unsynced(() => {
      for (const s of sbs) core.state.deleteSandbox(s.id);
    });
    throw e;
  }
  core.state.unsynced(() => {
    for (const s of sbs) core.state.setSandboxState(s.id, 'ready');
  });
  for (const s of sbs) {
    const ready = { ...s, state: 'ready' as const };
    out.set(s.name, ready);
    core.events.emit('sandbox', 'up', ready);
  }
  return out;
}

/**
 * Sandboxes go: those with endpoints through the controller (their LAN ports go with them), the
 * others by deleting their namespace (the wires in it go with it) and their rows in one commit.
 */
async function removeSandboxes(ctx: LabContext, sbs: readonly Sandbox[]): Promise<number> {
  const { core } = ctx;
  const plain: Sandbox[] = [];
  for (const sb of sbs) {
    if (sb.state === 'ready' && core.state.endpointsOfSandbox(sb.id).length) await ctx.controller.deleteSandbox(sb.id, { owner: sb.owner });
    else plain.push(sb);
  }
  if (!plain.length) return sbs.length;
  core.state.unsynced(() => {
    for (const sb of plain) core.state.setSandboxState(sb.id, 'deleting');
  });
  for (const sb of plain) {
    const nsName = sb.netns.slice(sb.netns.lastIndexOf('/') + 1);
    if (netnsExists(nsName)) netnsDel(nsName);
    rmSync(`${core.etcNetns}/${nsName}`, { recursive: true, force: true });
  }
  core.state.unsynced(() => {
    for (const sb of plain) core.state.deleteSandbox(sb.id); // their wires' rows go with them (ON DELETE CASCADE)
  });
  for (const sb of plain) core.events.emit('sandbox', 'down', sb);
  return sbs.length;
}

async function stopNodeProcesses(ctx: LabContext, lab: string, nodes: readonly string[]): Promise<void> {
  const store = labStore(ctx.core);
  const want = new Set(nodes);
  const procs = store.processes(lab).filter((p) => want.has(p.node));
  if (!procs.length) return;
  await stopProcesses(procs);
  ctx.core.state.unsynced(() => {
    for (const p of procs) store.deleteProcess(p);
  });
}

// ---------------------------------------------------------------- destroy

/** Removes everything lab `name` owns, found by its owner (no file needed). Idempotent. */
export async function destroyLab(ctx: LabContext, name: string): Promise<{ removed: number }> {
  const { core } = ctx;
  const owner = labOwner(name);
  return core.locks.exclusive(`lab:${name}`, async () => {
    const store = labStore(core);
    const overlays = new Set(joinedOverlays(store.lab(name)).values());
    let removed = 0;
    try {
      const procs = store.processes(name);
      if (procs.length) {
        await stopProcesses(procs);
        core.state.unsynced(() => {
          for (const p of procs) store.deleteProcess(p);
        });
      }
      const hadWires = store.wires(owner);
      removed += hadWires.length;
      const sbs = core.state.sandboxes().filter((s) => s.owner === owner);
      removed += await removeSandboxes(ctx, sbs);
      const left = store.wires(owner); // rows whose sandboxes are gone already went with them
      if (left.length) core.state.unsynced(() => left.forEach((w) => store.deleteWire(w.id)));
      for (const n of core.state.networks().filter((x) => x.owner === owner && x.state === 'ready')) {
        await ctx.controller.deleteNetwork(n.id, { owner, removeEndpoints: true });
        removed++;
      }
      for (const g of overlays) if (await leaveOverlay(ctx, name, g)) removed++;
      for (const p of (await ctx.controller.pools()).filter((x) => x.owner === owner)) await ctx.controller.releasePool(p.id);
      const had = store.lab(name) !== undefined;
      core.state.tx(() => store.deleteLab(name));
      rmSync(join(ctx.controller.stateDir, 'labs', name), { recursive: true, force: true });
      if (had) core.events.emit('lab', 'down', name, undefined, () => undefined);
      return { removed };
    } catch (e) {
      throw explain(e);
    }
  });
}

// ---------------------------------------------------------------- queries

export function labs(ctx: LabContext): LabSummary[] {
  const store = labStore(ctx.core);
  return store.labs().map((r) => {
    const owner = labOwner(r.name);
    const sbs = ctx.core.state.sandboxes().filter((s) => s.owner === owner);
    const atts = sbs.reduce((k, s) => k + ctx.core.state.endpointsOfSandbox(s.id).length, 0);
    return {
      name: r.name, state: r.state, nodes: sbs.length, links: store.wires(owner).length + atts,
      networks: ctx.core.state.networks().filter((n) => n.owner === owner).length + joinedOverlays(r).size, created: r.created,
    };
  });
}

export function labDetails(ctx: LabContext, name: string): LabDetails {
  const store = labStore(ctx.core);
  const row = store.lab(name);
  if (!row) throw notFound(`lab "${name}" not found (tnet ls lists the labs)`, `lab "${name}"`);
  const plan = JSON.parse(row.plan) as LabPlan;
  const procs = store.processes(name);
  const nodes = Object.values(plan.nodes ?? {}).map((n) => ({
    name: n.name, netns: n.netns, loopback: n.loopback,
    interfaces: n.interfaces.map((i) => ({ ifname: i.ifname, addresses: i.addresses, mtu: i.mtu, ...(i.peer ? { peer: `${i.peer.node}:${i.peer.ifname}` } : {}), ...(i.network ? { network: i.network } : {}) })),
    processes: procs.filter((p) => p.node === n.name).map((p) => ({ pid: p.pid, cmd: p.cmd, running: p.start !== '' && processStart(p.pid) === p.start })),
  }));
  const owner = labOwner(name);
  const nets = new Map(ctx.core.state.networks().filter((n) => n.owner === owner).map((n) => [n.name, n]));
  for (const n of Object.values(plan.networks ?? {})) {
    const g = n.global !== undefined ? globalNetwork(ctx.core, n.global) : undefined;
    if (g) nets.set(n.name, g);
  }
  return {
    name, state: row.state, spec: JSON.parse(row.spec) as LabSpec, plan, nodes,
    links: (plan.wires ?? []).map((w) => ({ a: `${w.a.node}:${w.a.ifname}`, b: `${w.b.node}:${w.b.ifname}`, mtu: w.mtu, addresses: [w.a.addresses, w.b.addresses], ...(w.rate ? { rate: w.rate } : {}) })),
    networks: Object.values(plan.networks ?? {}).map((n) => {
      const net = nets.get(n.name);
      const bridge = net ? ctx.controller.networkDetails(net).bridge : undefined;
      const vni = n.global !== undefined && net ? Number(net.options[VXLANID_LIST]) : undefined;
      return {
        name: n.name, driver: n.driver, subnet: net?.ipv4?.subnet.toString() ?? n.subnet, subnet6: net?.ipv6?.subnet.toString() ?? n.subnet6, mtu: n.mtu, internal: n.internal,
        ...(bridge ? { bridge } : {}), ...(n.global !== undefined ? { scope: 'global' as const, global: n.global } : {}), ...(vni ? { vni } : {}),
      };
    }),
  };
}

export function labNodeNetns(ctx: LabContext, lab: string, node: string): string {
  const sb = ctx.core.state.findSandbox(node, labOwner(lab));
  if (!sb || sb.owner !== labOwner(lab)) {
    if (!labStore(ctx.core).lab(lab)) throw notFound(`lab "${lab}" not found (tnet ls lists the labs)`, `lab "${lab}"`);
    throw notFound(`lab "${lab}" has no node "${node}"`, `node "${node}"`);
  }
  return sb.netns.slice(sb.netns.lastIndexOf('/') + 1);
}

