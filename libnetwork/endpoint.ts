/**
 * Endpoints: joined to a lab sandbox in one step (connect/disconnect), or created, joined and
 * left on another engine's behalf (Docker's CreateEndpoint/Join/Leave/DeleteEndpoint), with
 * their published ports. The driver makes the interface; the core configures it (iface.ts).
 */
import { existsSync } from 'node:fs';
import { type Core, DOCKER_ID, explain, readyNetwork, readySandbox } from './core.js';
import type { Attachment, JoinTarget } from './driverapi.js';
import { TnetError, busy, conflict, invalid, isTnetError, notFound } from './errors.js';
import { addressOwner, peerOf } from './cluster.js';
import { clusterOf } from './global-network.js';
import { failpoint } from './failpoint.js';
import { configureInterface, removeInterface } from './iface.js';
import { IpAddr } from './ipam/address.js';
import { Netns, isErrno, linkByName, netnsInUse, routeAdd, withRtnl } from './kernel/index.js';
import { log } from './log.js';
import type { Endpoint, Network, Owner, PortMapping, PortRequest, Sandbox } from './model.js';
import { checkAlias, checkMac, dnsNameClash, macFor, short } from './names.js';
import { checkPortFree, choosePorts, publishRequests, publishTarget } from './ports.js';
import { newId } from './store/state.js';
import { type Txn, transaction } from './txn.js';

export interface ConnectRequest {
  readonly ip?: string;
  readonly ip6?: string;
  readonly mac?: string;
  readonly aliases?: readonly string[];
  readonly ports?: readonly PortRequest[];
  /** The interface's name in the sandbox (a lab's `h1:eth0`); default the driver's prefix and the lowest free number. */
  readonly ifname?: string;
}

/** An endpoint whose addresses another IPAM chose (Docker's CreateEndpoint). */
export interface EndpointRequest {
  readonly id: string;
  readonly name?: string;
  readonly ipv4?: IpAddr;
  readonly ipv6?: IpAddr;
  readonly mac?: string;
}

