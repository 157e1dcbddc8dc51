import { EventEmitter } from 'node:events';
import { builtinDrivers } from '../drivers/index.js';
import { type Attachment, type Driver, type DriverContext, type DriverFactory, DriverRegistry, type Tags } from './driverapi.js';
import { type ControllerEvents, type Core, readyNetwork, readySandbox } from './core.js';
import {
  type ConnectRequest, type EndpointRequest, connect, createEndpoint, deleteEndpoint, disconnect, join, leave, nameEndpoint,
  publishPorts, releaseStale, unpublishPorts,
} from './endpoint.js';
import { busy, conflict, invalid } from './errors.js';
import { Cluster, ClusterSync, type Peer } from './cluster.js';
import { clusterOf, mirrorGlobalNetwork, unmirrorGlobalNetwork } from './global-network.js';
import type { GlobalStore } from './store/global.js';
import { hostRoutes } from './hostroutes.js';
import type { IpAddr } from './ipam/address.js';
import { type Allocator, LocalAllocator } from './ipam/allocator.js';
import { type Allocation, Ipam, type Pool, type PoolRequest } from './ipam/ipam.js';
import type { Subnet } from './ipam/subnet.js';
import { Nft, Rtnl } from './kernel/index.js';
import { KeyedLock } from './lock.js';
import { log } from './log.js';
import type { Endpoint, Network, Owner, PortMapping, PortRequest, Sandbox } from './model.js';
import { type NetworkRequest, createNetwork, deleteNetwork } from './network.js';
import { createSandbox, deleteSandbox, writeResolvConf } from './sandbox.js';
import { type Db, openDb, stateDir as defaultStateDir } from './store/db.js';
import { type StateLock, lockStateDir } from './store/lock.js';
import { anyOrphans, findOrphans, orphansError, readMarker, removeOrphans, writeMarker } from './orphans.js';
import { State, migrations as coreMigrations } from './store/state.js';
import { reconcile } from './reconcile.js';
import { type DnsListeners, type Finding, diagnose } from './doctor.js';
import {
  type LabApplyOptions, type LabApplyResult, type LabContext, type LabDetails, type LabSummary, applyLab, destroyLab, labDetails, labNodeNetns, labs,
} from './lab/apply.js';
import type { LabSpec } from './lab/topology.js';
import { reconcileWires } from './wire.js';

export type { ConnectRequest, EndpointRequest } from './endpoint.js';

/** How long after its creation an engine's endpoint is spared from counting as stale (a container's start takes seconds). */
export const STALE_GRACE_MS = 60_000;
export type { NetworkRequest, SubnetRequest } from './network.js';
export type { ControllerEvents } from './core.js';

export interface ControllerOptions {
  readonly stateDir?: string;
  /** Where lab sandboxes' resolv.conf goes (ip netns exec reads /etc/netns/NAME/). */
  readonly etcNetns?: string;
  /**
   * What this instance's host-wide kernel names carry (namespaces `tn-SCOPE-NAME`, nft table
   * `tnet-SCOPE`), so several instances share a host. Fixed when the state directory is made:
   * default the instance's id; `''` for the host's own instance (the daemon), whose names are
   * `tn-NAME` and `tnet`. Opening existing state with another scope is refused.
   */
  readonly scope?: string;
  /** The drivers this controller can use (default: the built-ins). */
  readonly drivers?: readonly DriverFactory[];
  /** Subnets an auto-chosen pool never takes, besides the host's routes (a VPN's, a range kept for later). */
  readonly avoid?: readonly Subnet[];
  /** How long after its creation an engine's endpoint can count as stale (releaseStale); default STALE_GRACE_MS. */
  readonly staleGraceMs?: number;
  /**
   * An empty state next to kernel objects an earlier instance of the state directory made (its
   * database lost): 'refuse' (default) stops with what was found; 'remove' removes them first
   * (orphans.ts).
   */
  readonly orphans?: 'refuse' | 'remove';
  /**
   * This host's tunnel endpoint, for a host that is part of a cluster (`--advertise-addr`): the
   * global-scope drivers' data plane is restored with it at once; the global store itself is
   * joined later (joinCluster), when it can be reached.
   */
  readonly vtep?: IpAddr;
}


