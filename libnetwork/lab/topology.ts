/**
 * A lab topology as the rest of tnet sees it: the user's file (YAML or JSON) or a library caller's
 * object, checked against lab.schema.json and the topology's own rules (cli/lab-file.ts for files
 * with line:column, checkLab() for objects), then handed to the planner (lab/plan.ts), which
 * fills in what the user left out (addresses, interface names) and applies it by owner `lab:NAME`.
 *
 * These types are the raw, user-level shape, after defaults that need no knowledge of the host.
 * Everything that depends on the host (which pools are free, which names are taken) is decided by
 * the planner, never here.
 */

/** A lab: what `tnet create FILE` reads. */
export interface LabSpec {
  /** The lab's name: the owner `lab:NAME` of everything it makes, and the DNS suffix of its nodes. */
  name: string;
  /** Give every link and LAN an IPv6 address too (auto-numbered from the lab's IPv6 pool). */
  ipv6?: boolean;
  /** Where auto-numbered subnets come from (defaults chosen by the planner, never colliding). */
  pools?: LabPools;
  /** Shared layer-2 segments (a bridge owned by the lab, or another driver's network). */
  networks: Record<string, LabNetworkSpec>;
  nodes: Record<string, LabNodeSpec>;
  links: LabLinkSpec[];
}

export interface LabPools {
  /** LAN subnets are carved from here (default: a free /16 of 10.0.0.0/8). */
  lan4?: string;
  /** Point-to-point /31s (default: a free /16 of 10.0.0.0/8). */
  p2p4?: string;
  /** Loopbacks given as `loopback: auto` (/32s). */
  loopback4?: string;
  /** IPv6 LANs (/64s), point-to-point links (/127s) and loopbacks (/128s) (default: a ULA /48). */
  ipv6?: string;
  /** The prefix length of auto-numbered LANs (default 24). */
  lanPrefix?: number;
}

export interface LabNetworkSpec {
  /**
   * Which tnet driver makes the segment (default bridge): bridge, macvlan, overlay. An overlay is
   * not the lab's own: it is a global network shared by every host of the cluster, joined (or
   * made, when no host has it yet) by its global name, so labs on several hosts meet on it.
   */
  driver?: string;
  /** overlay: the global network's name on every host (default: the key in `networks`). */
  name?: string;
  subnet?: string;
  gateway?: string;
  subnet6?: string;
  gateway6?: string;
  mtu?: number;
  /**
   * No NAT, no way in or out. Lab LANs are internal unless `internal: false`; an overlay is not
   * unless asked (it has no NAT of its own: there it only keeps a given gateway from being the
   * nodes' default route).
   */
  internal?: boolean;
  /** macvlan: the host interface the segment sits on. */
  parent?: string;
  /** Driver options, as `tnet network create -o KEY=VALUE`. */
  options?: Record<string, string>;
}

export interface LabNodeSpec {
  /** sysctl name (dots) -> value, written in the node before its links come up. */
  sysctls?: Record<string, string | number | boolean>;
  /** Shell commands run in order in the node after every link is up; one failing fails the create. */
  exec?: string[];
  /** Long-running commands started in the node after `exec`, stopped on destroy. */
  run?: string[];
  /** An address on the node's `lo` (CIDR, or "auto" for one from the loopback pool). */
  loopback?: string;
  loopback6?: string;
  /** Extra DNS names for the node (besides its own name). */
  aliases?: string[];
}

/** One side of a link: "node:ifname", "node" (interface named by the planner), or a network name. */
export type LabLinkEnd = string;

export interface LabLinkSpec {
  /** ["r1:eth1", "r2:eth1"] is a point-to-point veth; ["h1:eth0", "lan0"] puts h1 on network lan0. */
  endpoints: [LabLinkEnd, LabLinkEnd];
  /** Both ends get it (default: the network's MTU, or 1500). */
  mtu?: number;
  /** Shaping on both ends (tbf), e.g. "100mbit". */
  rate?: string;
  /** netem delay/loss, where the kernel has netem (refused clearly where it does not). */
  delay?: string;
  loss?: string;
  /**
   * Addresses (CIDR). Point-to-point: one per end, in endpoint order. Node on a network: one, the
   * node's. Left out: auto-numbered.
   */
  ipv4?: string | [string, string];
  ipv6?: string | [string, string];
}

/** The owner recorded on everything a lab makes (networks, sandboxes, wires). */
export const labOwner = (name: string): `lab:${string}` => `lab:${name}`;

/** Where a problem is in the spec, as a JSON path (["links", 2, "endpoints", 0]). */
export type SpecPath = readonly (string | number)[];

/** One problem with a spec; the file loader turns `path` into file:line:column. */
export interface LabProblem {
  path: SpecPath;
  message: string;
  /** The problem is the key at `path` itself (an unknown key, a bad node name), not its value. */
  at?: 'key';
}