/** Creates an endpoint on the network and joins it to the sandbox: its interface, addresses, routes and ports. */
export async function connect(core: Core, netRef: string, sbRef: string, req: ConnectRequest = {}): Promise<Endpoint> {
  const net0 = readyNetwork(core, netRef);
  const sb0 = readySandbox(core, sbRef);
  return core.locks.shared(net0.id, () =>
    core.locks.exclusive(sb0.id, async () => {
      const net = readyNetwork(core, net0.id);
      const sb = readySandbox(core, sb0.id);
      if (net.owner === 'docker') throw invalid(`network "${net.name}" belongs to Docker; use docker network connect`, `network "${net.name}"`);
      if (net.state !== 'ready') throw busy(`network "${net.name}" is being ${net.state}`, `network "${net.name}"`);
      const existing = core.state.endpointsOfSandbox(sb.id).find((e) => e.networkId === net.id);
      if (existing) throw conflict(`sandbox "${sb.name}" is already connected to network "${net.name}"`, `sandbox "${sb.name}"`);
      const aliases = (req.aliases ?? []).map(checkAlias);
      const dnsNames = [sb.name, ...aliases];
      const clash = dnsNameClash(dnsNames, net.name, sb.id, [...core.state.endpointNames(dnsNames, net.name), ...remoteNames(core, net)]);
      if (clash) throw conflict(clash, `sandbox "${sb.name}"`);
      const twin = remoteSandboxNamed(core, net, sb.name);
      if (twin)
        throw conflict(
          `sandbox name "${sb.name}" is taken on global network "${net.name}" by an endpoint of host ${twin.host}; a sandbox's name is its DNS name (${sb.name}.${net.name}) on every host, so it must be unique across them (aliases may be shared)`,
          `sandbox "${sb.name}"`,
        );
      const mac = req.mac === undefined ? undefined : checkMac(req.mac);
      for (const [want, family] of [[req.ip, 4], [req.ip6, 6]] as const) {
        if (want === undefined) continue;
        if (!(family === 4 ? net.ipv4 : net.ipv6)) throw invalid(`network "${net.name}" has no IPv${family} subnet for address ${want}`, `network "${net.name}"`);
        if (IpAddr.parse(want).family !== family) throw invalid(`address ${want} is not IPv${family}`, `address "${want}"`);
      }
      const requests = req.ports ?? [];
      if (requests.length && net.internal)
        throw invalid(`network "${net.name}" is internal: it has no way in from outside, so ports cannot be published`, `network "${net.name}"`);
      const d = core.driver(net.driver);
      if (requests.length && !d.programExternalConnectivity)
        throw invalid(
          `network "${net.name}" is a ${net.driver} network: its endpoints are reached at their own address, and ports are not published (Docker ignores -p on ${net.driver} too)`,
          `network "${net.name}"`,
        );
      const ports = await choosePorts(core.state, await publishRequests(requests, publishTarget(core, net)));
      const id = newId();
      // The intent (with its ports) first; then the addresses, owned by the endpoint's id, so a
      // crash in between is undone by the reconcile (releaseOwned).
      const intent = core.state.unsynced(() => {
        for (const p of ports) checkPortFree(core.state, p);
        const mine = core.state.endpointsOfSandbox(sb.id);
        const prefix = d.ifacePrefix?.(net) ?? 'eth';
        let n = 0;
        while (mine.some((e) => e.ifname === `${prefix}${n}`)) n++;
        const provides = !net.internal && (net.ipv4?.gateway !== undefined || net.ipv6?.gateway !== undefined) && !mine.some((e) => e.gatewayProvider);
        const e: Endpoint = {
          id, name: sb.name, networkId: net.id, sandboxId: sb.id, state: 'creating', ipv4: undefined, ipv6: undefined,
          mac: mac ?? macFor(undefined, id), hostIfname: d.hostIfname?.({ id }), ifname: req.ifname ?? `${prefix}${n}`,
          aliases, ports, gatewayProvider: provides, sandboxKey: undefined, created: new Date().toISOString(),
        };
        core.state.insertEndpoint(e);
        return e;
      });
      failpoint('connect:intent');
      let ep: Endpoint;
      try {
        // Not durable on their own: the endpoint's 'ready' commit carries them to disk (Ipam.commit).
        const ipam = core.allocator(net);
        // A cluster's address names its host too: a host finds what it left allocated (a crash
        // before the endpoint was recorded) when it next joins (ClusterSync).
        const owner = core.isGlobal(net) ? addressOwner(clusterOf(core, `network "${net.name}"`).cluster, id) : id;
        const ipv4 = net.ipv4 ? await ipam.requestAddress(net.ipv4.poolId, { address: req.ip, owner, durable: false }) : undefined;
        const ipv6 = net.ipv6 ? await ipam.requestAddress(net.ipv6.poolId, { address: req.ip6, owner, durable: false }) : undefined;
        ep = { ...intent, ipv4, ipv6, mac: mac ?? macFor(ipv4?.value, id) };
        failpoint('connect:allocated');
        await transaction(async (t) => {
          const ns = Netns.atPath(sb.netns);
          await d.createEndpoint?.(net, ep, t);
          const a = await d.join(net, ep, { kind: 'sandbox', ns, ifname: ep.ifname }, t);
          failpoint('connect:joined');
          await configureInterface(ns, net, ep, a, { defaultRoute: ep.gatewayProvider });
          failpoint('connect:configured');
          if (ports.length) await d.programExternalConnectivity?.(net, ep, ports, t);
          failpoint('connect:published');
          await publishPeer(core, net, ep, t);
        });
      } catch (e) {
        await forgetEndpoint(core, net, intent);
        throw explain(e);
      }
      // The addresses are recorded with the 'ready' flip: until then they are found by their owner
      // (the endpoint's id), which is how the reconcile gives back those of an interrupted connect.
      // The flip is on disk before connect returns, through a group commit shared with the
      // connects running alongside (one fsync for a lab's LAN ports, not one each).
      core.state.unsynced(() => {
        core.state.setEndpointAddresses(id, ep.ipv4, ep.ipv6, ep.mac);
        core.state.setEndpointState(id, 'ready');
      });
      await core.state.synced();
      failpoint('connect:ready');
      const ready = { ...ep, state: 'ready' as const };
      core.events.emit('endpoint', 'up', ready, net, sb);
      return ready;
    }),
  );
}