/**
 * The one entry point of the core and the only writer of CNM state: networks, sandboxes and the
 * endpoints that join them, for every face. Each operation records its intent, does the kernel
 * work as undoable steps, then commits (network.ts, sandbox.ts, endpoint.ts). Faces call these
 * verbs and queries; the store, the allocator, the locks and the kernel handles stay inside.
 */
export class Controller extends EventEmitter<ControllerEvents> {
  readonly stateDir: string;
  private readonly state: State;
  private readonly ipam: Allocator;
  private readonly rtnl: Rtnl;
  private readonly nft: Nft;
  private readonly registry: DriverRegistry;
  private readonly drivers = new Map<string, Driver>();
  /** What the operations on each object share; never handed out. */
  private readonly core: Core;
  private readonly staleGraceMs: number;
  readonly tags: Tags;
  /** One process per state directory (store/lock.ts). */
  private readonly lock: StateLock;
  /** The state had no instance yet: new, or lost (see open). */
  private readonly fresh: boolean;
  private readonly vtep: IpAddr | undefined;
  private joined: { readonly cluster: Cluster; readonly sync: ClusterSync } | undefined;

  private constructor(dir: string, opts: ControllerOptions) {
    super();
    this.stateDir = dir;
    this.lock = lockStateDir(dir);
    let db: Db | undefined;
    try {
      db = openDb(dir, coreMigrations);
      this.fresh = db.prepare('SELECT id FROM instance').get() === undefined;
      this.state = new State(db, { scope: opts.scope });
    } catch (e) {
      db?.close(); // a scope refused: nothing else is open yet
      this.lock.release();
      throw e;
    }
    this.ipam = new LocalAllocator(new Ipam(db, { ulaSeed: this.state.instance }));
    this.rtnl = Rtnl.open();
    this.nft = Nft.open();
    const prefix = `tnet:${this.state.instance}:`;
    this.tags = {
      prefix,
      of: (kind, id, part) => `${prefix}${kind}:${id}${part ? `/${part}` : ''}`,
      owner: (tag) => tag.replace(/\/[^/:]*$/, ''),
      mine: (tag) => tag?.startsWith(prefix) ?? false,
    };
    this.vtep = opts.vtep;
    this.registry = new DriverRegistry(opts.drivers ?? builtinDrivers);
    for (const type of this.registry.types()) this.drivers.set(type, this.registry.factory(type).create(this.driverContext(type)));
    const avoid = opts.avoid ?? [];
    this.staleGraceMs = opts.staleGraceMs ?? STALE_GRACE_MS;
    this.core = {
      state: this.state, ipam: this.ipam, locks: new KeyedLock(), rtnl: this.rtnl, scope: this.state.scope, tags: this.tags,
      etcNetns: opts.etcNetns ?? '/etc/netns', registry: this.registry, driver: (type) => this.driver(type),
      taken: async () => [...(await hostRoutes(this.rtnl)), ...avoid, ...this.globalSubnets()], events: this,
      vtep: this.vtep,
      cluster: () => this.joined,
      isGlobal: (net) => this.registry.has(net.driver) && this.registry.factory(net.driver).scope === 'global',
      allocator: (net) => (this.core.isGlobal(net) ? clusterOf(this.core, `network "${net.name}"`).cluster.ipam : this.ipam),
    };
  }

