/**
 * What a driver is to the core (libnetwork's driverapi + drvregistry): a factory registered by
 * type, a context handed to it, and the operations the controller calls. The core names no
 * driver: drivers/index.ts lists the built-ins, the registry resolves a type to a factory.
 *
 * A driver makes interfaces; the core configures sandboxes. `join` makes the endpoint's interface
 * and says where it is (inside a sandbox tnet owns, or left in the host namespace for dockerd to
 * move); the controller then adds addresses, routes and the default gateway in one round trip.
 */
import type { Logger } from 'pino';
import { invalid } from './errors.js';
import type { IpAddr } from './ipam/address.js';
import type { Netns, Nft, Rtnl } from './kernel/index.js';
import type { DriverType, Endpoint, Network, PortMapping } from './model.js';
import type { Txn } from './txn.js';
import type { Peer } from './store/peers.js';

/**
 * Where an endpoint's interface goes when it joins a sandbox.
 * sandbox: a namespace tnet owns; the driver creates the interface inside it, named `ifname`.
 * handoff: Docker's sandbox; the driver leaves the interface in the host namespace and dockerd
 *   moves and configures it.
 */
export type JoinTarget =
  | { readonly kind: 'sandbox'; readonly ns: Netns; readonly ifname: string }
  | { readonly kind: 'handoff' };

export interface StaticRoute {
  readonly destination: string; // CIDR
  readonly nextHop?: string;
}

/** What `join` made, and what the sandbox needs to use it. */
export interface Attachment {
  /** sandbox: the interface is in the target namespace (ifindex if the driver knows it, saving a lookup). */
  readonly where: 'sandbox' | 'handoff';
  readonly ifindex?: number;
  /** handoff: the interface dockerd moves into the container. */
  readonly srcName?: string;
  /** The gateways the endpoint routes through; none on an internal network. */
  readonly gateway4?: IpAddr;
  readonly gateway6?: IpAddr;
  readonly staticRoutes: readonly StaticRoute[];
}

/** Network options after the driver checked them (full keys; see netlabel.ts). */
export type DriverOptions = Readonly<Record<string, string>>;

/** Ownership tags of one tnet instance: the alias on its links, the comment on its rules. */
export interface Tags {
  /** `tnet:<instance>:` — everything this instance makes carries it, and reconcile touches nothing else. */
  readonly prefix: string;
  /**
   * The tag of an object's link; `part` tells several links of one object apart (an overlay
   * network's bridge and its VXLAN device): `tnet:<instance>:network:<id>/vxlan`.
   */
  of(kind: 'network' | 'endpoint' | 'sandbox', id: string, part?: string): string;
  /** The tag of the object a link's tag belongs to (its `/part` dropped). */
  owner(tag: string): string;
  /** Whether a tag is this instance's. */
  mine(tag: string | undefined): boolean;
}