export async function disconnect(core: Core, netRef: string, sbRef: string): Promise<void> {
  const net0 = readyNetwork(core, netRef);
  const sb0 = readySandbox(core, sbRef);
  await core.locks.shared(net0.id, () =>
    core.locks.exclusive(sb0.id, async () => {
      const net = readyNetwork(core, net0.id);
      const sb = readySandbox(core, sb0.id);
      const ep = core.state.endpointsOfSandbox(sb.id).find((e) => e.networkId === net.id);
      if (!ep) throw notFound(`sandbox "${sb.name}" is not connected to network "${net.name}"`, `sandbox "${sb.name}"`);
      // The other hosts first, while nothing here has changed: with the store unreachable the
      // disconnect is refused whole, never left with a peer record that outlives its endpoint.
      if (core.isGlobal(net)) await clusterOf(core, `network "${net.name}"`).cluster.peers.withdrawPeer(net.name, ep.id);
      // The successor of a default-route provider is recorded with the 'deleting' mark, so the
      // store names the provider at every point a crash can hit; the reconcile (re)adds the
      // route a provider lacks. Its route goes in only after the old interface (and route) is gone.
      const successor = ep.gatewayProvider ? gatewaySuccessor(core, sb, ep) : undefined;
      core.state.unsynced(() => {
        core.state.setEndpointState(ep.id, 'deleting');
        if (successor) core.state.setGatewayProvider(successor.id, true);
      });
      failpoint('disconnect:deleting');
      await teardownEndpoint(core, net, ep, { sandboxGoing: false });
      failpoint('disconnect:left');
      await forgetEndpoint(core, net, ep);
      failpoint('disconnect:forgotten');
      core.events.emit('endpoint', 'down', ep, net, sb);
      if (successor) await addDefaultRoutes(core, sb, successor);
      failpoint('disconnect:gateway-handed');
    }),
  );
}

/** The kernel side of an endpoint goes: its published ports, the driver's interface, the sandbox's. */
export async function teardownEndpoint(core: Core, net: Network, ep: Endpoint, how: { sandboxGoing: boolean }): Promise<void> {
  const d = core.driver(net.driver);
  if (core.isGlobal(net)) await withdrawPeer(core, net, ep);
  if (ep.ports.length) await d.revokeExternalConnectivity?.(net, ep, ep.ports);
  failpoint('endpoint:unpublished');
  await d.leave(net, ep, how);
  await d.deleteEndpoint?.(net, ep);
  const sb = ep.sandboxId ? core.state.sandbox(ep.sandboxId) : undefined;
  if (!how.sandboxGoing && sb?.kind === 'lab' && existsSync(sb.netns)) await removeInterface(Netns.atPath(sb.netns), ep.ifname);
}

/**
 * Drops an endpoint's row, and its addresses when they are tnet's to release. One fsync: the
 * release commits without one and the row's delete carries it (WAL commits reach the disk in
 * order); `durableLater`: the caller commits durably right after (a sandbox's delete) and this
 * takes none at all.
 */
export async function forgetEndpoint(core: Core, net: Network, ep: Endpoint, opts: { durableLater?: boolean } = {}): Promise<void> {
  // An engine's endpoint (no sandbox of tnet's) got its addresses from the IpamDriver face, which
  // gives them back when the engine says so (Docker's ReleaseAddress), as on its local networks.
  if (core.isGlobal(net)) {
    if (ep.sandboxId !== undefined) await releaseGlobalAddresses(core, net, ep);
  } else if (net.addresses === 'tnet') await core.ipam.releaseOwned(ep.id, { durable: false });
  if (opts.durableLater) core.state.unsynced(() => core.state.deleteEndpoint(ep.id));
  else core.state.tx(() => core.state.deleteEndpoint(ep.id));
}

/** The DNS names of a global network's endpoints on the other hosts (as this host's peer watch knows them). */
function remoteNames(core: Core, net: Network): { names: string[]; network: string; sandboxId: undefined }[] {
  if (!core.isGlobal(net)) return [];
  return (core.cluster()?.sync.remotePeers(net.name) ?? []).map((p) => ({ names: [p.name, ...(p.aliases ?? [])], network: net.name, sandboxId: undefined }));
}