  /** Opens the state under `stateDir` and reconciles the kernel with it. */
  static async open(opts: ControllerOptions = {}): Promise<Controller> {
    const c = new Controller(defaultStateDir(opts.stateDir), opts);
    try {
      await c.checkOrphans(opts.orphans ?? 'refuse');
      await c.reconcile();
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  /**
   * A state without an instance (new, or its database lost) must not start next to what the
   * directory's earlier instance made: nothing would ever remove those objects. Found ones are
   * refused (the instance just made is dropped again, so the next start checks anew) or removed.
   */
  private async checkOrphans(mode: 'refuse' | 'remove'): Promise<void> {
    const previous = readMarker(this.stateDir);
    if (this.fresh) {
      const found = await findOrphans(this.rtnl, this.nft, this.state.scope, previous);
      if (anyOrphans(found)) {
        if (mode === 'refuse') {
          this.state.tx(() => this.state.db.prepare('DELETE FROM instance').run());
          throw orphansError(this.stateDir, found);
        }
        await removeOrphans(this.rtnl, this.nft, found);
      }
    }
    if (previous?.instance !== this.state.instance) writeMarker(this.stateDir, { instance: this.state.instance, scope: this.state.scope });
  }

  /** The subnets of the global networks mirrored here: a local network's auto-chosen pool avoids them. */
  private globalSubnets(): Subnet[] {
    return this.state.networks().filter((n) => this.core.isGlobal(n)).flatMap((n) => [n.ipv4?.subnet, n.ipv6?.subnet].filter((s): s is Subnet => s !== undefined));
  }

  /**
   * Joins the cluster of `store`: publishes this host's VTEP (refused 'conflict' when another
   * live host advertises it), then mirrors the global networks and follows their peers; resolves
   * once the store's networks are mirrored here. Needs `vtep` (ControllerOptions).
   */
  async joinCluster(store: GlobalStore): Promise<void> {
    if (!this.vtep) throw invalid('joining a cluster needs this host\'s tunnel endpoint (--advertise-addr)', 'store');
    if (this.joined) throw conflict(`this controller has joined the cluster of ${this.joined.cluster.store.endpoint} already`, 'store');
    const cluster = await Cluster.join(store, { instance: this.instance, vtep: this.vtep });
    const sync = new ClusterSync(this.core, cluster, {
      add: (g) => mirrorGlobalNetwork(this.core, g),
      remove: (name) => unmirrorGlobalNetwork(this.core, name),
    });
    this.joined = { cluster, sync };
    sync.start();
    await sync.ready;
  }

  /** The cluster's view for faces: its store, this host's name and VTEP, and the remote peers of a global network. */
  get cluster(): { readonly endpoint: string; readonly host: string; readonly vtep: string; remotePeers(network: string): Peer[] } | undefined {
    const j = this.joined;
    if (!j) return undefined;
    return { endpoint: j.cluster.store.endpoint, host: j.cluster.host, vtep: j.cluster.vtep.toString(), remotePeers: (n) => j.sync.remotePeers(n) };
  }

  /** Stops following the cluster (the store itself is its opener's to close). */
  async leaveCluster(): Promise<void> {
    const j = this.joined;
    this.joined = undefined;
    await j?.sync.close();
  }

  close(): void {
    void this.leaveCluster();
    for (const d of this.drivers.values()) d.close?.();
    this.rtnl.close();
    this.nft.close();
    this.state.close();
    this.lock.release();
  }

  /** This instance's id (the `tnet:<id>:` tag on everything it makes). */
  get instance(): string {
    return this.state.instance;
  }

  /** What this instance's host-wide kernel names carry ('' = none). */
  get scope(): string {
    return this.state.scope;
  }

  /** The driver types this controller can use. */
  driverTypes(): string[] {
    return this.registry.types();
  }

  private driverContext(type: string): DriverContext {
    const state = this.state;
    return {
      rtnl: this.rtnl,
      nft: this.nft,
      tags: this.tags,
      scope: this.state.scope,
      store: {
        get: async (key) => state.kvGet(type, key),
        put: async (key, value) => state.kvPut(type, key, value),
        delete: async (key) => state.kvDelete(type, key),
        list: async (prefix) => state.kvList(type, prefix),
      },
      networks: () => state.networks().filter((n) => n.driver === type),
      log: log.child({ driver: type }),
      vtep: this.vtep,
    };
  }

  private driver(type: string): Driver {
    const d = this.drivers.get(type);
    if (!d) throw invalid(`driver "${type}" is not supported; supported drivers are ${this.registry.types().join(', ')}`, `driver "${type}"`);
    return d;
  }

  // ---------------------------------------------------------------- queries

  /** A ready network by id, name or id prefix (`owner` narrows the name); 'not-found' otherwise. */
  network(ref: string, owner?: Owner): Network {
    return readyNetwork(this.core, ref, owner);
  }

  /** A network in any state (a face checking a retried call), or undefined. */
  findNetwork(ref: string, owner?: Owner): Network | undefined {
    return this.state.findNetwork(ref, owner);
  }

  networks(filter: { owner?: Owner } = {}): Network[] {
    return this.state.networks().filter((n) => n.state !== 'creating' && (filter.owner === undefined || n.owner === filter.owner));
  }

  /** The name prefix of an endpoint's interface inside a sandbox on this network (eth unless the driver says otherwise). */
  ifacePrefix(net: Network): string {
    return this.driver(net.driver).ifacePrefix?.(net) ?? 'eth';
  }

  /** What the network's driver shows beyond the core's fields (a bridge's name). */
  networkDetails(net: Network): Readonly<Record<string, string>> {
    return { scope: this.core.isGlobal(net) ? 'global' : 'local', ...this.driver(net.driver).inspect?.(net) };
  }

  sandbox(ref: string, owner?: Owner): Sandbox {
    return readySandbox(this.core, ref, owner);
  }

  sandboxes(filter: { owner?: Owner } = {}): Sandbox[] {
    return this.state.sandboxes().filter((s) => s.state !== 'creating' && (filter.owner === undefined || s.owner === filter.owner));
  }

  /** Ready endpoints. */
  endpoints(): Endpoint[] {
    return this.state.endpoints().filter((e) => e.state === 'ready');
  }

  /** An endpoint in any state, or undefined. */
  findEndpoint(id: string): Endpoint | undefined {
    return this.state.endpoint(id);
  }

  endpointsOfNetwork(networkId: string): Endpoint[] {
    return this.state.endpointsOfNetwork(networkId);
  }

  endpointsOfSandbox(sandboxId: string): Endpoint[] {
    return this.state.endpointsOfSandbox(sandboxId);
  }

  /** The name of a network or sandbox by id, for views (undefined if it is gone). */
  nameOf(kind: 'network' | 'sandbox', id: string): string | undefined {
    return kind === 'network' ? this.state.network(id)?.name : this.state.sandbox(id)?.name;
  }

  // ---------------------------------------------------------------- networks (network.ts)

  createNetwork(req: NetworkRequest): Promise<Network> {
    return createNetwork(this.core, req);
  }

  /**
   * Deletes a network. `owner`: the face acting (a network is deleted only by its owner's face).
   * `removeEndpoints`: endpoints still on it go with it (dockerd removes its endpoints first, so
   * any left are stale); otherwise they make it busy.
   */
  deleteNetwork(ref: string, opts: { owner?: Owner; removeEndpoints?: boolean } = {}): Promise<void> {
    return deleteNetwork(this.core, ref, opts);
  }

  // ---------------------------------------------------------------- sandboxes (sandbox.ts)

  createSandbox(req: { name: string; owner?: Owner }): Promise<Sandbox> {
    return createSandbox(this.core, req);
  }

  deleteSandbox(ref: string, opts: { owner?: Owner } = {}): Promise<void> {
    return deleteSandbox(this.core, ref, opts);
  }

  /** Writes the sandbox's resolv.conf (read by `ip netns exec` and `tnet exec`). */
  writeResolvConf(sb: Sandbox, content: string): void {
    writeResolvConf(this.core, sb, content);
  }

  // ---------------------------------------------------------------- endpoints (endpoint.ts)

  /** Creates an endpoint on the network and joins it to the sandbox: its interface, addresses, routes and ports. */
  connect(netRef: string, sbRef: string, req: ConnectRequest = {}): Promise<Endpoint> {
    return connect(this.core, netRef, sbRef, req);
  }

  disconnect(netRef: string, sbRef: string): Promise<void> {
    return disconnect(this.core, netRef, sbRef);
  }

  /** Records an endpoint whose addresses another IPAM chose and whose sandbox another engine owns (Docker's CreateEndpoint). */
  createEndpoint(netRef: string, req: EndpointRequest): Promise<Endpoint> {
    return createEndpoint(this.core, netRef, req);
  }

  deleteEndpoint(netRef: string, id: string): Promise<void> {
    return deleteEndpoint(this.core, netRef, id);
  }

  /** The names an engine knows its endpoint by (Docker's container name, learned after Join): DNS here and on the other hosts. */
  nameEndpoint(netRef: string, id: string, name: string, aliases: readonly string[] = []): Promise<Endpoint> {
    return nameEndpoint(this.core, netRef, id, name, aliases);
  }

  /** Makes the endpoint's interface and leaves it in the host namespace for the engine to move (Docker's Join into `sandboxKey`). */
  join(netRef: string, id: string, sandboxKey?: string): Promise<Attachment> {
    return join(this.core, netRef, id, sandboxKey);
  }

  leave(netRef: string, id: string): Promise<void> {
    return leave(this.core, netRef, id);
  }

  /** Publishes host ports to a joined endpoint (Docker's ProgramExternalConnectivity); once per endpoint. */
  publishPorts(netRef: string, id: string, requests: readonly PortRequest[]): Promise<readonly PortMapping[]> {
    return publishPorts(this.core, netRef, id, requests);
  }

  unpublishPorts(netRef: string, id: string): Promise<void> {
    return unpublishPorts(this.core, netRef, id);
  }

  /**
   * Releases the endpoints of `owner`'s networks that their engine let go while tnet could not
   * hear it (their sandbox is gone, or they never joined one within `graceMs`): their ports,
   * interfaces and the addresses tnet's IpamDriver gave them. Returns the endpoints released.
   */
  releaseStale(owner: Owner, opts: { graceMs?: number } = {}): Promise<Endpoint[]> {
    return releaseStale(this.core, owner, opts.graceMs ?? this.staleGraceMs);
  }

  // ---------------------------------------------------------------- address pools for an IPAM face

  /** A pool for another engine's networks (Docker's RequestPool); an auto-chosen one avoids the host's routes. */
  async requestPool(req: PoolRequest): Promise<Pool> {
    const avoid = req.subnet ? [] : await this.core.taken();
    return this.ipam.requestPool({ ...req, avoid });
  }

  releasePool(poolId: string): Promise<number> {
    return this.ipam.releasePool(poolId);
  }

  pool(poolId: string): Promise<Pool> {
    return this.ipam.getPool(poolId);
  }

  requestAddress(poolId: string, opts: { address?: string; owner?: string } = {}): Promise<IpAddr> {
    return this.ipam.requestAddress(poolId, opts);
  }

  releaseAddress(poolId: string, address: string): Promise<void> {
    return this.ipam.releaseAddress(poolId, address);
  }

  pools(): Promise<Pool[]> {
    return this.ipam.listPools();
  }

  /** Every address of the pool that is not free, with why and for whom. */
  addressesOf(poolId: string): Promise<Allocation[]> {
    return this.ipam.listAddresses(poolId);
  }

  // ---------------------------------------------------------------- addresses of a global network for an IPAM face

  /**
   * The cluster's allocator behind a pool of a global network, for an IPAM face that hands the
   * addresses to another engine (Docker's IpamDriver on a tnet overlay): unique across hosts.
   */
  private globalPool(netRef: string, poolId: string): Allocator {
    const net = readyNetwork(this.core, netRef, '');
    if (!this.core.isGlobal(net)) throw invalid(`network "${net.name}" is not a global network`, `network "${net.name}"`);
    if (net.ipv4?.poolId !== poolId && net.ipv6?.poolId !== poolId) throw invalid(`pool ${poolId} is not a pool of network "${net.name}"`, `pool "${poolId}"`);
    return this.core.allocator(net);
  }

  requestGlobalAddress(netRef: string, poolId: string, opts: { address?: string; owner?: string } = {}): Promise<IpAddr> {
    return this.globalPool(netRef, poolId).requestAddress(poolId, opts);
  }

  releaseGlobalAddress(netRef: string, poolId: string, address: string): Promise<void> {
    return this.globalPool(netRef, poolId).releaseAddress(poolId, address);
  }

  globalAddressesOf(netRef: string, poolId: string): Promise<Allocation[]> {
    return this.globalPool(netRef, poolId).listAddresses(poolId);
  }

  // ---------------------------------------------------------------- labs (lab/apply.ts, wire.ts)

  private get labContext(): LabContext {
    return { core: this.core, controller: this };
  }

  /**
   * Creates lab `spec.name`, or applies the difference to the running lab of that name; returns
   * when every link is up and every node's `exec:` has run.
   */
  applyLab(spec: LabSpec, opts: LabApplyOptions = {}): Promise<LabApplyResult> {
    return applyLab(this.labContext, spec, opts);
  }

  /** Removes everything the lab owns (no spec needed); also its `run:` processes. Idempotent. */
  destroyLab(name: string): Promise<{ removed: number }> {
    return destroyLab(this.labContext, name);
  }

  labs(): LabSummary[] {
    return labs(this.labContext);
  }

  labDetails(name: string): LabDetails {
    return labDetails(this.labContext, name);
  }

  /** The namespace name of a lab's node (for `ip netns exec`). */
  labNodeNetns(lab: string, node: string): string {
    return labNodeNetns(this.labContext, lab, node);
  }

  // ---------------------------------------------------------------- reconcile

  /**
   * Makes the kernel match the store after a restart or a crash: finishes nothing half-made
   * (records still 'creating' or 'deleting' are undone), rebuilds what is wanted and missing,
   * removes what this instance tagged and no longer wants, touches nothing else.
   */
  async reconcile(): Promise<void> {
    await reconcile(this.core, this.drivers);
    await reconcileWires(this.core);
  }

  // ---------------------------------------------------------------- doctor (doctor.ts)

  /** Every difference between the store and the kernel, in plain words; empty when they match. */
  diagnose(): Promise<Finding[]> {
    return diagnose({ core: this.core, drivers: this.drivers, tags: this.tags, dns: this.dnsListeners });
  }

  private dnsListeners: (() => DnsListeners) | undefined;

  /** The DNS service serving this controller's sandboxes reports its listeners here, for the doctor. */
  reportDnsListeners(status: () => DnsListeners): void {
    this.dnsListeners = status;
  }

  /** Repairs what the reconcile at a start would, without a restart; returns what was found before and what is left. */
  async repair(): Promise<{ found: Finding[]; left: Finding[] }> {
    const found = await this.diagnose();
    // The firewall rebuild would race an operation in flight (its rules are written before its
    // record is ready): repair between operations.
    const inFlight = found.filter((f) => f.problem === 'interrupted').length;
    if (inFlight) throw busy(`${inFlight} operation(s) are in flight; run the repair again when they have finished`, 'doctor --repair');
    if (found.length) {
      await reconcile(this.core, this.drivers, { live: true });
      // What follows the networks (the DNS service) looks again at what a driver made anew.
      for (const n of this.networks()) if (n.state === 'ready') this.emit('network', 'up', n);
    }
    return { found, left: found.length ? await this.diagnose() : [] };
  }
}
