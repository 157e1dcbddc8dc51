import { createHash } from 'node:crypto';
import { invalid } from '../errors.js';
import { type Family, familyBits } from './address.js';
import { Subnet } from './subnet.js';

/**
 * One entry of dockerd's `default-address-pools`: the block `base` is cut into subnets of prefix
 * length `size`, handed out lowest first.
 */
export interface PoolSpec {
  readonly base: string;
  readonly size: number;
}

/**
 * Docker's default local pools (moby ipamutils): 172.17.0.0/16 .. 172.31.0.0/16 as /16s, then
 * 192.168.0.0/16 as /20s. Same order as dockerd, so a user moving from the bridge driver gets
 * the subnets they are used to.
 */
export const DEFAULT_V4_POOLS: readonly PoolSpec[] = [
  { base: '172.17.0.0/16', size: 16 },
  { base: '172.18.0.0/15', size: 16 },
  { base: '172.20.0.0/14', size: 16 },
  { base: '172.24.0.0/13', size: 16 },
  { base: '192.168.0.0/16', size: 20 },
];

/** Size of the subnets cut from the ULA prefix: a /64, the one size SLAAC and most tools expect. */
export const V6_POOL_SIZE = 64;

/**
 * A unique local (RFC 4193) /48: fd00::/8 plus a 40-bit global ID. RFC 4193 picks the ID at random;
 * here it is a hash of `seed` (the host id or the state directory), so the same host always gets
 * the same prefix and two hosts almost never share one.
 */
export function ulaPrefix(seed: string): Subnet {
  const globalId = BigInt('0x' + createHash('sha256').update(seed).digest('hex').slice(0, 10));
  return Subnet.of(6, ((0xfdn << 40n) | globalId) << 80n, 48);
}

/** The default IPv6 pools: /64s out of the ULA /48 derived from `seed`. */
export function defaultV6Pools(seed: string): PoolSpec[] {
  return [{ base: ulaPrefix(seed).toString(), size: V6_POOL_SIZE }];
}

/** A PoolSpec checked and parsed: the base block and the prefix length of the subnets cut from it. */
export interface PoolSource {
  readonly base: Subnet;
  readonly size: number;
}

/** Checks configured pools once, at start, so a typo fails there rather than at the first request. */
export function parsePoolSpecs(specs: readonly PoolSpec[], family: Family): PoolSource[] {
  return specs.map((spec) => {
    const base = Subnet.parse(spec.base);
    const what = `default address pool {base: ${spec.base}, size: ${spec.size}}`;
    if (base.family !== family) throw invalid(`${what} is not IPv${family}`, what);
    if (!Number.isInteger(spec.size) || spec.size < base.prefix || spec.size > familyBits(family)) {
      throw invalid(
        `${what}: size must be between the base's prefix length ${base.prefix} and ${familyBits(family)}`,
        what,
      );
    }
    return { base, size: spec.size };
  });
}

/**
 * What blocks a candidate subnet: undefined if nothing does, else the first address value past
 * the blocker (where free space may start again). A search for a free subnet jumps there.
 */
export type BlockedUntil = (candidate: Subnet) => bigint | undefined;

/**
 * The first subnet, in configuration order and lowest first inside each source, that nothing
 * blocks. Jumps over a blocker in one step instead of testing every candidate it covers, so a
 * large blocker (a /8 route, a run of a thousand pools) or a large source (65536 /64s in a /48)
 * costs no more than the number of blockers met.
 */
export function firstFreeBlock(sources: readonly PoolSource[], blockedUntil: BlockedUntil): Subnet | undefined {
  for (const { base, size } of sources) {
    const step = 1n << BigInt(familyBits(base.family) - size);
    const end = base.network + base.size;
    let at = base.network;
    while (at < end) {
      const candidate = Subnet.of(base.family, at, size);
      const past = blockedUntil(candidate);
      if (past === undefined) return candidate;
      // Next candidate: the first aligned block past the blocker (at least the next one).
      const aligned = ((past + step - 1n) / step) * step;
      at = aligned > at + step ? aligned : at + step;
    }
  }
  return undefined;
}

/** firstFreeBlock with a list of blockers: the first subnet that overlaps none of them. */
export function firstFreeSubnet(
  sources: readonly PoolSource[],
  blockers: readonly Subnet[],
): Subnet | undefined {
  return firstFreeBlock(sources, blockedBy(blockers));
}

/** A BlockedUntil for a list of subnets (a linear pass: for the few host routes to avoid). */
export function blockedBy(blockers: readonly Subnet[]): BlockedUntil {
  return (candidate) => {
    const b = blockers.find((s) => s.overlaps(candidate));
    return b && b.network + b.size;
  };
}