/** Another host's endpoint on a global network whose sandbox has this name (any case). */
function remoteSandboxNamed(core: Core, net: Network, name: string) {
  if (!core.isGlobal(net)) return undefined;
  return core.cluster()?.sync.remotePeers(net.name).find((p) => p.name.toLowerCase() === name.toLowerCase());
}

/**
 * Publishes a local endpoint of a global network to the other hosts (its peer record, under this
 * host's lease), as the last step of its transaction: a failure undoes the endpoint.
 */
async function publishPeer(core: Core, net: Network, ep: Endpoint, t: Txn): Promise<void> {
  if (!core.isGlobal(net)) return;
  const { cluster } = clusterOf(core, `network "${net.name}"`);
  await t.step(
    `peer record of ${ep.name} on ${net.name}`,
    async () => void (await cluster.peers.publishPeer(peerOf(net, ep))),
    () => cluster.peers.withdrawPeer(net.name, ep.id),
  );
}

/**
 * Withdraws an endpoint's peer record. Unreachable store: logged, not fatal (the caller already
 * withdrew it when it could, as disconnect does; a record left is withdrawn when this host next
 * re-lists, and with its lease if this host dies).
 */
async function withdrawPeer(core: Core, net: Network, ep: Endpoint): Promise<void> {
  const c = core.cluster();
  if (!c) return;
  await c.cluster.peers.withdrawPeer(net.name, ep.id).catch((e: unknown) => {
    if (!isTnetError(e, 'unavailable')) throw e;
    log.warn({ network: net.name, endpoint: short(ep.id), err: (e as Error).message }, 'the peer record of an endpoint could not be withdrawn now');
  });
}

/**
 * Gives an endpoint's addresses back to the cluster: the ones it has, or (an interrupted
 * connect that never recorded them) whatever it owns. Already gone (the network's pools went
 * with it) is fine; with the store unreachable they are left to ClusterSync, which releases
 * what this host allocated for endpoints it does not have when it joins again.
 */
async function releaseGlobalAddresses(core: Core, net: Network, ep: Endpoint): Promise<void> {
  const c = core.cluster();
  const known = [[ep.ipv4, net.ipv4], [ep.ipv6, net.ipv6]] as const;
  try {
    if (!c) throw new TnetError('unavailable', 'the global store has not been reached yet');
    if (ep.ipv4 || ep.ipv6) {
      for (const [addr, ip] of known) {
        if (!addr || !ip) continue;
        await c.cluster.ipam.releaseAddress(ip.poolId, addr.toString()).catch((e: unknown) => {
          if (!isTnetError(e, 'not-found')) throw e;
        });
      }
    } else await c.cluster.ipam.releaseOwned(addressOwner(c.cluster, ep.id));
  } catch (e) {
    if (!isTnetError(e, 'unavailable')) throw e;
    log.info({ network: net.name, endpoint: short(ep.id), err: (e as Error).message }, 'the addresses of a removed endpoint are released when this host next joins the cluster');
  }
}

/** The gateways through which an endpoint on `net` would supply its sandbox's default routes. */
export function gatewaysOf(net: Network): IpAddr[] {
  if (net.internal) return [];
  return [net.ipv4?.gateway, net.ipv6?.gateway].filter((g): g is IpAddr => g !== undefined);
}

/**
 * The rule that names the endpoint supplying a sandbox's default routes, derivable from the store
 * alone: the one flagged, if it is still eligible (ready, on a non-internal network with a
 * gateway); else the first eligible endpoint in interface order. `leaving`: an endpoint about to go.
 */
export function gatewayProviderOf(core: Core, sb: Sandbox, leaving?: Endpoint): Endpoint | undefined {
  const eligible = core.state
    .endpointsOfSandbox(sb.id)
    .filter((e) => e.id !== leaving?.id && e.state === 'ready' && gatewaysOf(core.state.network(e.networkId)!).length > 0);
  return eligible.find((e) => e.gatewayProvider) ?? eligible[0];
}

