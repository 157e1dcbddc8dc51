import { EventEmitter } from 'node:events';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { DEFAULT_DRIVER, builtinDrivers } from '../drivers/index.js';
import {
  type Attachment, type Driver, type DriverContext, type DriverFactory, DriverRegistry, type JoinTarget, type Tags, expandOptions,
} from './driverapi.js';
import { TnetError, busy, conflict, invalid, isTnetError, notFound } from './errors.js';
import { hostRoutes } from './hostroutes.js';
import { IpAddr } from './ipam/address.js';
import { type Allocator, LocalAllocator } from './ipam/allocator.js';
import { type Allocation, Ipam, type Pool, type PoolRequest } from './ipam/ipam.js';
import { Subnet } from './ipam/subnet.js';
import { KernelError, Netns, Nft, Rtnl, isErrno, linkByName, linkSetUp, netnsAdd, netnsDel, netnsExists, routeAdd, withRtnl } from './kernel/index.js';
import { failpoint } from './failpoint.js';
import { KeyedLock } from './lock.js';
import { log } from './log.js';
import type { AddressSource, Endpoint, IpConfig, Network, Owner, PortMapping, PortRequest, Sandbox } from './model.js';
import { checkPortFree, choosePorts } from './ports.js';
import { checkName, configureInterface, interfaceInSandbox, macFor, netnsName, removeInterface } from './sandbox.js';
import { openDb, stateDir as defaultStateDir } from './store/db.js';
import { State, migrations as coreMigrations, newId } from './store/state.js';
import { transaction } from './txn.js';

/** One family's addressing of a new network. */
export interface SubnetRequest {
  readonly subnet?: string;
  readonly gateway?: string;
  readonly ipRange?: string;
  readonly auxAddresses?: Readonly<Record<string, string>>;
}

export interface NetworkRequest {
  /** Required, except for Docker's networks (named after their id). */
  readonly name?: string;
  /** An id a face hands in (Docker's NetworkID); default a new one. */
  readonly id?: string;
  readonly owner?: Owner;
  readonly driver?: string;
  readonly subnet?: string;
  readonly gateway?: string;
  readonly ipRange?: string;
  readonly auxAddresses?: Readonly<Record<string, string>>;
  readonly ipv6?: boolean;
  readonly subnet6?: string;
  readonly gateway6?: string;
  readonly ipRange6?: string;
  readonly auxAddresses6?: Readonly<Record<string, string>>;
  readonly internal?: boolean;
  /** Driver options: full keys or the driver's short forms. */
  readonly options?: Readonly<Record<string, string>>;
  readonly labels?: Readonly<Record<string, string>>;
  /**
   * 'external': another IPAM (dockerd's, or tnet's IpamDriver on dockerd's behalf) hands out the
   * addresses in `addressSpace`. The network then only records its subnets: it takes a reference
   * on tnet's identical shared pool if there is one, else reserves the subnet so nothing else
   * of tnet's overlaps it.
   */
  readonly addresses?: AddressSource;
  readonly addressSpace?: string;
}

export interface ConnectRequest {
  readonly ip?: string;
  readonly ip6?: string;
  readonly mac?: string;
  readonly aliases?: readonly string[];
  readonly ports?: readonly PortRequest[];
}

/** An endpoint whose addresses another IPAM chose (Docker's CreateEndpoint). */
export interface EndpointRequest {
  readonly id: string;
  readonly name?: string;
  readonly ipv4?: IpAddr;
  readonly ipv6?: IpAddr;
  readonly mac?: string;
}

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
}

/** Events for listeners such as the DNS server: they learn records from here, never from the store. */
export interface ControllerEvents {
  endpoint: [change: 'up' | 'down', ep: Endpoint, net: Network, sb: Sandbox | undefined];
  network: [change: 'up' | 'down', net: Network];
  sandbox: [change: 'up' | 'down', sb: Sandbox];
}

const DNS_LABEL = /^[a-zA-Z0-9]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)*$/;
const DOCKER_ID = /^[0-9a-f]{64}$/;
const short = (id: string) => id.slice(0, 12);

/** The owner text of a network's own pools: what a half-made network's pools are found by. */
const poolOwner = (n: Pick<Network, 'id' | 'name'>) => `network ${n.name} ${short(n.id)}`;

/** How each owner's objects are removed, for the message that refuses another face's attempt. */
function ownedElsewhere(kind: 'network' | 'sandbox', name: string, owner: Owner): TnetError {
  const how = owner === 'docker' ? `use docker ${kind === 'network' ? 'network rm' : 'rm'}` : owner.startsWith('lab:') ? `use tnet destroy ${owner.slice(4)}` : 'use tnet';
  const who = owner === 'docker' ? 'Docker' : owner.startsWith('lab:') ? `lab "${owner.slice(4)}"` : 'nobody';
  return invalid(`${kind} "${name}" belongs to ${who}; ${how}`, `${kind} "${name}"`);
}

