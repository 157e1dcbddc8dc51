/**
 * `tnet doctor`: the store compared with the kernel, every difference in plain words: what is
 * missing, what is stray, what is duplicated, and which record it belongs to. The same checker
 * runs in the chaos tests after every kill -9 and restart, so the product ships the invariant its
 * tests prove. Read-only; the repair is the reconcile (Controller.repair).
 */
import type { Core } from './core.js';
import type { Driver, Tags } from './driverapi.js';
import { type SandboxView, loProblem, sandboxSideProblems, viewSandbox } from './iface.js';
import { Netns, linkList, netnsExists, netnsList } from './kernel/index.js';
import type { Endpoint, Network, Sandbox } from './model.js';
import { short } from './names.js';
import { sandboxSideWant } from './reconcile.js';

export interface Finding {
  /** missing: the store wants it, the kernel lacks it; stray: the kernel has what no record wants; duplicate: two where one belongs; interrupted: a record of an operation that did not finish; wrong: there, but not as recorded. */
  readonly problem: 'missing' | 'stray' | 'duplicate' | 'interrupted' | 'wrong';
  /** The kernel object or record, e.g. `link tn1a2b3c4d5e6f`, `netns tn-a`, `nft table inet tnet`. */
  readonly object: string;
  /** The record it belongs to, when one does (`network web`, `endpoint of sandbox a on network web`). */
  readonly record?: string;
  readonly detail: string;
}

/** What a DNS service says of its listeners (dns/service.ts status()), when one runs in this process. */
export interface DnsListeners {
  readonly sandboxes: Readonly<Record<string, { address: string; listening: boolean; error?: string }>>;
  readonly gateways: Readonly<Record<string, readonly { address: string; listening: boolean; error?: string }[]>>;
}

export interface DoctorContext {
  readonly core: Core;
  readonly drivers: ReadonlyMap<string, Driver>;
  readonly tags: Tags;
  /** The DNS service's listeners (the daemon's); undefined where none runs (a library instance). */
  readonly dns?: () => DnsListeners;
}

const epRecord = (core: Core, ep: Endpoint, net: Network) => {
  const sb = ep.sandboxId ? core.state.sandbox(ep.sandboxId) : undefined;
  return sb ? `endpoint of sandbox ${sb.name} on network ${net.name}` : `endpoint ${short(ep.id)} on network ${net.name}`;
};

/** The names tnet gives links: bridges `tn-` and veths `tn`, then 12 hex digits of an id. */
const TNET_LINK = /^tn-?[0-9a-f]{12}$/;

/** A default scope is an instance id: such namespaces are another instance's (see orphans.ts). */
const SCOPED = /^tn-[0-9a-f]{8}-/;