/** Who takes over the default routes when `leaving` (their provider) goes. */
function gatewaySuccessor(core: Core, sb: Sandbox, leaving: Endpoint): Endpoint | undefined {
  return gatewayProviderOf(core, sb, leaving);
}

/** The default routes through `ep`'s network's gateways, in its sandbox (kept if already there). */
async function addDefaultRoutes(core: Core, sb: Sandbox, ep: Endpoint): Promise<void> {
  const gws = gatewaysOf(core.state.network(ep.networkId)!);
  await withRtnl(Netns.atPath(sb.netns), async (h) => {
    const link = await linkByName(h, ep.ifname);
    if (!link) return; // the reconcile remakes the interface with its routes
    for (const g of gws) {
      await routeAdd(h, { gateway: g.toString(), oif: link.index, onlink: true }).catch((e: unknown) => {
        if (!isErrno(e, 'EEXIST')) throw e;
      });
    }
  });
}

/**
 * Records an endpoint whose addresses another IPAM chose and whose sandbox another engine owns
 * (Docker's CreateEndpoint). No kernel work until join. Written 'ready' at once and without an
 * fsync (State.unsynced): the engine keeps its own record, so the reconcile never releases
 * what it still holds. A retried call for the same endpoint returns it unchanged.
 */
export async function createEndpoint(core: Core, netRef: string, req: EndpointRequest): Promise<Endpoint> {
  const net = readyNetwork(core, netRef);
  if (!DOCKER_ID.test(req.id)) throw invalid(`endpoint ID ${JSON.stringify(req.id)} is not 64 lowercase hex digits`, `endpoint ${String(req.id)}`);
  return core.locks.shared(net.id, async () => {
    for (const [a, ip, family] of [[req.ipv4, net.ipv4, 4], [req.ipv6, net.ipv6, 6]] as const) {
      if (!a) continue;
      if (a.family !== family) throw invalid(`address ${a} is not IPv${family}`, `endpoint ${short(req.id)}`);
      if (!ip) throw invalid(`network ${short(net.id)} has no IPv${family} subnet for ${a}`, `endpoint ${short(req.id)}`);
      if (!ip.subnet.contains(a)) throw invalid(`address ${a} is not in the network's subnet ${ip.subnet}`, `endpoint ${short(req.id)}`);
    }
    const mac = req.mac === undefined ? undefined : checkMac(req.mac);
    const existing = core.state.endpoint(req.id);
    if (existing) {
      if (existing.networkId !== net.id) throw conflict(`endpoint ${short(req.id)} already exists on another network`, `endpoint ${short(req.id)}`);
      return existing;
    }
    const ep: Endpoint = {
      id: req.id, name: req.name ?? short(req.id), networkId: net.id, sandboxId: undefined, state: 'ready', ipv4: req.ipv4, ipv6: req.ipv6,
      mac: mac ?? macFor(req.ipv4?.value, req.id), hostIfname: core.driver(net.driver).hostIfname?.({ id: req.id }), ifname: 'eth',
      aliases: [], ports: [], gatewayProvider: false, sandboxKey: undefined, created: new Date().toISOString(),
    };
    try {
      core.state.unsynced(() => core.state.insertEndpoint(ep));
    } catch (e) {
      if (/UNIQUE constraint failed: endpoints.host_ifname/.test(String(e)))
        throw conflict(`endpoint ${short(req.id)}: another endpoint has the same 12-digit ID prefix`, `endpoint ${short(req.id)}`);
      throw e;
    }
    try {
      await transaction(async (t) => {
        await core.driver(net.driver).createEndpoint?.(net, ep, t);
        await publishPeer(core, net, ep, t);
      });
    } catch (e) {
      core.state.tx(() => core.state.deleteEndpoint(ep.id));
      throw explain(e);
    }
    core.events.emit('endpoint', 'up', ep, net, undefined);
    return ep;
  });
}

/**
 * An engine's endpoint gets the names its engine knows it by (Docker's container name and
 * network aliases, which a plugin is never told and learns from the engine's API after Join):
 * recorded, given to this host's DNS, and on a global network published to the other hosts.
 */