/** A driver's own records in the local store (overlay peers, macvlan parents it made). */
export interface DriverStore {
  get(key: string): Promise<string | undefined>;
  put(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  list(prefix: string): Promise<{ key: string; value: string }[]>;
}

/** Everything a driver is handed; it owns nothing else of the core's. */
export interface DriverContext {
  /** Kernel handles in the host namespace (the daemon's own). */
  readonly rtnl: Rtnl;
  readonly nft: Nft;
  readonly tags: Tags;
  /** What host-wide kernel names carry so several instances share a host ('' = none): the nft table, default link names. */
  readonly scope: string;
  readonly store: DriverStore;
  /** The other networks of this driver's type, as the store holds them now. */
  networks(): readonly Network[];
  readonly log: Logger;
  /**
   * This host's tunnel endpoint (`--advertise-addr`), for global-scope drivers (overlay); absent
   * on a host without a global store. Known from the start, even while the store is unreachable,
   * so a restart restores the data plane without it.
   */
  readonly vtep?: IpAddr;
}

/** A difference a driver finds between its records and the kernel; the doctor names the record. */
export interface DriverFinding {
  readonly problem: 'missing' | 'stray' | 'wrong';
  /** The kernel object, e.g. `bridge tn-1a2b3c4d5e6f`, `nft table inet tnet`. */
  readonly object: string;
  /** Whose it is, when it is one network's or one endpoint's. */
  readonly network?: Network;
  readonly endpoint?: Endpoint;
  readonly detail: string;
}

export interface Driver {
  /** Checks and normalises options before anything is recorded; throws a clear error, changes nothing. */
  checkNetwork(req: { id: string; name?: string; internal: boolean; options: DriverOptions }): Promise<DriverOptions>;
  createNetwork(net: Network, t: Txn): Promise<void>;
  /** Removes what createNetwork made; tolerates parts already gone. */
  deleteNetwork(net: Network): Promise<void>;
  /**
   * An endpoint exists on the network (before its join; a Docker endpoint at CreateEndpoint): what
   * the driver records about it beyond an interface (an overlay's peer record for other hosts).
   */
  createEndpoint?(net: Network, ep: Endpoint, t: Txn): Promise<void>;
  /** The endpoint is gone (after its leave); tolerates what is already gone. */
  deleteEndpoint?(net: Network, ep: Endpoint): Promise<void>;
  /** The name of the interface the endpoint will have in the host namespace, if the driver makes one. */
  hostIfname?(ep: Pick<Endpoint, 'id'>): string | undefined;
  join(net: Network, ep: Endpoint, target: JoinTarget, t: Txn): Promise<Attachment>;
  /** Removes the endpoint's interface; `sandboxGoing` when the whole namespace is about to go. */
  leave(net: Network, ep: Endpoint, how: { sandboxGoing: boolean }): Promise<void>;
  /** Whether the driver's side of a joined endpoint is intact (reconcile asks; the core checks the sandbox side). */
  endpointIntact?(net: Network, ep: Endpoint): Promise<boolean>;
  /**
   * What differs between the records and the kernel objects only this driver knows (`tnet
   * doctor`): `nets` are the ready networks of its type (maybe none), `eps` their ready endpoints.
   */
  diagnose?(nets: readonly Network[], eps: readonly Endpoint[]): Promise<DriverFinding[]>;
  /** The name prefix of the endpoint's interface in the sandbox (libnetwork's container_iface_prefix); default eth. */
  ifacePrefix?(net: Network): string;
  /** The host address published ports bind to when a request names none ('' = every address). */
  defaultHostIp?(net: Network): string;
  /**
   * Publishes ports. A driver without it maps none (macvlan: an endpoint is reached at its own
   * address): the core refuses a lab connect that asks for ports, and logs and ignores Docker's
   * -p (the container starts, as with Docker's own macvlan driver), reserving no host port.
   */
  programExternalConnectivity?(net: Network, ep: Endpoint, ports: readonly PortMapping[], t: Txn): Promise<void>;
  revokeExternalConnectivity?(net: Network, ep: Endpoint, ports: readonly PortMapping[]): Promise<void>;
  /**
   * Reconcile after a restart: make the kernel match `nets`/`eps` (the store's ready objects of
   * this driver), recreate what is missing, remove what this instance owns and no longer wants.
   */
  restore(nets: readonly Network[], eps: readonly Endpoint[]): Promise<void>;
  /**
   * Global-scope drivers: the remote endpoints of a network (other hosts', from the peer table).
   * `setPeers`: they are exactly `peers` now (the first listing, a re-listing after the store
   * compacted past the watch): program what is missing, remove what is not in the list, leave
   * what is already right untouched (no blip). `addPeer`/`removePeer`: one came or went.
   */
  setPeers?(net: Network, peers: readonly Peer[]): Promise<void>;
  addPeer?(net: Network, peer: Peer): Promise<void>;
  removePeer?(net: Network, peer: Peer): Promise<void>;
  /** What views show of a network beyond the core's fields (a bridge's name...). */
  inspect?(net: Network): Readonly<Record<string, string>>;
  /** Releases what the driver holds in the process (timers, watches); the kernel objects stay. */
  close?(): void;
}

export interface DriverFactory {
  readonly type: DriverType;
  /** local: one host's store; global: the distributed store (networks that span hosts). */
  readonly scope: 'local' | 'global';
  /** The option keys the driver knows, and the short forms people type (`mtu` for com.docker.network.driver.mtu). */
  readonly options: { readonly keys: readonly string[]; readonly aliases: Readonly<Record<string, string>> };
  create(ctx: DriverContext): Driver;
}

/** The drivers one controller can use, by type. */
export class DriverRegistry {
  private readonly factories = new Map<DriverType, DriverFactory>();

  constructor(factories: readonly DriverFactory[]) {
    for (const f of factories) {
      if (this.factories.has(f.type)) throw invalid(`driver "${f.type}" is registered twice`, `driver "${f.type}"`);
      this.factories.set(f.type, f);
    }
  }

  /** The factory of `type`, or an error that lists what is supported. */
  factory(type: string): DriverFactory {
    const f = this.factories.get(type);
    if (!f) throw invalid(`driver "${type}" is not supported; supported drivers are ${this.types().join(', ')}`, `driver "${type}"`);
    return f;
  }

  has(type: string): boolean {
    return this.factories.has(type);
  }

  types(): DriverType[] {
    return [...this.factories.keys()];
  }
}

/** Expands a driver's short option forms; full keys pass through untouched. */
export function expandOptions(f: DriverFactory, opts: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(opts)) out[f.options.aliases[k] ?? k] = v;
  return out;
}
