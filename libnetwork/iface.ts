/**
 * The core's kernel work inside sandboxes tnet owns: a driver makes an endpoint's interface, and
 * the core configures it (addresses, routes, default gateway), checks it and removes it.
 */
import type { Attachment } from './driverapi.js';
import { IpAddr } from './ipam/address.js';
import {
  type Link, type LinkAddr, type Netns, type Route, addrAdd, addrList, cidr, isErrno, linkByName, linkDelIfExists, linkGet, linkList, linkSetUp,
  routeAdd, routeList, withRtnl,
} from './kernel/index.js';
import type { Endpoint, Network } from './model.js';
import { conflict } from './errors.js';

/** The gateways a sandbox's default routes go through, if this endpoint supplies them. */
export function defaultGateways(a: Pick<Attachment, 'gateway4' | 'gateway6'>): IpAddr[] {
  return [a.gateway4, a.gateway6].filter((g): g is IpAddr => g !== undefined);
}

/**
 * The core's half of a join into a sandbox tnet owns: the interface the driver made comes up with
 * the endpoint's addresses, the driver's static routes and, if it supplies them, the default
 * routes, all in one round trip (the default routes are onlink, so they need not wait for the
 * address). `repair`: the interface may be half configured (reconcile); what is there already is kept.
 */
export async function configureInterface(
  ns: Netns,
  net: Network,
  ep: Endpoint,
  a: Attachment,
  opts: { defaultRoute: boolean; repair?: boolean },
): Promise<void> {
  // EADDRINUSE on bringing the link up: a sibling on the same parent (a macvlan) holds this MAC,
  // most often the endpoint that had this address (the MAC follows it) in a namespace the kernel
  // is still freeing. Wait for it, up to a second, then say which MAC clashes.
  for (let waited = 0, delay = 10; ; waited += delay, delay *= 2) {
    try {
      return await configureOnce(ns, net, ep, a, { ...opts, repair: opts.repair || waited > 0 });
    } catch (e) {
      if (!isErrno(e, 'EADDRINUSE')) throw e;
      if (waited >= 1000)
        throw conflict(`MAC address ${ep.mac} of ${ep.ifname} is already used by another interface on the same segment (a macvlan on the same parent); give the endpoint another --mac or address`, `endpoint ${ep.name}`);
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

async function configureOnce(ns: Netns, net: Network, ep: Endpoint, a: Attachment, opts: { defaultRoute: boolean; repair?: boolean }): Promise<void> {
  await withRtnl(ns, async (s) => {
    const index = a.ifindex ?? (await linkGet(s, ep.ifname)).index;
    const tolerate = (p: Promise<void>) => (opts.repair ? p.catch((e: unknown) => { if (!isErrno(e, 'EEXIST')) throw e; }) : p);
    const work: Promise<void>[] = [linkSetUp(s, ep.ifname)];
    if (ep.ipv4 && net.ipv4) work.push(tolerate(addrAdd(s, index, ep.ifname, cidr(`${ep.ipv4}/${net.ipv4.subnet.prefix}`))));
    if (ep.ipv6 && net.ipv6) work.push(tolerate(addrAdd(s, index, ep.ifname, cidr(`${ep.ipv6}/${net.ipv6.subnet.prefix}`))));
    for (const r of a.staticRoutes) {
      work.push(tolerate(routeAdd(s, { dst: cidr(r.destination), oif: index, ...(r.nextHop ? { gateway: r.nextHop, onlink: true } : {}) })));
    }
    if (opts.defaultRoute) {
      for (const g of defaultGateways(a)) work.push(tolerate(routeAdd(s, { gateway: g.toString(), oif: index, onlink: true })));
    }
    await Promise.all(work);
  });
}

/** Whether the sandbox side of an endpoint is there: its interface exists in the namespace. */
export async function interfaceInSandbox(ns: Netns, ifname: string): Promise<boolean> {
  return withRtnl(ns, async (s) => (await linkByName(s, ifname)) !== undefined);
}

/** Removes the sandbox side of an endpoint (a veth's peer goes with its host end; a macvlan only this way). */
export async function removeInterface(ns: Netns, ifname: string): Promise<void> {
  await withRtnl(ns, (s) => linkDelIfExists(s, ifname));
}

/** What the kernel shows inside one sandbox: read once, judged for each of its endpoints. */
export interface SandboxView {
  readonly links: readonly Link[];
  readonly addrs: readonly LinkAddr[];
  readonly routes: readonly Route[];
}

export async function viewSandbox(ns: Netns): Promise<SandboxView> {
  return withRtnl(ns, async (s) => {
    const [links, addrs, routes] = await Promise.all([linkList(s), addrList(s), routeList(s)]);
    return { links, addrs, routes };
  });
}

/** What the sandbox needs of one endpoint: its interface, up, with its addresses and, for the provider, the default routes. */
export interface SandboxSideWant {
  readonly ifname: string;
  readonly addresses: readonly { address: string; prefixLen: number }[];
  readonly gateways: readonly IpAddr[];
}

/** `lo` is down: nothing in the sandbox can reach its own addresses (nor 127.0.0.11). */
export function loProblem(v: SandboxView): string | undefined {
  const lo = v.links.find((l) => l.name === 'lo');
  return lo?.up ? undefined : 'lo is down';
}

/**
 * Why an endpoint's side in a sandbox is not what the store says, in plain words (empty when it
 * is): the interface missing or down, an address or a default route missing.
 */
export function sandboxSideProblems(v: SandboxView, want: SandboxSideWant): string[] {
  const link = v.links.find((l) => l.name === want.ifname);
  if (!link) return [`interface ${want.ifname} is missing`];
  const out: string[] = [];
  if (!link.up) out.push(`interface ${want.ifname} is down`);
  for (const a of want.addresses) {
    if (!v.addrs.some((x) => x.ifindex === link.index && x.prefixLen === a.prefixLen && sameIp(x.address, a.address)))
      out.push(`address ${a.address}/${a.prefixLen} is missing on ${want.ifname}`);
  }
  for (const g of want.gateways) {
    const family = g.family;
    if (!v.routes.some((r) => r.dst === undefined && r.family === family && r.gateway !== undefined && sameIp(r.gateway, g.toString()) && r.oif === link.index))
      out.push(`default route via ${g} on ${want.ifname} is missing`);
  }
  return out;
}

/** Two addresses as text, compared by value (the kernel's IPv6 text need not be ours). */
function sameIp(a: string, b: string): boolean {
  return a === b || IpAddr.parse(a).equals(IpAddr.parse(b));
}