export async function diagnose(ctx: DoctorContext): Promise<Finding[]> {
  const { core, tags } = ctx;
  const state = core.state;
  const out: Finding[] = [];
  const nets = state.networks();
  const sbs = state.sandboxes();
  const eps = state.endpoints();
  const netById = new Map(nets.map((n) => [n.id, n]));

  // Records of operations that did not finish (a crash; the reconcile undoes them).
  for (const n of nets) if (n.state !== 'ready') out.push({ problem: 'interrupted', object: `network ${n.name}`, record: `network ${n.name}`, detail: `its record is still '${n.state}'` });
  for (const s of sbs) if (s.state !== 'ready') out.push({ problem: 'interrupted', object: `sandbox ${s.name}`, record: `sandbox ${s.name}`, detail: `its record is still '${s.state}'` });
  for (const e of eps) {
    const n = netById.get(e.networkId);
    if (e.state !== 'ready' && n) out.push({ problem: 'interrupted', object: `endpoint ${short(e.id)}`, record: epRecord(core, e, n), detail: `its record is still '${e.state}'` });
  }

  // Host-side links: every tag of this instance belongs to a record, and to one link only.
  const links = await linkList(core.rtnl);
  const wanted = new Map<string, string>();
  for (const n of nets) wanted.set(tags.of('network', n.id), `network ${n.name}`);
  for (const e of eps) {
    const n = netById.get(e.networkId);
    if (n) wanted.set(tags.of('endpoint', e.id), epRecord(core, e, n));
  }
  const seen = new Map<string, string[]>();
  for (const l of links) {
    if (!l.alias || !tags.mine(l.alias)) continue;
    const kind = l.alias.slice(tags.prefix.length).split(':')[0];
    if (kind !== 'network' && kind !== 'endpoint') continue; // other kinds (wires) are their owners' to judge
    if (!wanted.has(tags.owner(l.alias))) out.push({ problem: 'stray', object: `link ${l.name} (${l.kind ?? 'link'})`, detail: `tagged ${l.alias}, which no record of this instance wants` });
    seen.set(l.alias, [...(seen.get(l.alias) ?? []), l.name]);
  }
  // A link with no tag but a name of tnet's making (a crash between its creation and its tag
  // that nothing finished): nobody's, so nothing would ever remove it.
  const named = new Set([
    ...nets.map((n) => ctx.drivers.get(n.driver)?.inspect?.(n).bridge).filter((b): b is string => b !== undefined),
    ...eps.map((e) => e.hostIfname).filter((h): h is string => h !== undefined),
    ...eps.map((e) => `tnc${e.id.slice(0, 11)}`), // a Docker join's container end, until dockerd moves it
  ]);
  for (const l of links) {
    if (l.alias === undefined && TNET_LINK.test(l.name) && !named.has(l.name))
      out.push({ problem: 'stray', object: `link ${l.name} (${l.kind ?? 'link'})`, detail: 'it has no owner tag but a name tnet gives its links, and no record names it' });
  }
  for (const [tag, names] of seen) {
    if (names.length > 1) out.push({ problem: 'duplicate', object: `links ${names.join(', ')}`, record: wanted.get(tags.owner(tag)), detail: `${names.length} links carry the tag ${tag}` });
  }

  // What only each driver knows (the bridge: its bridges and its firewall table), for its ready
  // networks and their ready endpoints; asked even without networks, to find what is stray.
  for (const [type, d] of ctx.drivers) {
    if (!d.diagnose) continue;
    const mine = nets.filter((n) => n.driver === type && n.state === 'ready');
    const ids = new Set(mine.map((n) => n.id));
    for (const f of await d.diagnose(mine, eps.filter((e) => ids.has(e.networkId) && e.state === 'ready'))) {
      const net = f.network ?? (f.endpoint ? netById.get(f.endpoint.networkId) : undefined);
      const record = f.endpoint && net ? epRecord(core, f.endpoint, net) : net ? `network ${net.name}` : undefined;
      out.push({ problem: f.problem, object: f.object, ...(record ? { record } : {}), detail: f.detail });
    }
  }

  // Lab sandboxes: their namespace, lo, and each endpoint from the sandbox side and the driver's.
  for (const sb of sbs) {
    if (sb.kind !== 'lab' || sb.state !== 'ready') continue;
    out.push(...(await diagnoseSandbox(ctx, sb, netById)));
  }

  // Namespaces of this instance's naming that no sandbox wants.
  const wantedNs = new Set(sbs.filter((s) => s.kind === 'lab').map((s) => s.netns.slice(s.netns.lastIndexOf('/') + 1)));
  for (const n of netnsList()) {
    const mine = core.scope ? n.startsWith(`tn-${core.scope}-`) : n.startsWith('tn-') && !SCOPED.test(n);
    if (mine && !wantedNs.has(n)) out.push({ problem: 'stray', object: `netns ${n}`, detail: 'named like this instance\'s sandboxes, but no sandbox record wants it' });
  }

  // DNS: every lab sandbox has its listener (127.0.0.11), and every listener is up.
  if (ctx.dns) {
    const st = ctx.dns();
    for (const sb of sbs) {
      if (sb.kind !== 'lab' || sb.state !== 'ready') continue;
      const l = st.sandboxes[sb.id];
      if (!l) out.push({ problem: 'missing', object: 'DNS listener 127.0.0.11:53', record: `sandbox ${sb.name}`, detail: 'the sandbox has no DNS listener: names do not resolve in it' });
      else if (!l.listening) out.push({ problem: 'wrong', object: `DNS listener ${l.address}`, record: `sandbox ${sb.name}`, detail: `not listening${l.error ? `: ${l.error}` : ''}` });
    }
    for (const [id, l] of Object.entries(st.sandboxes)) {
      if (!state.sandbox(id)) out.push({ problem: 'stray', object: `DNS listener ${l.address}`, detail: 'it serves a sandbox that no record has' });
    }
    for (const [id, ls] of Object.entries(st.gateways)) {
      const n = netById.get(id);
      for (const l of ls) {
        if (!n) out.push({ problem: 'stray', object: `DNS listener ${l.address}`, detail: 'it serves a network that no record has' });
        else if (!l.listening) out.push({ problem: 'wrong', object: `DNS listener ${l.address}`, record: `network ${n.name}`, detail: `not listening${l.error ? `: ${l.error}` : ''}` });
      }
    }
  }

  // Addresses: one endpoint per address on a network.
  for (const n of nets) {
    const byAddr = new Map<string, Endpoint[]>();
    for (const e of eps.filter((x) => x.networkId === n.id)) {
      for (const a of [e.ipv4, e.ipv6]) if (a) byAddr.set(a.toString(), [...(byAddr.get(a.toString()) ?? []), e]);
    }
    for (const [a, holders] of byAddr) {
      if (holders.length > 1) out.push({ problem: 'duplicate', object: `address ${a}`, record: `network ${n.name}`, detail: `${holders.length} endpoints have it (${holders.map((e) => epRecord(core, e, n)).join('; ')})` });
    }
  }
  return out;
}