export async function nameEndpoint(core: Core, netRef: string, id: string, name: string, aliases: readonly string[]): Promise<Endpoint> {
  const net = readyNetwork(core, netRef);
  const cur = endpointOf(core, net, id);
  if (cur.sandboxId !== undefined) throw invalid(`endpoint ${short(id)} belongs to sandbox ${cur.name}: its names are the sandbox's`, `endpoint ${short(id)}`);
  const names = [name, ...aliases].map(checkAlias);
  return core.locks.shared(net.id, async () => {
    core.state.tx(() => core.state.setEndpointNames(id, names[0]!, names.slice(1)));
    const ep = endpointOf(core, net, id);
    if (core.isGlobal(net)) await clusterOf(core, `network "${net.name}"`).cluster.peers.publishPeer(peerOf(net, ep));
    core.events.emit('endpoint', 'up', ep, net, undefined);
    return ep;
  });
}

/** The endpoint of a network, or a not-found error naming both. */
function endpointOf(core: Core, net: Network, id: string): Endpoint {
  const e = core.state.endpoint(id);
  if (!e || e.networkId !== net.id)
    throw notFound(`endpoint ${short(id)} does not exist on network ${short(net.id)} (unknown EndpointID ${id})`, `endpoint ${short(id)}`);
  return e;
}

export async function deleteEndpoint(core: Core, netRef: string, id: string): Promise<void> {
  const net = readyNetwork(core, netRef);
  const ep = endpointOf(core, net, id);
  await core.locks.shared(net.id, async () => {
    await teardownEndpoint(core, net, ep, { sandboxGoing: false });
    await forgetEndpoint(core, net, ep);
    core.events.emit('endpoint', 'down', ep, net, undefined);
  });
}

/**
 * Makes the endpoint's interface and leaves it in the host namespace for the engine to move
 * (Docker's Join into `sandboxKey`, recorded: see releaseStale). A retried join (its answer was
 * lost) gets a fresh interface.
 */
export async function join(core: Core, netRef: string, id: string, sandboxKey?: string): Promise<Attachment> {
  const net = readyNetwork(core, netRef);
  const ep = endpointOf(core, net, id);
  const d = core.driver(net.driver);
  const target: JoinTarget = { kind: 'handoff' };
  return core.locks.shared(net.id, async () => {
    let a: Attachment;
    try {
      a = await transaction((t) => d.join(net, ep, target, t));
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw explain(e);
      await d.leave(net, ep, { sandboxGoing: false });
      a = await transaction((t) => d.join(net, ep, target, t)).catch((e2: unknown) => {
        throw explain(e2);
      });
    }
    core.state.unsynced(() => core.state.setSandboxKey(ep.id, sandboxKey));
    return a;
  });
}

export async function leave(core: Core, netRef: string, id: string): Promise<void> {
  const net = readyNetwork(core, netRef);
  const ep = endpointOf(core, net, id);
  await core.locks.shared(net.id, async () => {
    await core.driver(net.driver).leave(net, ep, { sandboxGoing: false });
    core.state.unsynced(() => core.state.setSandboxKey(ep.id, undefined));
  });
}

/**
 * An engine's endpoint is stale when the engine let it go while tnet could not hear it (dockerd
 * retries a missing plugin, then reports success). Never within `graceMs` of its creation: a
 * container still starting has joined a namespace that does not exist yet (dockerd's SandboxKey
 * is made by runc's hook when the container's process starts) or has no process yet. After that:
 * - no process lives in the namespace it joined, or that namespace is gone (the container went,
 *   stopped or was made anew; dockerd leaves the file behind when it cannot tear the sandbox down);
 * - it has no sandbox key and no interface of the driver's (it never joined; or it joined before
 *   tnet recorded keys and its container took the interface with it). A driver that cannot tell
 *   keeps such an endpoint.
 */
async function isStale(core: Core, net: Network, ep: Endpoint, graceMs: number): Promise<boolean> {
  if (ep.sandboxId !== undefined || ep.state !== 'ready') return false;
  if (Date.now() - Date.parse(ep.created) <= graceMs) return false;
  if (ep.sandboxKey !== undefined) return !netnsInUse(ep.sandboxKey);
  return !((await core.driver(net.driver).endpointIntact?.(net, ep)) ?? true);
}

