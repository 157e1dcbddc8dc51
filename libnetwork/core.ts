/**
 * What the operations on each CNM object (network.ts, sandbox.ts, endpoint.ts) share inside the
 * controller. The controller builds one and keeps it private: no face ever holds it, so the
 * controller stays the only writer of CNM state.
 */
import type { EventEmitter } from 'node:events';
import type { Driver, DriverRegistry, Tags } from './driverapi.js';
import { TnetError, invalid, notFound } from './errors.js';
import type { Allocator } from './ipam/allocator.js';
import type { Subnet } from './ipam/subnet.js';
import type { IpAddr } from './ipam/address.js';
import { KernelError, type Rtnl } from './kernel/index.js';
import type { KeyedLock } from './lock.js';
import type { Endpoint, Network, Owner, Sandbox } from './model.js';
import type { State } from './store/state.js';
import type { LabPlan } from './lab/plan.js';
import type { Cluster, ClusterSync, Peer } from './cluster.js';

/** Events for listeners such as the DNS server: they learn records from here, never from the store. */
export interface ControllerEvents {
  endpoint: [change: 'up' | 'down', ep: Endpoint, net: Network, sb: Sandbox | undefined];
  network: [change: 'up' | 'down', net: Network];
  sandbox: [change: 'up' | 'down', sb: Sandbox];
  /**
   * A lab's names for its DNS: its plan (every node's addresses) and the sandbox id of each node,
   * after its links are up; 'down' when it is destroyed (plan undefined).
   */
  lab: [change: 'up' | 'down', name: string, plan: LabPlan | undefined, sandboxOf: (node: string) => string | undefined];
  /** A remote endpoint (another host's, on a global network this host mirrors) came or went. */
  peer: [change: 'up' | 'down', peer: Peer, net: Network];
}

export interface Core {
  readonly state: State;
  readonly ipam: Allocator;
  readonly locks: KeyedLock;
  /** The host namespace's handle (host routes). */
  readonly rtnl: Rtnl;
  /** What host-wide kernel names carry ('' = none). */
  readonly scope: string;
  /** This instance's ownership tags (the alias on every link it makes in the host namespace). */
  readonly tags: Tags;
  /** Where lab sandboxes' resolv.conf goes. */
  readonly etcNetns: string;
  readonly registry: DriverRegistry;
  driver(type: string): Driver;
  /** What an auto-chosen pool must not overlap: the host's routes and the configured subnets. */
  taken(): Promise<Subnet[]>;
  /** Where the operations announce what changed (the controller itself). */
  readonly events: EventEmitter<ControllerEvents>;
  /** This host's tunnel endpoint when it is configured for a cluster (`--advertise-addr`), known before the store is reached. */
  readonly vtep: IpAddr | undefined;
  /** The cluster this host has joined (a global store), or undefined: none configured, or not reached yet. */
  cluster(): { readonly cluster: Cluster; readonly sync: ClusterSync } | undefined;
  /** Whether the network's driver is global-scope (its record and addresses are the cluster's). */
  isGlobal(net: Pick<Network, 'driver'>): boolean;
  /** The allocator of a network's addresses: this host's, or the cluster's for a global network. */
  allocator(net: Pick<Network, 'driver' | 'name'>): Allocator;
}

export const DOCKER_ID = /^[0-9a-f]{64}$/;

/** A ready network by id, name or id prefix (`owner` narrows the name); 'not-found' otherwise. */
export function readyNetwork(core: Core, ref: string, owner?: Owner): Network {
  const n = core.state.findNetwork(ref, owner);
  if (!n || n.state === 'creating') throw notFound(`network "${ref}" not found`, `network "${ref}"`);
  return n;
}

export function readySandbox(core: Core, ref: string, owner?: Owner): Sandbox {
  const s = core.state.findSandbox(ref, owner);
  if (!s || s.state === 'creating') throw notFound(`sandbox "${ref}" not found`, `sandbox "${ref}"`);
  return s;
}

/** How each owner's objects are removed, for the message that refuses another face's attempt. */
export function ownedElsewhere(kind: 'network' | 'sandbox', name: string, owner: Owner): TnetError {
  const how = owner === 'docker' ? `use docker ${kind === 'network' ? 'network rm' : 'rm'}` : owner.startsWith('lab:') ? `use tnet destroy ${owner.slice(4)}` : 'use tnet';
  const who = owner === 'docker' ? 'Docker' : owner.startsWith('lab:') ? `lab "${owner.slice(4)}"` : 'nobody';
  return invalid(`${kind} "${name}" belongs to ${who}; ${how}`, `${kind} "${name}"`);
}

/** Kernel errors carry errno names; the faces want a TnetError with a code. */
export function explain(e: unknown): unknown {
  if (e instanceof KernelError) {
    const code = e.errno === 'EEXIST' ? 'conflict' : /^E(OPNOTSUPP|NOTSUP)/.test(e.errno) ? 'unsupported' : 'kernel';
    return new TnetError(code, e.message, { object: e.object, cause: e });
  }
  return e;
}