function checkMac(mac: string): string {
  const m = mac.toLowerCase();
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(m)) throw invalid(`MAC address "${mac}" is not of the form 02:42:ac:11:00:02`, `mac "${mac}"`);
  if ((parseInt(m.slice(0, 2), 16) & 1) === 1) throw invalid(`MAC address "${mac}" is a multicast address`, `mac "${mac}"`);
  return m;
}

/**
 * The one entry point of the core and the only writer of CNM state: networks, sandboxes and the
 * endpoints that join them, for every face. Each operation records its intent, does the kernel
 * work as undoable steps, then commits. Faces call these verbs and queries; the store, the
 * allocator, the locks and the kernel handles stay inside.
 */
export class Controller extends EventEmitter<ControllerEvents> {
  readonly stateDir: string;
  private readonly state: State;
  private readonly ipam: Allocator;
  private readonly rtnl: Rtnl;
  private readonly nft: Nft;
  private readonly locks = new KeyedLock();
  private readonly registry: DriverRegistry;
  private readonly drivers = new Map<string, Driver>();
  private readonly etcNetns: string;
  private readonly avoid: readonly Subnet[];
  readonly tags: Tags;

  private constructor(dir: string, opts: ControllerOptions) {
    super();
    this.stateDir = dir;
    this.etcNetns = opts.etcNetns ?? '/etc/netns';
    this.avoid = opts.avoid ?? [];
    const db = openDb(dir, coreMigrations);
    try {
      this.state = new State(db, { scope: opts.scope });
    } catch (e) {
      db.close(); // a scope refused: nothing else is open yet
      throw e;
    }
    this.ipam = new LocalAllocator(new Ipam(db, { ulaSeed: this.state.instance }));
    this.rtnl = Rtnl.open();
    this.nft = Nft.open();
    const prefix = `tnet:${this.state.instance}:`;
    this.tags = { prefix, of: (kind, id) => `${prefix}${kind}:${id}`, mine: (tag) => tag?.startsWith(prefix) ?? false };
    this.registry = new DriverRegistry(opts.drivers ?? builtinDrivers);
    for (const type of this.registry.types()) this.drivers.set(type, this.registry.factory(type).create(this.driverContext(type)));
  }

  /** Opens the state under `stateDir` and reconciles the kernel with it. */
  static async open(opts: ControllerOptions = {}): Promise<Controller> {
    const c = new Controller(defaultStateDir(opts.stateDir), opts);
    try {
      await c.reconcile();
    } catch (e) {
      c.close();
      throw e;
    }
    return c;
  }

  close(): void {
    for (const d of this.drivers.values()) d.close?.();
    this.rtnl.close();
    this.nft.close();
    this.state.db.close();
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
    const n = this.state.findNetwork(ref, owner);
    if (!n || n.state === 'creating') throw notFound(`network "${ref}" not found`, `network "${ref}"`);
    return n;
  }

  /** A network in any state (a face checking a retried call), or undefined. */
  findNetwork(ref: string, owner?: Owner): Network | undefined {
    return this.state.findNetwork(ref, owner);
  }

  networks(filter: { owner?: Owner } = {}): Network[] {
    return this.state.networks().filter((n) => n.state !== 'creating' && (filter.owner === undefined || n.owner === filter.owner));
  }

  /** What the network's driver shows beyond the core's fields (a bridge's name). */
  networkDetails(net: Network): Readonly<Record<string, string>> {
    return this.driver(net.driver).inspect?.(net) ?? {};
  }