/**
 * Releases what stale endpoints of `owner`'s networks hold: their published ports, their
 * interfaces, their rows, and the addresses tnet's IpamDriver gave them (unless a live endpoint
 * of the network has the address meanwhile). Returns the endpoints released.
 */
export async function releaseStale(core: Core, owner: Owner, graceMs: number): Promise<Endpoint[]> {
  const released: Endpoint[] = [];
  for (const net of core.state.networks()) {
    // A global network is nobody's on this host, but Docker's endpoints on it are dockerd's.
    if ((net.owner !== owner && !(owner === 'docker' && core.isGlobal(net))) || net.state !== 'ready') continue;
    const eps = core.state.endpointsOfNetwork(net.id);
    const stale: Endpoint[] = [];
    for (const e of eps) if (await isStale(core, net, e, graceMs)) stale.push(e);
    if (stale.length === 0) continue;
    const live = eps.filter((e) => !stale.includes(e));
    await core.locks.shared(net.id, async () => {
      for (const ep of stale) {
        log.warn({ network: net.name, endpoint: short(ep.id), sandbox: ep.sandboxKey ?? '(never joined)' }, 'releasing a stale endpoint its engine let go');
        await teardownEndpoint(core, net, ep, { sandboxGoing: false });
        if (core.isGlobal(net)) {
          await releaseGlobalAddresses(core, net, ep); // dockerd will not: it gave up
        } else {
          for (const [addr, ip] of [[ep.ipv4, net.ipv4], [ep.ipv6, net.ipv6]] as const) {
            if (!addr || !ip || live.some((e) => e.ipv4?.equals(addr) || e.ipv6?.equals(addr))) continue;
            const pool = await core.ipam.getPool(ip.poolId);
            if (!pool.shared) continue; // a reserved subnet: the engine's own IPAM holds its addresses
            await core.ipam.releaseAddress(ip.poolId, addr.toString()).catch((e: unknown) => {
              if (!isTnetError(e, 'not-found')) throw e;
            });
          }
        }
        core.state.tx(() => core.state.deleteEndpoint(ep.id));
        core.events.emit('endpoint', 'down', ep, net, undefined);
        released.push(ep);
      }
    });
  }
  return released;
}

/** Publishes host ports to a joined endpoint (Docker's ProgramExternalConnectivity); once per endpoint. */
export async function publishPorts(core: Core, netRef: string, id: string, requests: readonly PortRequest[]): Promise<readonly PortMapping[]> {
  const net = readyNetwork(core, netRef);
  const ep0 = endpointOf(core, net, id);
  if (net.internal || requests.length === 0 || ep0.ports.length > 0) return ep0.ports;
  const d = core.driver(net.driver);
  if (!d.programExternalConnectivity) {
    // Docker's own macvlan driver logs this and the container starts; no host port is reserved.
    log.warn({ network: net.name, endpoint: short(ep0.id), driver: net.driver }, `${net.driver} driver does not support port mappings`);
    return [];
  }
  return core.locks.shared(net.id, async () => {
    const ports = await choosePorts(core.state, await publishRequests(requests, publishTarget(core, net)));
    const ep = core.state.tx(() => {
      const cur = endpointOf(core, net, ep0.id);
      if (cur.ports.length > 0) return undefined; // programmed by a concurrent call
      for (const p of ports) checkPortFree(core.state, p);
      for (const p of ports) core.state.insertPort(cur.id, p);
      return { ...cur, ports };
    });
    if (!ep) return endpointOf(core, net, ep0.id).ports;
    try {
      await transaction((t) => d.programExternalConnectivity!(net, ep, ports, t));
    } catch (e) {
      core.state.deletePorts(ep.id);
      throw explain(e);
    }
    return ports;
  });
}

export async function unpublishPorts(core: Core, netRef: string, id: string): Promise<void> {
  const net = readyNetwork(core, netRef);
  const ep = endpointOf(core, net, id);
  if (ep.ports.length === 0) return;
  await core.locks.shared(net.id, async () => {
    await core.driver(net.driver).revokeExternalConnectivity?.(net, ep, ep.ports);
    core.state.deletePorts(ep.id);
  });
}
