import type { IpAddr } from './ipam/address.js';
import type { Subnet } from './ipam/subnet.js';

/**
 * The CNM objects as the core and the drivers see them. Plain data: the store persists them,
 * the controller changes them, the drivers read them.
 */
export type DriverType = 'bridge';

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
  /** Created through the Docker plugin (dockerd owns its lifecycle). */
  readonly docker: boolean;
  readonly created: string;
}

/** lab: a namespace tnet made and configures fully. external: a path handed to tnet (Docker's SandboxKey). */
export type SandboxKind = 'lab' | 'external';

export interface Sandbox {
  readonly id: string;
  readonly name: string;
  readonly kind: SandboxKind;
  readonly state: Lifecycle;
  /** Path of the namespace file (/run/netns/tn-NAME for lab sandboxes). */
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
  /** The host end of the veth (tnet-owned name). */
  readonly hostIfname: string;
  /** The interface name inside the sandbox (eth0, eth1...). */
  readonly ifname: string;
  readonly aliases: readonly string[];
  readonly ports: readonly PortMapping[];
  /** Whether this endpoint supplies the sandbox's default route. */
  readonly gatewayProvider: boolean;
  readonly created: string;
}
