import type { Netns } from './kernel/index.js';
import type { IpAddr } from './ipam/address.js';
import type { Endpoint, Network, PortMapping } from './model.js';
import type { Txn } from './txn.js';

/**
 * Where an endpoint's interface goes when it joins a sandbox.
 * lab: a namespace tnet owns; the driver creates the interface inside it and configures it fully.
 * external: Docker's sandbox; the driver leaves the interface in the host namespace under
 *   `srcName` and dockerd moves and configures it.
 */
export type JoinTarget =
  | { readonly kind: 'lab'; readonly ns: Netns; readonly ifname: string; readonly defaultRoute: boolean }
  | { readonly kind: 'external' };

export interface StaticRoute {
  readonly destination: string; // CIDR
  readonly nextHop?: string;
}

export interface JoinInfo {
  /** external joins: the interface dockerd moves into the container. */
  readonly srcName?: string;
  readonly gateway4?: IpAddr;
  readonly gateway6?: IpAddr;
  readonly staticRoutes: readonly StaticRoute[];
}

/** Network options after the driver checked them (full keys; see netlabel.ts). */
export type DriverOptions = Readonly<Record<string, string>>;

export interface Driver {
  readonly type: Network['driver'];
  readonly scope: 'local' | 'global';
  /** Checks and normalises options before anything is recorded; throws a clear error, changes nothing. */
  checkNetwork(req: { id: string; internal: boolean; options: DriverOptions }): Promise<DriverOptions>;
  createNetwork(net: Network, t: Txn): Promise<void>;
  /** Removes what createNetwork made; tolerates parts already gone. */
  deleteNetwork(net: Network): Promise<void>;
  join(net: Network, ep: Endpoint, target: JoinTarget, t: Txn): Promise<JoinInfo>;
  /** Removes the endpoint's interface; `sandboxGoing` when the whole namespace is about to go. */
  leave(net: Network, ep: Endpoint, sandboxGoing: boolean): Promise<void>;
  programExternalConnectivity(net: Network, ep: Endpoint, ports: readonly PortMapping[], t: Txn): Promise<void>;
  revokeExternalConnectivity(net: Network, ep: Endpoint, ports: readonly PortMapping[]): Promise<void>;
  /**
   * Reconcile after a restart: make the kernel match `nets`/`eps` (the store's ready objects),
   * recreate what is missing, remove what this tnet instance owns and no longer wants.
   */
  restore(nets: readonly Network[], eps: readonly Endpoint[]): Promise<void>;
}