async function diagnoseSandbox(ctx: DoctorContext, sb: Sandbox, netById: ReadonlyMap<string, Network>): Promise<Finding[]> {
  const { core } = ctx;
  const nsName = sb.netns.slice(sb.netns.lastIndexOf('/') + 1);
  const record = `sandbox ${sb.name}`;
  if (!netnsExists(nsName)) return [{ problem: 'missing', object: `netns ${nsName}`, record, detail: 'the sandbox\'s namespace does not exist (a reboot?)' }];
  const out: Finding[] = [];
  const view: SandboxView = await viewSandbox(Netns.atPath(sb.netns));
  const lo = loProblem(view);
  if (lo) out.push({ problem: 'wrong', object: `lo in netns ${nsName}`, record, detail: lo });
  const providers = core.state.endpointsOfSandbox(sb.id).filter((e) => e.gatewayProvider);
  if (providers.length > 1) out.push({ problem: 'duplicate', object: `default routes of netns ${nsName}`, record, detail: `${providers.length} endpoints are recorded as supplying them` });
  for (const ep of core.state.endpointsOfSandbox(sb.id)) {
    const net = netById.get(ep.networkId);
    if (!net || ep.state !== 'ready') continue;
    const r = epRecord(core, ep, net);
    for (const p of sandboxSideProblems(view, sandboxSideWant(net, ep))) {
      out.push({ problem: p.endsWith('is down') ? 'wrong' : 'missing', object: `${ep.ifname} in netns ${nsName}`, record: r, detail: p });
    }
    const d = ctx.drivers.get(net.driver);
    if (d?.endpointIntact && !(await d.endpointIntact(net, ep)))
      out.push({ problem: 'missing', object: ep.hostIfname ? `link ${ep.hostIfname}` : `the ${net.driver} side`, record: r, detail: `the driver's side of the endpoint is missing or not attached` });
  }
  return out;
}
