import type { IpAddr } from './ipam/address.js';
import type { Subnet } from './ipam/subnet.js';

/**
 * The CNM objects as the core and the drivers see them. Plain data: the store persists them,
 * the controller changes them, the drivers read them.
 */
/** A driver's registered name (`bridge`, `overlay`, `macvlan`...): the registry knows them, the model does not. */
export type DriverType = string;

/**
 * Who made an object and drives its lifecycle: '' (nobody but the person typing `tnet network` or
 * `tnet sandbox`), 'docker' (dockerd, through the plugin), or `lab:NAME` (a lab topology). Names
 * are unique per owner, and teardown by owner needs no file.
 */
export type Owner = '' | 'docker' | `lab:${string}`;

/** Where a network's endpoint addresses come from: tnet's own pool, or an IPAM outside the network driver (dockerd's). */
export type AddressSource = 'tnet' | 'external';

/** creating/deleting: the intent is recorded and the kernel work may be half done (reconcile finishes it). */
export type Lifecycle = 'creating' | 'ready' | 'deleting';

export interface IpConfig {
  readonly poolId: string;
  readonly subnet: Subnet;
  readonly gateway: IpAddr | undefined;
}

export interface Network {
  readonly id: string; // 64 hex, like Docker's
  readonly name: string;
  readonly driver: DriverType;
  readonly state: Lifecycle;
  readonly internal: boolean;
  readonly ipv4: IpConfig | undefined;
  readonly ipv6: IpConfig | undefined;
  /** Driver options, full keys (see netlabel.ts). */
  readonly options: Readonly<Record<string, string>>;
  readonly labels: Readonly<Record<string, string>>;
  readonly owner: Owner;
  /** 'external': the network only records its subnets; addresses are handed out and released by another IPAM. */
  readonly addresses: AddressSource;
  readonly created: string;
}

/** lab: a namespace tnet made and configures fully. external: a path handed to tnet (Docker's SandboxKey). */
export type SandboxKind = 'lab' | 'external';

export interface Sandbox {
  readonly id: string;
  readonly name: string;
  readonly kind: SandboxKind;
  readonly owner: Owner;
  readonly state: Lifecycle;
  /** Path of the namespace file (/run/netns/tn-[SCOPE-]NAME for lab sandboxes). */
  readonly netns: string;
  readonly created: string;
}

export type Proto = 'tcp' | 'udp' | 'sctp';

export interface PortMapping {
  readonly proto: Proto;
  readonly containerPort: number;
  /** '' = every host address */
  readonly hostIp: string;
  readonly hostPort: number;
}

/** A request to publish: host port may be a range of which one port is chosen (Docker's -p 8000-8010:80). */
export interface PortRequest {
  readonly proto: Proto;
  readonly containerPort: number;
  readonly hostIp: string;
  /** 0 = pick an ephemeral port */
  readonly hostPort: number;
  readonly hostPortEnd: number;
}

export interface Endpoint {
  readonly id: string;
  readonly name: string;
  readonly networkId: string;
  readonly sandboxId: string | undefined;
  readonly state: Lifecycle;
  readonly ipv4: IpAddr | undefined;
  readonly ipv6: IpAddr | undefined;
  readonly mac: string;
  /**
   * The driver's interface in the host namespace, if it has one (a bridge's veth end). A macvlan
   * endpoint has none; an overlay endpoint's host end lives in the overlay's namespace.
   */
  readonly hostIfname: string | undefined;
  /** The interface name inside the sandbox (eth0, eth1...). */
  readonly ifname: string;
  readonly aliases: readonly string[];
  readonly ports: readonly PortMapping[];
  /** Whether this endpoint supplies the sandbox's default route. */
  readonly gatewayProvider: boolean;
  /**
   * The namespace another engine handed at its join (Docker's SandboxKey), while it is joined:
   * when that path is gone, so is the container, and the endpoint is stale.
   */
  readonly sandboxKey: string | undefined;
  readonly created: string;
}