  sandbox(ref: string, owner?: Owner): Sandbox {
    const s = this.state.findSandbox(ref, owner);
    if (!s || s.state === 'creating') throw notFound(`sandbox "${ref}" not found`, `sandbox "${ref}"`);
    return s;
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

  // ---------------------------------------------------------------- networks

  async createNetwork(req: NetworkRequest): Promise<Network> {
    const owner = req.owner ?? '';
    if (req.id !== undefined && !DOCKER_ID.test(req.id))
      throw invalid(`network ID ${JSON.stringify(req.id)} is not 64 lowercase hex digits`, `network ${String(req.id)}`);
    const id = req.id ?? newId();
    const name = req.name === undefined && req.id !== undefined ? this.freeDockerName(id, owner) : checkName('network', req.name);
    const factory = this.registry.factory(req.driver ?? DEFAULT_DRIVER);
    const driver = this.driver(factory.type);
    return this.locks.exclusive(`network-name:${owner}:${name}`, () =>
      this.locks.exclusive(id, async () => {
        if (this.state.findNetwork(name, owner)?.name === name) throw conflict(`network "${name}" already exists`, `network "${name}"`);
        if (this.state.network(id)) throw conflict(`network ${short(id)} already exists`, `network ${short(id)}`);
        const internal = req.internal ?? false;
        const options = await driver.checkNetwork({ id, internal, options: expandOptions(factory, req.options ?? {}) });
        if (!req.ipv6 && (req.subnet6 || req.gateway6 || req.ipRange6))
          throw invalid('an IPv6 subnet, gateway or range needs IPv6 enabled (--ipv6)', `network "${name}"`);
        const addresses = req.addresses ?? 'tnet';
        if (addresses === 'tnet' && req.subnet && Subnet.parse(req.subnet).family === 6)
          throw invalid(`subnet ${req.subnet} is IPv6; give it with --subnet6 and --ipv6`, `network "${name}"`);
        // The intent first, without pools: a crash before the pools are recorded leaves a row that
        // names their owner, and the reconcile releases them.
        const intent: Network = {
          id, name, owner, driver: factory.type, state: 'creating', internal, ipv4: undefined, ipv6: undefined,
          options, labels: req.labels ?? {}, addresses, created: new Date().toISOString(),
        };
        this.state.unsynced(() => this.state.insertNetwork(intent));
        let net: Network;
        try {
          const v4 = { subnet: req.subnet, gateway: req.gateway, ipRange: req.ipRange, auxAddresses: req.auxAddresses };
          const v6 = { subnet: req.subnet6, gateway: req.gateway6, ipRange: req.ipRange6, auxAddresses: req.auxAddresses6 };
          const ipv4 = addresses === 'external' ? await this.externalPool(intent, v4, 4, req.addressSpace) : await this.ownPool(intent, v4, 4);
          const ipv6 = !req.ipv6 ? undefined : addresses === 'external' ? await this.externalPool(intent, v6, 6, req.addressSpace) : await this.ownPool(intent, v6, 6);
          net = { ...intent, ipv4, ipv6 };
          this.state.unsynced(() => this.state.setNetworkPools(id, ipv4, ipv6));
          failpoint('create-network:pools');
          await transaction((t) => driver.createNetwork(net, t));
          failpoint('create-network:made');
        } catch (e) {
          await this.forgetNetwork(intent);
          throw this.explain(e);
        }
        this.state.setNetworkState(id, 'ready');
        const ready = { ...net, state: 'ready' as const };
        this.emit('network', 'up', ready);
        return ready;
      }),
    );
  }

  /** Docker names its networks; tnet shows them as docker-<short id> (unique per owner). */
  private freeDockerName(id: string, owner: Owner): string {
    const name = `${owner || 'net'}-${short(id)}`;
    return this.state.findNetwork(name, owner)?.name === name ? id : name;
  }

  /** A pool of the network's own: the given subnet, or the first free default one. */
  private async ownPool(net: Network, r: SubnetRequest, family: 4 | 6): Promise<IpConfig | undefined> {
    const avoid = r.subnet ? [] : await this.taken();
    const pool = await this.ipam.requestPool({
      subnet: r.subnet, ipRange: r.ipRange, gateway: r.gateway, auxAddresses: r.auxAddresses, v6: family === 6, avoid, owner: poolOwner(net),
      durable: false, // the network's 'ready' commit carries it to disk
    });
    return { poolId: pool.id, subnet: pool.subnet, gateway: pool.gateway };
  }

  /**
   * The pool a network whose addresses come from another IPAM is recorded in. tnet's IpamDriver
   * made it: the network takes its own reference (an identical shared request). Another IPAM made
   * it: a pool that reserves the subnet (and gateway and aux addresses) and hands nothing out.
   */
  private async externalPool(net: Network, r: SubnetRequest, family: 4 | 6, space = ''): Promise<IpConfig | undefined> {
    if (!r.subnet) return undefined;
    let subnet: Subnet;
    try {
      subnet = Subnet.parse(r.subnet);
    } catch (e) {
      throw invalid(`IPv${family} pool "${r.subnet}" is not a subnet: ${(e as Error).message}`, `pool "${r.subnet}"`);
    }
    if (subnet.family !== family) throw invalid(`pool ${subnet} is not IPv${family}`, `pool "${r.subnet}"`);
    const gateway = r.gateway ? IpAddr.parse(r.gateway) : undefined;
    if (gateway && !subnet.contains(gateway)) throw invalid(`gateway ${gateway} is not in subnet ${subnet}`, `gateway "${r.gateway}"`);
    const ours = (await this.ipam.listPools()).find((p) => p.shared && p.addressSpace === space && p.subnet.equals(subnet));
    let pool: Pool;
    if (ours) {
      pool = await this.ipam.requestPool({
        addressSpace: ours.addressSpace, subnet: ours.subnet.toString(), ipRange: ours.range.toString(),
        ...(ours.gateway ? { gateway: ours.gateway.toString() } : { noGateway: true }),
        auxAddresses: Object.fromEntries(Object.entries(ours.auxAddresses).map(([k, a]) => [k, a.toString()])),
        shared: true,
      });
    } else {
      const aux: Record<string, string> = {};
      for (const [k, v] of Object.entries(r.auxAddresses ?? {})) if (!gateway?.equals(IpAddr.parse(v))) aux[k] = v;
      pool = await this.ipam.requestPool({
        addressSpace: `${net.owner || 'external'}:${space || 'unknown'}`, subnet: subnet.toString(),
        ...(gateway ? { gateway: gateway.toString() } : { noGateway: true }),
        auxAddresses: aux, owner: poolOwner(net),
      });
    }
    return { poolId: pool.id, subnet, gateway };
  }

  /** Drops a network's row and its pools (a failed create, a delete, an interrupted one). */
  private async forgetNetwork(net: Network): Promise<void> {
    const ids = new Set([net.ipv4?.poolId, net.ipv6?.poolId].filter((p): p is string => p !== undefined));
    for (const p of await this.ipam.listPools({ owner: poolOwner(net) })) ids.add(p.id);
    for (const id of ids) {
      try {
        await this.ipam.releasePool(id);
      } catch (e) {
        if (!isTnetError(e, 'not-found')) throw e;
      }
    }
    this.state.tx(() => this.state.deleteNetwork(net.id));
  }

  /**
   * Deletes a network. `owner`: the face acting (a network is deleted only by its owner's face).
   * `removeEndpoints`: endpoints still on it go with it (dockerd removes its endpoints first, so
   * any left are stale: a DeleteEndpoint lost while tnet was down); otherwise they make it busy.
   */
  async deleteNetwork(ref: string, opts: { owner?: Owner; removeEndpoints?: boolean } = {}): Promise<void> {
    const owner = opts.owner ?? '';
    const found = this.network(ref, opts.owner === undefined ? undefined : owner);
    await this.locks.exclusive(found.id, async () => {
      const net = this.network(found.id);
      if (net.owner !== owner) throw ownedElsewhere('network', net.name, net.owner);
      const eps = this.state.endpointsOfNetwork(net.id);
      if (eps.length > 0 && !opts.removeEndpoints) {
        const who = eps.map((e) => (e.sandboxId ? this.state.sandbox(e.sandboxId)?.name : undefined) ?? e.name);
        throw busy(
          `network "${net.name}" still has ${eps.length} endpoint(s) (${who.slice(0, 5).join(', ')}${who.length > 5 ? ', ...' : ''}); disconnect them first`,
          `network "${net.name}"`,
        );
      }
      const d = this.driver(net.driver);
      for (const ep of eps) {
        log.info({ network: net.name, endpoint: short(ep.id) }, 'removing a stale endpoint with its network');
        await this.teardownEndpoint(net, ep, { sandboxGoing: false });
        await this.forgetEndpoint(net, ep);
      }
      this.state.unsynced(() => this.state.setNetworkState(net.id, 'deleting'));
      await d.deleteNetwork(net);
      await this.forgetNetwork(net);
      this.emit('network', 'down', net);
    });
  }

  // ---------------------------------------------------------------- sandboxes

  async createSandbox(req: { name: string; owner?: Owner }): Promise<Sandbox> {
    const name = checkName('sandbox', req.name);
    const owner = req.owner ?? '';
    return this.locks.exclusive(`sandbox-name:${owner}:${name}`, async () => {
      if (this.state.findSandbox(name, owner)?.name === name) throw conflict(`sandbox "${name}" already exists`, `sandbox "${name}"`);
      const nsName = netnsName(this.scope, name);
      if (netnsExists(nsName))
        throw conflict(`a network namespace named "${nsName}" already exists and this tnet instance does not own it`, `netns "${nsName}"`);
      const sb: Sandbox = {
        id: newId(), name, owner, kind: 'lab', state: 'creating', netns: Netns.named(nsName).path, created: new Date().toISOString(),
      };
      this.state.unsynced(() => this.state.insertSandbox(sb));
      try {
        await transaction(async (t) => {
          const ns = await t.step(`netns ${nsName}`, () => netnsAdd(nsName), () => netnsDel(nsName));
          await withRtnl(ns, (h) => linkSetUp(h, 'lo'));
        });
      } catch (e) {
        this.state.deleteSandbox(sb.id);
        throw this.explain(e);
      }
      this.state.setSandboxState(sb.id, 'ready');
      const ready = { ...sb, state: 'ready' as const };
      this.emit('sandbox', 'up', ready);
      return ready;
    });
  }

  async deleteSandbox(ref: string, opts: { owner?: Owner } = {}): Promise<void> {
    const owner = opts.owner ?? '';
    const found = this.sandbox(ref, opts.owner === undefined ? undefined : owner);
    await this.locks.exclusive(found.id, async () => {
      const sb = this.sandbox(found.id);
      if (sb.owner !== owner) throw ownedElsewhere('sandbox', sb.name, sb.owner);
      this.state.unsynced(() => this.state.setSandboxState(sb.id, 'deleting'));
      const eps = this.state.endpointsOfSandbox(sb.id);
      for (const ep of eps) await this.teardownEndpoint(this.state.network(ep.networkId)!, ep, { sandboxGoing: true });
      this.removeNamespace(sb);
      for (const ep of eps) await this.forgetEndpoint(this.state.network(ep.networkId)!, ep);
      this.state.tx(() => this.state.deleteSandbox(sb.id));
      for (const ep of eps) this.emit('endpoint', 'down', ep, this.state.network(ep.networkId)!, sb);
      this.emit('sandbox', 'down', sb);
    });
  }

  private removeNamespace(sb: Sandbox): void {
    if (sb.kind !== 'lab') return;
    const nsName = sb.netns.slice(sb.netns.lastIndexOf('/') + 1);
    if (netnsExists(nsName)) netnsDel(nsName);
    rmSync(`${this.etcNetns}/${nsName}`, { recursive: true, force: true });
  }

  /** Writes the sandbox's resolv.conf (read by `ip netns exec` and `tnet exec`). */
  writeResolvConf(sb: Sandbox, content: string): void {
    if (sb.kind !== 'lab') return;
    const dir = `${this.etcNetns}/${sb.netns.slice(sb.netns.lastIndexOf('/') + 1)}`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${dir}/resolv.conf`, content);
  }

  // ---------------------------------------------------------------- endpoints of lab sandboxes

  /** Creates an endpoint on the network and joins it to the sandbox: its interface, addresses, routes and ports. */
  async connect(netRef: string, sbRef: string, req: ConnectRequest = {}): Promise<Endpoint> {
    const net0 = this.network(netRef);
    const sb0 = this.sandbox(sbRef);
    return this.locks.shared(net0.id, () =>
      this.locks.exclusive(sb0.id, async () => {
        const net = this.network(net0.id);
        const sb = this.sandbox(sb0.id);
        if (net.owner === 'docker') throw invalid(`network "${net.name}" belongs to Docker; use docker network connect`, `network "${net.name}"`);
        if (net.state !== 'ready') throw busy(`network "${net.name}" is being ${net.state}`, `network "${net.name}"`);
        const existing = this.state.endpointsOfSandbox(sb.id).find((e) => e.networkId === net.id);
        if (existing) throw conflict(`sandbox "${sb.name}" is already connected to network "${net.name}"`, `sandbox "${sb.name}"`);
        const aliases = (req.aliases ?? []).map((a) => {
          if (!DNS_LABEL.test(a) || a.length > 253) throw invalid(`alias "${a}" is not a valid DNS name`, `alias "${a}"`);
          return a;
        });
        const mac = req.mac === undefined ? undefined : checkMac(req.mac);
        for (const [want, family] of [[req.ip, 4], [req.ip6, 6]] as const) {
          if (want === undefined) continue;
          if (!(family === 4 ? net.ipv4 : net.ipv6)) throw invalid(`network "${net.name}" has no IPv${family} subnet for address ${want}`, `network "${net.name}"`);
          if (IpAddr.parse(want).family !== family) throw invalid(`address ${want} is not IPv${family}`, `address "${want}"`);
        }
        const requests = req.ports ?? [];
        if (requests.length && net.internal)
          throw invalid(`network "${net.name}" is internal: it has no way in from outside, so ports cannot be published`, `network "${net.name}"`);
        const d = this.driver(net.driver);
        const hostIp = d.defaultHostIp?.(net) ?? '';
        const ports = await choosePorts(this.state, requests.map((q) => (q.hostIp === '' ? { ...q, hostIp } : q)));
        const id = newId();
        // The intent (with its ports) first; then the addresses, owned by the endpoint's id, so a
        // crash in between is undone by the reconcile (releaseOwned).
        const intent = this.state.unsynced(() => {
          for (const p of ports) checkPortFree(this.state, p);
          const mine = this.state.endpointsOfSandbox(sb.id);
          let n = 0;
          while (mine.some((e) => e.ifname === `eth${n}`)) n++;
          const provides = !net.internal && (net.ipv4?.gateway !== undefined || net.ipv6?.gateway !== undefined) && !mine.some((e) => e.gatewayProvider);
          const e: Endpoint = {
            id, name: sb.name, networkId: net.id, sandboxId: sb.id, state: 'creating', ipv4: undefined, ipv6: undefined,
            mac: mac ?? macFor(undefined, id), hostIfname: d.hostIfname?.({ id }), ifname: `eth${n}`,
            aliases, ports, gatewayProvider: provides, created: new Date().toISOString(),
          };
          this.state.insertEndpoint(e);
          return e;
        });
        let ep: Endpoint;
        try {
          // Not durable on their own: the endpoint's 'ready' commit carries them to disk (Ipam.commit).
          const ipv4 = net.ipv4 ? await this.ipam.requestAddress(net.ipv4.poolId, { address: req.ip, owner: id, durable: false }) : undefined;
          const ipv6 = net.ipv6 ? await this.ipam.requestAddress(net.ipv6.poolId, { address: req.ip6, owner: id, durable: false }) : undefined;
          ep = { ...intent, ipv4, ipv6, mac: mac ?? macFor(ipv4?.value, id) };
          this.state.unsynced(() => this.state.setEndpointAddresses(id, ipv4, ipv6, ep.mac));
          failpoint('connect:allocated');
          await transaction(async (t) => {
            const ns = Netns.atPath(sb.netns);
            const a = await d.join(net, ep, { kind: 'sandbox', ns, ifname: ep.ifname }, t);
            failpoint('connect:joined');
            await configureInterface(ns, net, ep, a, { defaultRoute: ep.gatewayProvider });
            failpoint('connect:configured');
            if (ports.length) await d.programExternalConnectivity?.(net, ep, ports, t);
          });
        } catch (e) {
          await this.forgetEndpoint(net, intent);
          throw this.explain(e);
        }
        this.state.setEndpointState(id, 'ready');
        const ready = { ...ep, state: 'ready' as const };
        this.emit('endpoint', 'up', ready, net, sb);
        return ready;
      }),
    );
  }

  async disconnect(netRef: string, sbRef: string): Promise<void> {
    const net0 = this.network(netRef);
    const sb0 = this.sandbox(sbRef);
    await this.locks.shared(net0.id, () =>
      this.locks.exclusive(sb0.id, async () => {
        const net = this.network(net0.id);
        const sb = this.sandbox(sb0.id);
        const ep = this.state.endpointsOfSandbox(sb.id).find((e) => e.networkId === net.id);
        if (!ep) throw notFound(`sandbox "${sb.name}" is not connected to network "${net.name}"`, `sandbox "${sb.name}"`);
        this.state.unsynced(() => this.state.setEndpointState(ep.id, 'deleting'));
        await this.teardownEndpoint(net, ep, { sandboxGoing: false });
        failpoint('disconnect:left');
        await this.forgetEndpoint(net, ep);
        this.emit('endpoint', 'down', ep, net, sb);
        if (ep.gatewayProvider) await this.reassignGateway(sb);
      }),
    );
  }

  /** The kernel side of an endpoint goes: its published ports, the driver's interface, the sandbox's. */
  private async teardownEndpoint(net: Network, ep: Endpoint, how: { sandboxGoing: boolean }): Promise<void> {
    const d = this.driver(net.driver);
    if (ep.ports.length) await d.revokeExternalConnectivity?.(net, ep, ep.ports);
    await d.leave(net, ep, how);
    const sb = ep.sandboxId ? this.state.sandbox(ep.sandboxId) : undefined;
    if (!how.sandboxGoing && sb?.kind === 'lab' && existsSync(sb.netns)) await removeInterface(Netns.atPath(sb.netns), ep.ifname);
  }

  /** Drops an endpoint's row, and its addresses when they are tnet's to release. */
  private async forgetEndpoint(net: Network, ep: Endpoint): Promise<void> {
    if (net.addresses === 'tnet') await this.ipam.releaseOwned(ep.id);
    this.state.tx(() => this.state.deleteEndpoint(ep.id));
  }

  /** The sandbox lost its default route with an endpoint: the next eligible endpoint supplies it. */
  private async reassignGateway(sb: Sandbox): Promise<void> {
    for (const ep of this.state.endpointsOfSandbox(sb.id)) {
      const net = this.state.network(ep.networkId);
      if (!net || net.internal) continue;
      const gws = [net.ipv4?.gateway, net.ipv6?.gateway].filter((g): g is IpAddr => g !== undefined);
      if (!gws.length) continue;
      await withRtnl(Netns.atPath(sb.netns), async (h) => {
        const link = await linkByName(h, ep.ifname);
        if (!link) return;
        for (const g of gws) await routeAdd(h, { gateway: g.toString(), oif: link.index, onlink: true });
      });
      this.state.setGatewayProvider(ep.id, true);
      return;
    }
  }

  // ---------------------------------------------------------------- endpoints handed to another engine

  /**
   * Records an endpoint whose addresses another IPAM chose and whose sandbox another engine owns
   * (Docker's CreateEndpoint). No kernel work until join. Written 'ready' at once and without an
   * fsync (State.unsynced): the engine keeps its own record, so the reconcile never releases
   * what it still holds. A retried call for the same endpoint returns it unchanged.
   */
  async createEndpoint(netRef: string, req: EndpointRequest): Promise<Endpoint> {
    const net = this.network(netRef);
    if (!DOCKER_ID.test(req.id)) throw invalid(`endpoint ID ${JSON.stringify(req.id)} is not 64 lowercase hex digits`, `endpoint ${String(req.id)}`);
    return this.locks.shared(net.id, async () => {
      for (const [a, ip, family] of [[req.ipv4, net.ipv4, 4], [req.ipv6, net.ipv6, 6]] as const) {
        if (!a) continue;
        if (a.family !== family) throw invalid(`address ${a} is not IPv${family}`, `endpoint ${short(req.id)}`);
        if (!ip) throw invalid(`network ${short(net.id)} has no IPv${family} subnet for ${a}`, `endpoint ${short(req.id)}`);
        if (!ip.subnet.contains(a)) throw invalid(`address ${a} is not in the network's subnet ${ip.subnet}`, `endpoint ${short(req.id)}`);
      }
      const mac = req.mac === undefined ? undefined : checkMac(req.mac);
      const existing = this.state.endpoint(req.id);
      if (existing) {
        if (existing.networkId !== net.id) throw conflict(`endpoint ${short(req.id)} already exists on another network`, `endpoint ${short(req.id)}`);
        return existing;
      }
      const ep: Endpoint = {
        id: req.id, name: req.name ?? short(req.id), networkId: net.id, sandboxId: undefined, state: 'ready', ipv4: req.ipv4, ipv6: req.ipv6,
        mac: mac ?? macFor(req.ipv4?.value, req.id), hostIfname: this.driver(net.driver).hostIfname?.({ id: req.id }), ifname: 'eth',
        aliases: [], ports: [], gatewayProvider: false, created: new Date().toISOString(),
      };
      try {
        this.state.unsynced(() => this.state.insertEndpoint(ep));
      } catch (e) {
        if (/UNIQUE constraint failed: endpoints.host_ifname/.test(String(e)))
          throw conflict(`endpoint ${short(req.id)}: another endpoint has the same 12-digit ID prefix`, `endpoint ${short(req.id)}`);
        throw e;
      }
      this.emit('endpoint', 'up', ep, net, undefined);
      return ep;
    });
  }

  /** The endpoint of a network, or a not-found error naming both. */
  private endpointOf(net: Network, id: string): Endpoint {
    const e = this.state.endpoint(id);
    if (!e || e.networkId !== net.id)
      throw notFound(`endpoint ${short(id)} does not exist on network ${short(net.id)} (unknown EndpointID ${id})`, `endpoint ${short(id)}`);
    return e;
  }

  async deleteEndpoint(netRef: string, id: string): Promise<void> {
    const net = this.network(netRef);
    const ep = this.endpointOf(net, id);
    await this.locks.shared(net.id, async () => {
      await this.teardownEndpoint(net, ep, { sandboxGoing: false });
      await this.forgetEndpoint(net, ep);
      this.emit('endpoint', 'down', ep, net, undefined);
    });
  }

  /**
   * Makes the endpoint's interface and leaves it in the host namespace for the engine to move
   * (Docker's Join). A retried join (its answer was lost) gets a fresh interface.
   */
  async join(netRef: string, id: string): Promise<Attachment> {
    const net = this.network(netRef);
    const ep = this.endpointOf(net, id);
    const d = this.driver(net.driver);
    const target: JoinTarget = { kind: 'handoff' };
    return this.locks.shared(net.id, async () => {
      try {
        return await transaction((t) => d.join(net, ep, target, t));
      } catch (e) {
        if (!isErrno(e, 'EEXIST')) throw this.explain(e);
        await d.leave(net, ep, { sandboxGoing: false });
        return transaction((t) => d.join(net, ep, target, t)).catch((e2: unknown) => {
          throw this.explain(e2);
        });
      }
    });
  }

  async leave(netRef: string, id: string): Promise<void> {
    const net = this.network(netRef);
    const ep = this.endpointOf(net, id);
    await this.locks.shared(net.id, () => this.driver(net.driver).leave(net, ep, { sandboxGoing: false }));
  }

  /** Publishes host ports to a joined endpoint (Docker's ProgramExternalConnectivity); once per endpoint. */
  async publishPorts(netRef: string, id: string, requests: readonly PortRequest[]): Promise<readonly PortMapping[]> {
    const net = this.network(netRef);
    const ep0 = this.endpointOf(net, id);
    if (net.internal || requests.length === 0 || ep0.ports.length > 0) return ep0.ports;
    const d = this.driver(net.driver);
    if (!d.programExternalConnectivity) throw invalid(`driver ${net.driver} does not publish ports`, `network "${net.name}"`);
    return this.locks.shared(net.id, async () => {
      const hostIp = d.defaultHostIp?.(net) ?? '';
      const ports = await choosePorts(this.state, requests.map((q) => (q.hostIp === '' ? { ...q, hostIp } : q)));
      const ep = this.state.tx(() => {
        const cur = this.endpointOf(net, ep0.id);
        if (cur.ports.length > 0) return undefined; // programmed by a concurrent call
        for (const p of ports) checkPortFree(this.state, p);
        for (const p of ports) this.state.insertPort(cur.id, p);
        return { ...cur, ports };
      });
      if (!ep) return this.endpointOf(net, ep0.id).ports;
      try {
        await transaction((t) => d.programExternalConnectivity!(net, ep, ports, t));
      } catch (e) {
        this.state.deletePorts(ep.id);
        throw this.explain(e);
      }
      return ports;
    });
  }

  async unpublishPorts(netRef: string, id: string): Promise<void> {
    const net = this.network(netRef);
    const ep = this.endpointOf(net, id);
    if (ep.ports.length === 0) return;
    await this.locks.shared(net.id, async () => {
      await this.driver(net.driver).revokeExternalConnectivity?.(net, ep, ep.ports);
      this.state.deletePorts(ep.id);
    });
  }

  // ---------------------------------------------------------------- address pools for an IPAM face

  /** A pool for another engine's networks (Docker's RequestPool); an auto-chosen one avoids the host's routes. */
  async requestPool(req: PoolRequest): Promise<Pool> {
    const avoid = req.subnet ? [] : await this.taken();
    return this.ipam.requestPool({ ...req, avoid });
  }

  /** What an auto-chosen pool must not overlap: the host's routes and the configured subnets. */
  private async taken(): Promise<Subnet[]> {
    return [...(await hostRoutes(this.rtnl)), ...this.avoid];
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

  // ---------------------------------------------------------------- reconcile

  /**
   * Makes the kernel match the store after a restart or a crash: finishes nothing half-made
   * (records still 'creating' or 'deleting' are undone), rebuilds what is wanted and missing,
   * removes what this instance tagged and no longer wants, touches nothing else.
   */
  async reconcile(): Promise<void> {
    const t0 = performance.now();
    // 1. Undo interrupted operations, innermost objects first.
    for (const ep of this.state.endpoints()) {
      if (ep.state === 'ready') continue;
      const net = this.state.network(ep.networkId)!;
      await this.teardownEndpoint(net, ep, { sandboxGoing: false });
      await this.forgetEndpoint(net, ep);
    }
    for (const sb of this.state.sandboxes()) {
      if (sb.state === 'ready') continue;
      const eps = this.state.endpointsOfSandbox(sb.id);
      this.removeNamespace(sb);
      for (const ep of eps) await this.forgetEndpoint(this.state.network(ep.networkId)!, ep);
      this.state.tx(() => this.state.deleteSandbox(sb.id));
    }
    for (const net of this.state.networks()) {
      if (net.state === 'ready') continue;
      await this.driver(net.driver).deleteNetwork(net);
      await this.forgetNetwork(net);
    }
    // 2. Each driver makes its side match: networks, stale links, the firewall.
    const nets = this.state.networks();
    const eps = this.state.endpoints();
    const typeOf = new Map(nets.map((n) => [n.id, n.driver]));
    for (const [type, d] of this.drivers) {
      await d.restore(nets.filter((n) => n.driver === type), eps.filter((e) => typeOf.get(e.networkId) === type));
    }
    // 3. Lab sandboxes that vanished (a reboot) come back; each endpoint is judged from the
    //    sandbox side, and the driver is asked about its own.
    for (const sb of this.state.sandboxes()) {
      if (sb.kind !== 'lab') continue;
      const nsName = sb.netns.slice(sb.netns.lastIndexOf('/') + 1);
      if (!netnsExists(nsName)) {
        log.info({ sandbox: sb.name }, 'reconcile: recreating sandbox namespace');
        await withRtnl(netnsAdd(nsName), (h) => linkSetUp(h, 'lo'));
      }
      const ns = Netns.atPath(sb.netns);
      for (const ep of this.state.endpointsOfSandbox(sb.id)) {
        const net = this.state.network(ep.networkId)!;
        const d = this.driver(net.driver);
        const intact = (await interfaceInSandbox(ns, ep.ifname)) && ((await d.endpointIntact?.(net, ep)) ?? true);
        if (intact) continue;
        log.info({ sandbox: sb.name, network: net.name }, 'reconcile: recreating endpoint');
        await d.leave(net, ep, { sandboxGoing: false });
        await removeInterface(ns, ep.ifname);
        await transaction(async (t) => {
          const a = await d.join(net, ep, { kind: 'sandbox', ns, ifname: ep.ifname }, t);
          await configureInterface(ns, net, ep, a, { defaultRoute: ep.gatewayProvider });
        });
      }
    }
    log.info({ ms: Math.round(performance.now() - t0) }, 'reconciled');
  }

  /** Kernel errors carry errno names; the faces want a TnetError with a code. */
  private explain(e: unknown): unknown {
    if (e instanceof KernelError) {
      const code = e.errno === 'EEXIST' ? 'conflict' : e.errno.startsWith('EOPNOTSUPP') ? 'unsupported' : 'kernel';
      return new TnetError(code, e.message, { object: e.object, cause: e });
    }
    return e;
  }
}
