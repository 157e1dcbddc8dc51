import type { IpAddr } from './address.js';
import type { Allocation, Ipam, Pool, PoolRequest } from './ipam.js';

/**
 * What the controller asks of IPAM, asynchronous so that a store across the network (etcd, for
 * the global address domain) can implement it as well as the local SQLite one. Errors are the
 * TnetErrors of libnetwork/errors.ts, delivered as rejections: 'invalid-argument' for a bad
 * request, 'not-found' for an unknown pool or address, 'conflict' for an overlap or a taken
 * address, 'busy' for a parent pool that still has children. The semantics are Ipam's.
 */
export interface Allocator {
  /** Creates a pool, joins an identical shared one, or carves a child pool (PoolRequest). */
  requestPool(req: PoolRequest): Promise<Pool>;
  /** Drops one reference; the last deletes the pool with its addresses. Resolves to the references left. */
  releasePool(poolId: string): Promise<number>;
  /** The pool; rejects with 'not-found' if there is none with this id. */
  getPool(poolId: string): Promise<Pool>;
  /** Every pool, or every pool of `owner`, oldest first. */
  listPools(filter?: { owner?: string }): Promise<Pool[]>;
  /**
   * A static address (`address`) or the lowest free one of the pool's range, for `owner`.
   * `durable: false`: the caller records something durable in the same store right after, which
   * carries this allocation with it (a store without that notion ignores it).
   */
  requestAddress(poolId: string, opts?: { address?: string; owner?: string; durable?: boolean }): Promise<IpAddr>;
  /** Frees an allocated or held address; 'not-found' if it is not allocated. */
  releaseAddress(poolId: string, address: string): Promise<void>;
  /** Releases every static/dynamic address recorded for `owner` in any pool (crash clean-up); returns how many. */
  releaseOwned(owner: string, opts?: { durable?: boolean }): Promise<number>;
  /** Keeps `address` for `owner` without using it (a stopped container's static IP). */
  holdAddress(poolId: string, address: string, owner: string): Promise<IpAddr>;
  /** Every address of the pool that is not free, lowest first. */
  listAddresses(poolId: string): Promise<Allocation[]>;
}

/**
 * The Allocator of this host's state database: each call is one synchronous Ipam call (one SQLite
 * transaction), so nothing interleaves inside a call; a throw becomes a rejection.
 */
export class LocalAllocator implements Allocator {
  constructor(private readonly ipam: Ipam) {}

  async requestPool(req: PoolRequest): Promise<Pool> {
    return this.ipam.requestPool(req);
  }

  async releasePool(poolId: string): Promise<number> {
    return this.ipam.releasePool(poolId);
  }

  async getPool(poolId: string): Promise<Pool> {
    return this.ipam.getPool(poolId);
  }

  async listPools(filter?: { owner?: string }): Promise<Pool[]> {
    return this.ipam.listPools(filter);
  }

  async requestAddress(poolId: string, opts?: { address?: string; owner?: string; durable?: boolean }): Promise<IpAddr> {
    return this.ipam.requestAddress(poolId, opts);
  }

  async releaseAddress(poolId: string, address: string): Promise<void> {
    this.ipam.releaseAddress(poolId, address);
  }

  async releaseOwned(owner: string, opts?: { durable?: boolean }): Promise<number> {
    return this.ipam.releaseOwned(owner, opts);
  }

  async holdAddress(poolId: string, address: string, owner: string): Promise<IpAddr> {
    return this.ipam.holdAddress(poolId, address, owner);
  }

  async listAddresses(poolId: string): Promise<Allocation[]> {
    return this.ipam.listAddresses(poolId);
  }
}
