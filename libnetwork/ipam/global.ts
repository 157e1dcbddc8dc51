/**
 * Global IPAM and the overlay network records, on a GlobalStore (etcd): what every host of a
 * cluster must agree on. Every allocation is one store transaction that creates a key only if it
 * is absent, so two hosts asking at the same moment never both win: the loser sees the winner's
 * key and tries the next candidate (or is refused, for an explicit name, VNI or address).
 *
 * Keys (all under GLOBAL_PREFIX, values JSON unless said otherwise):
 *   /tnet/v1/networks/<name>          GlobalNetwork: the network, unique by name across hosts
 *   /tnet/v1/vni/<vni>                the network name holding the VNI (decimal)
 *   /tnet/v1/pools/<poolId>           StoredPool: subnet, range, gateway, aux, owner
 *   /tnet/v1/pools-guard              the key every pool create compares and rewrites: overlap
 *                                     is a property of the whole set, not of one key, so pool
 *                                     creates are serialised through it (rare); it stays, tiny
 *   /tnet/v1/addr/<poolId>/<ip>       {kind, owner}: the address is taken (an etcd key per address
 *                                     allocated, created if absent: never two owners)
 *   /tnet/v1/hosts/<vtep>             {host, vtep} under the host's lease (store/peers.ts)
 *   /tnet/v1/peers/<network>/<epId>   Peer under the owning host's lease (store/peers.ts)
 * Leased keys vanish with their host; everything else stays until deleted.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { TnetError, busy, conflict, invalid, notFound } from '../errors.js';
import type { Compare, GlobalStore, KeyValue, Op, Watch } from '../store/global.js';
import { IpAddr } from './address.js';
import type { Allocator } from './allocator.js';
import { type PoolSource, type PoolSpec, firstFreeSubnet, parsePoolSpecs } from './defaults.js';
import type { AddressKind, Allocation, Pool, PoolRequest } from './ipam.js';
import { Subnet } from './subnet.js';
import { checkUsableSubnet, unusableAddressReason } from './usable.js';

export const GLOBAL_PREFIX = '/tnet/v1/';
export const KEYS = {
  networks: `${GLOBAL_PREFIX}networks/`,
  network: (name: string) => `${GLOBAL_PREFIX}networks/${name}`,
  vnis: `${GLOBAL_PREFIX}vni/`,
  vni: (vni: number) => `${GLOBAL_PREFIX}vni/${vni}`,
  pools: `${GLOBAL_PREFIX}pools/`,
  pool: (id: string) => `${GLOBAL_PREFIX}pools/${id}`,
  poolsGuard: `${GLOBAL_PREFIX}pools-guard`,
  addrs: (poolId: string) => `${GLOBAL_PREFIX}addr/${poolId}/`,
  addr: (poolId: string, ip: IpAddr) => `${GLOBAL_PREFIX}addr/${poolId}/${ip}`,
  hosts: `${GLOBAL_PREFIX}hosts/`,
  host: (vtep: string) => `${GLOBAL_PREFIX}hosts/${vtep}`,
  allPeers: `${GLOBAL_PREFIX}peers/`,
  peers: (network: string) => `${GLOBAL_PREFIX}peers/${network}/`,
  peer: (network: string, endpointId: string) => `${GLOBAL_PREFIX}peers/${network}/${endpointId}`,
} as const;

/**
 * VNIs: 4096 .. 2^24 - 1, libnetwork's overlay range (vxlanIDStart = 4096, vxlanIDEnd = 1<<24 - 1):
 * a VNI is 24 bits, and the low 4096 are left to hand-made VXLANs (flannel's VNI 1, VLAN-mapped
 * VNIs) that may share the underlay.
 */
export const VNI_MIN = 4096;
export const VNI_MAX = 2 ** 24 - 1;

/**
 * Default pools of overlay subnets: 10.0.0.0/8 cut into /24s, as swarm's default-addr-pool, so
 * they never meet the local bridge defaults (172.17-31, 192.168): a global subnet must be free on
 * every host, and the local defaults are exactly what each host's own networks take.
 */
export const DEFAULT_GLOBAL_V4_POOLS: readonly PoolSpec[] = [{ base: '10.0.0.0/8', size: 24 }];
/** IPv6 overlay subnets: /64s of one ULA /48 chosen for tnet's global space (fixed: every host must agree). */
export const DEFAULT_GLOBAL_V6_POOLS: readonly PoolSpec[] = [{ base: 'fd7e:7e7e:7e00::/48', size: 64 }];

/** A pool as stored in etcd. */
interface StoredPool {
  id: string;
  subnet: string;
  range: string;
  gateway?: string;
  aux: Record<string, string>;
  owner?: string;
  options: Record<string, string>;
}

interface StoredAddr {
  kind: AddressKind;
  owner?: string;
}

const toPool = (p: StoredPool): Pool => {
  const subnet = Subnet.parse(p.subnet);
  return {
    id: p.id,
    addressSpace: 'global',
    subnet,
    range: Subnet.parse(p.range),
    gateway: p.gateway !== undefined ? IpAddr.parse(p.gateway) : undefined,
    auxAddresses: Object.fromEntries(Object.entries(p.aux).map(([k, v]) => [k, IpAddr.parse(v)])),
    v6: subnet.family === 6,
    owner: p.owner,
    shared: false,
    refs: 1,
    options: p.options,
    childrenOnly: false,
  };
};

/** The first and last address a host may get in `range` of `subnet` (no network address, no IPv4 broadcast). */
function hostSpan(subnet: Subnet, range: Subnet): [bigint, bigint] {
  let lo = range.network;
  let hi = range.network + range.size - 1n;
  const single = subnet.family === 4 ? subnet.prefix >= 31 : subnet.prefix >= 127;
  if (!single) {
    if (lo === subnet.network) lo += 1n;
    if (subnet.family === 4 && hi === subnet.network + subnet.size - 1n) hi -= 1n;
  }
  return [lo, hi];
}

const parseJson = <T>(kv: KeyValue): T => JSON.parse(kv.value) as T;

/** Serialises the calls of this allocator on one key (a pool), so its own requests do not race each other in etcd. */
class KeyedQueue {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return next;
  }
}

/** How many times an allocation retries after losing a race to another host before giving up. */
const MAX_RACES = 64;

/**
 * The Allocator of the global address domain: pools and addresses in etcd, unique across every
 * host of the store. Unsupported here (refused with 'invalid-argument'): shared pools, child
 * pools and childrenOnly pools (local features: Docker's shared default pools, lab links).
 */
export class GlobalAllocator implements Allocator {
  private readonly v4: PoolSource[];
  private readonly v6: PoolSource[];
  private readonly queue = new KeyedQueue();
  private readonly poolCache = new Map<string, { pool: StoredPool; kv: KeyValue }>();
  /**
   * The addresses of each pool this allocator last saw taken, plus its own allocations since: a
   * dynamic request tries the lowest address not in it with one transaction, and lists the pool
   * again only when that loses (another host took it) or the pool looks full. Another host's
   * release is seen at the next listing; until then that address is merely skipped.
   */
  private readonly takenCache = new Map<string, Set<bigint>>();

  constructor(
    readonly store: GlobalStore,
    opts: { v4Pools?: readonly PoolSpec[]; v6Pools?: readonly PoolSpec[] } = {},
  ) {
    this.v4 = parsePoolSpecs(opts.v4Pools ?? DEFAULT_GLOBAL_V4_POOLS, 4);
    this.v6 = parsePoolSpecs(opts.v6Pools ?? DEFAULT_GLOBAL_V6_POOLS, 6);
  }

  /**
   * The compares and ops that create a pool, against the pools as they are now. Used alone
   * (requestPool) or inside a bigger transaction (GlobalNetworks.create).
   */
  async planPool(req: PoolRequest): Promise<{ pool: Pool; compares: Compare[]; ops: Op[] }> {
    if (req.shared) throw invalid('the global address space has no shared pools: each overlay network gets its own subnet', 'pool');
    if (req.parent !== undefined || req.childrenOnly) throw invalid('child pools are a local feature: the global address space does not carve them', 'pool');
    // The guard first, the pools after: a create committed in between changes the guard, so our
    // compare on it fails and we look again (the other order could miss a pool and overlap it).
    const guard = await this.store.get(KEYS.poolsGuard);
    const listing = await this.store.list(KEYS.pools);
    const taken = listing.items.map((kv) => Subnet.parse(parseJson<StoredPool>(kv).subnet));
    let subnet: Subnet;
    if (req.subnet !== undefined) {
      subnet = Subnet.parse(req.subnet);
      if (req.v6 !== undefined && req.v6 !== (subnet.family === 6)) throw invalid(`subnet ${subnet} is not IPv${req.v6 ? 6 : 4}`, `subnet "${subnet}"`);
      const clash = listing.items.map((kv) => parseJson<StoredPool>(kv)).find((p) => Subnet.parse(p.subnet).overlaps(subnet));
      if (clash) {
        throw conflict(
          `subnet ${subnet} overlaps ${clash.subnet}${clash.owner ? ` of ${clash.owner}` : ''} in the global address space (shared by every host of the store)`,
          `subnet "${subnet}"`,
        );
      }
    } else {
      const v6 = req.v6 ?? false;
      const found = firstFreeSubnet(v6 ? this.v6 : this.v4, [...taken, ...(req.avoid ?? []).filter((s) => s.prefix > 0)]);
      if (!found) throw conflict(`no free IPv${v6 ? 6 : 4} subnet is left in the global default pools`, 'global address space');
      subnet = found;
    }
    const hasGateway = !req.noGateway;
    checkUsableSubnet(subnet, hasGateway);
    const range = req.ipRange !== undefined ? Subnet.parse(req.ipRange) : subnet;
    if (!subnet.contains(range)) throw invalid(`ip-range ${range} is not inside subnet ${subnet}`, `ip-range "${range}"`);
    const [lo, hi] = hostSpan(subnet, subnet);
    const inside = (text: string, what: string) => {
      const a = IpAddr.parse(text);
      if (a.family !== subnet.family || a.value < lo || a.value > hi) throw invalid(`${what} ${a} is not a host address of subnet ${subnet}`, `${what} "${a}"`);
      return a;
    };
    const gateway = hasGateway ? (req.gateway !== undefined ? inside(req.gateway, 'gateway') : IpAddr.of(subnet.family, lo)) : undefined;
    const aux: Record<string, string> = {};
    for (const [name, text] of Object.entries(req.auxAddresses ?? {})) aux[name] = inside(text, `aux address ${name}`).toString();
    const stored: StoredPool = {
      id: `g-${randomUUID()}`,
      subnet: subnet.toString(),
      range: range.toString(),
      ...(gateway ? { gateway: gateway.toString() } : {}),
      aux,
      ...(req.owner !== undefined ? { owner: req.owner } : {}),
      options: { ...(req.options ?? {}) },
    };
    const compares: Compare[] = [guard ? { key: KEYS.poolsGuard, modRevision: guard.modRevision } : { key: KEYS.poolsGuard, absent: true }];
    const ops: Op[] = [
      { put: KEYS.poolsGuard, value: stored.id },
      { put: KEYS.pool(stored.id), value: JSON.stringify(stored) },
    ];
    const reserved = new Map<string, StoredAddr>();
    if (gateway) reserved.set(gateway.toString(), { kind: 'gateway', owner: req.owner });
    for (const a of Object.values(aux)) if (!reserved.has(a)) reserved.set(a, { kind: 'aux', owner: req.owner });
    for (const [a, rec] of reserved) ops.push({ put: KEYS.addr(stored.id, IpAddr.parse(a)), value: JSON.stringify(rec) });
    return { pool: toPool(stored), compares, ops };
  }

  async requestPool(req: PoolRequest): Promise<Pool> {
    return this.queue.run('pools', async () => {
      for (let race = 0; race < MAX_RACES; race++) {
        const plan = await this.planPool(req);
        if ((await this.store.commit(plan.compares, plan.ops)).ok) return plan.pool;
      }
      throw new TnetError('unavailable', `creating a pool in the global store at ${this.store.endpoint} lost ${MAX_RACES} races in a row; retry`, { object: 'pool' });
    });
  }

  private async stored(poolId: string): Promise<{ pool: StoredPool; kv: KeyValue }> {
    const kv = await this.store.get(KEYS.pool(poolId));
    if (!kv) {
      this.poolCache.delete(poolId);
      this.takenCache.delete(poolId);
      throw notFound(`pool ${poolId} does not exist in the global store`, `pool "${poolId}"`);
    }
    const found = { pool: parseJson<StoredPool>(kv), kv };
    this.poolCache.set(poolId, found);
    return found;
  }

  /**
   * The pool as last read. A pool record never changes (created, then deleted; ids are never
   * reused), and every allocation compares it in its transaction, so a stale cache entry costs
   * one failed transaction, never a wrong allocation: it saves a round trip per address.
   */
  private async cachedPool(poolId: string): Promise<{ pool: StoredPool; kv: KeyValue }> {
    return this.poolCache.get(poolId) ?? this.stored(poolId);
  }

  /** The ops that delete a pool with its addresses (after a compare on the pool's record). */
  deletePoolOps(poolId: string): Op[] {
    return [{ delete: KEYS.pool(poolId) }, { deletePrefix: KEYS.addrs(poolId) }];
  }

  async releasePool(poolId: string): Promise<number> {
    return this.queue.run('pools', async () => {
      for (let race = 0; race < MAX_RACES; race++) {
        const { kv } = await this.stored(poolId);
        if ((await this.store.commit([{ key: kv.key, modRevision: kv.modRevision }], this.deletePoolOps(poolId))).ok) {
          this.poolCache.delete(poolId);
          this.takenCache.delete(poolId);
          return 0;
        }
      }
      throw new TnetError('unavailable', `releasing pool ${poolId} lost ${MAX_RACES} races in a row; retry`, { object: `pool "${poolId}"` });
    });
  }

  async getPool(poolId: string): Promise<Pool> {
    return toPool((await this.stored(poolId)).pool);
  }

  async listPools(filter?: { owner?: string }): Promise<Pool[]> {
    const l = await this.store.list(KEYS.pools);
    return [...l.items]
      .sort((a, b) => a.createRevision - b.createRevision)
      .map((kv) => toPool(parseJson<StoredPool>(kv)))
      .filter((p) => filter?.owner === undefined || p.owner === filter.owner);
  }

  async requestAddress(poolId: string, opts: { address?: string; owner?: string; durable?: boolean } = {}): Promise<IpAddr> {
    return this.queue.run(poolId, async () => {
      const { pool: sp, kv: poolKv } = await this.cachedPool(poolId);
      const pool = toPool(sp);
      // Every allocation also compares the pool's record: a pool another host deleted meanwhile
      // gets no orphan address (the create fails, and the next look finds the pool gone).
      const poolHeld: Compare = { key: poolKv.key, modRevision: poolKv.modRevision };
      const take = async (key: string, value: string, cur?: KeyValue) =>
        (await this.store.commit([cur ? { key, modRevision: cur.modRevision } : { key, absent: true }, poolHeld], [{ put: key, value }])).ok;
      const [lo, hi] = hostSpan(pool.subnet, pool.subnet);
      const record = (kind: AddressKind) => JSON.stringify({ kind, ...(opts.owner !== undefined ? { owner: opts.owner } : {}) });
      if (opts.address !== undefined) {
        const a = IpAddr.parse(opts.address);
        const obj = `address "${a}"`;
        if (a.family !== pool.subnet.family || a.value < lo || a.value > hi) throw invalid(`address ${a} is not a host address of pool ${pool.subnet}`, obj);
        const why = unusableAddressReason(a);
        if (why) throw invalid(`address ${a} cannot be a host's: it is ${why}`, obj);
        const key = KEYS.addr(poolId, a);
        const cur = await this.store.get(key);
        if (cur) {
          const held = parseJson<StoredAddr>(cur);
          // A held address goes to its owner's static request (a stopped container coming back).
          if (held.kind === 'held' && opts.owner !== undefined && held.owner === opts.owner) {
            if (await take(key, record('static'), cur)) return a;
          }
          throw conflict(`address ${a} of pool ${pool.subnet} is already taken${held.owner ? ` by ${held.owner}` : ''} (${held.kind})`, obj);
        }
        if (await take(key, record('static'))) {
          this.takenCache.get(poolId)?.add(a.value);
          return a;
        }
        await this.stored(poolId); // not-found if the pool went away
        throw conflict(`address ${a} of pool ${pool.subnet} was taken by another host a moment ago`, obj);
      }
      const [rlo, rhi] = hostSpan(pool.subnet, pool.range);
      for (let race = 0; race < MAX_RACES; race++) {
        let taken = this.takenCache.get(poolId);
        const fresh = taken === undefined;
        if (!taken) {
          taken = new Set((await this.store.list(KEYS.addrs(poolId))).items.map((kv) => IpAddr.parse(kv.key.slice(KEYS.addrs(poolId).length)).value));
          this.takenCache.set(poolId, taken);
        }
        let v = rlo;
        while (v <= rhi && taken.has(v)) v++;
        if (v > rhi) {
          if (fresh) throw conflict(`pool ${pool.subnet} has no free address left${pool.range.equals(pool.subnet) ? '' : ` in its range ${pool.range}`}`, `pool "${poolId}"`);
          this.takenCache.delete(poolId); // full as far as we knew: look again before saying so
          continue;
        }
        const a = IpAddr.of(pool.subnet.family, v);
        if (await take(KEYS.addr(poolId, a), record('dynamic'))) {
          taken.add(v);
          return a;
        }
        this.takenCache.delete(poolId);
        await this.stored(poolId); // not-found if the pool went away
        // Another host took it since our listing: list again.
      }
      throw new TnetError('unavailable', `allocating an address of pool ${pool.subnet} lost ${MAX_RACES} races in a row; retry`, { object: `pool "${poolId}"` });
    });
  }

  async releaseAddress(poolId: string, address: string): Promise<void> {
    const a = IpAddr.parse(address);
    this.takenCache.get(poolId)?.delete(a.value);
    if (!(await this.store.delete(KEYS.addr(poolId, a)))) throw notFound(`address ${a} is not allocated in pool ${poolId}`, `address "${a}"`);
  }

  async releaseOwned(owner: string): Promise<number> {
    const l = await this.store.list(`${GLOBAL_PREFIX}addr/`);
    let n = 0;
    for (const kv of l.items) {
      const rec = parseJson<StoredAddr>(kv);
      if (rec.owner !== owner || (rec.kind !== 'static' && rec.kind !== 'dynamic' && rec.kind !== 'held')) continue;
      if ((await this.store.commit([{ key: kv.key, modRevision: kv.modRevision }], [{ delete: kv.key }])).ok) n++;
    }
    if (n) this.takenCache.clear(); // rare (crash clean-up): every pool is listed afresh
    return n;
  }

  async holdAddress(poolId: string, address: string, owner: string): Promise<IpAddr> {
    const a = IpAddr.parse(address);
    const key = KEYS.addr(poolId, a);
    await this.stored(poolId);
    const cur = await this.store.get(key);
    const value = JSON.stringify({ kind: 'held', owner });
    if (!cur) {
      if (await this.store.create(key, value)) return a;
    } else {
      const rec = parseJson<StoredAddr>(cur);
      if (rec.owner === owner && (await this.store.swap(key, cur.modRevision, value))) return a;
    }
    throw conflict(`address ${a} of pool ${poolId} is taken by someone other than ${owner}`, `address "${a}"`);
  }

  async listAddresses(poolId: string): Promise<Allocation[]> {
    await this.stored(poolId);
    const prefix = KEYS.addrs(poolId);
    return (await this.store.list(prefix)).items
      .map((kv) => {
        const rec = parseJson<StoredAddr>(kv);
        return { address: IpAddr.parse(kv.key.slice(prefix.length)), kind: rec.kind, ...(rec.owner !== undefined ? { owner: rec.owner } : {}) };
      })
      .sort((x, y) => (x.address.value < y.address.value ? -1 : x.address.value > y.address.value ? 1 : 0));
  }
}

/**
 * The network's DNS address: the last host address of its IPv4 subnet not reserved already (the
 * gateway, an aux address), planned in `ops`; none for a subnet too small to spare one (< /29).
 */
function dnsAddress(pool: Pool, ops: readonly Op[]): IpAddr | undefined {
  if (pool.subnet.prefix > 29) return undefined;
  const [, hi] = hostSpan(pool.subnet, pool.subnet);
  const taken = new Set(ops.filter((o): o is Extract<Op, { put: string }> => 'put' in o).map((o) => o.put));
  for (let v = hi; v > hi - 4n; v--) {
    const a = IpAddr.of(4, v);
    if (!taken.has(KEYS.addr(pool.id, a)) && !pool.gateway?.equals(a)) return a;
  }
  return undefined;
}

/** An overlay network as every host sees it. */
export interface GlobalNetwork {
  readonly id: string;
  readonly name: string;
  readonly driver: string;
  readonly vni: number;
  /** The pools of its subnets (IPv4 first), in the GlobalAllocator. */
  readonly pools: readonly { readonly poolId: string; readonly subnet: string; readonly gateway?: string }[];
  readonly options: Readonly<Record<string, string>>;
  /** The host that created it (for messages). */
  readonly createdBy: string;
  /**
   * The address every host serves the network's DNS on, inside its IPv4 subnet (the last host
   * address, reserved): for engines whose containers reach no other DNS of tnet's (Docker's
   * `--dns`).
   */
  readonly dns?: string;
  /** Who drives its lifecycle on every host (`''`: people, through tnet network). */
  readonly owner?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly internal?: boolean;
  readonly created?: string;
}

export interface GlobalNetworkRequest {
  readonly name: string;
  readonly driver?: string;
  /** Explicit VNI (-o vni=N): honoured, or refused 'conflict' when another network has it. */
  readonly vni?: number;
  /** Pools to create: one per subnet request (an empty request: an auto IPv4 subnet). */
  readonly pools?: readonly PoolRequest[];
  readonly options?: Readonly<Record<string, string>>;
  /** This host's name, recorded as the creator. */
  readonly host: string;
  /** The id every host mirrors it under (64 hex digits); default a new one. */
  readonly id?: string;
  readonly owner?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly internal?: boolean;
}

/**
 * Overlay network records: a network, its VNI and its pools created in ONE transaction, so two
 * hosts creating `web` at the same moment end with exactly one network `web` (the other is
 * refused 'conflict'), one VNI each and no overlapping subnets.
 */
export class GlobalNetworks {
  constructor(
    readonly store: GlobalStore,
    readonly ipam: GlobalAllocator,
  ) {}

  async create(req: GlobalNetworkRequest): Promise<GlobalNetwork> {
    const obj = `network "${req.name}"`;
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/.test(req.name)) throw invalid(`network name "${req.name}" must be 1-63 letters, digits, "_", "." or "-", starting with a letter or digit`, obj);
    if (req.vni !== undefined && (!Number.isInteger(req.vni) || req.vni < VNI_MIN || req.vni > VNI_MAX)) {
      throw invalid(`vni ${req.vni} is out of range: overlay VNIs are ${VNI_MIN}-${VNI_MAX}`, obj);
    }
    for (let race = 0; race < MAX_RACES; race++) {
      const existing = await this.store.get(KEYS.network(req.name));
      if (existing) throw conflict(`network ${req.name} already exists (created by ${parseJson<GlobalNetwork>(existing).createdBy})`, obj);
      let vni = req.vni;
      if (vni !== undefined) {
        const holder = await this.store.get(KEYS.vni(vni));
        if (holder) throw conflict(`vni ${vni} is already used by network ${holder.value}`, obj);
      } else {
        const used = new Set((await this.store.list(KEYS.vnis)).items.map((kv) => Number(kv.key.slice(KEYS.vnis.length))));
        vni = VNI_MIN;
        while (used.has(vni)) vni++;
        if (vni > VNI_MAX) throw conflict('every overlay VNI is taken', obj);
      }
      const compares: Compare[] = [
        { key: KEYS.network(req.name), absent: true },
        { key: KEYS.vni(vni), absent: true },
      ];
      const ops: Op[] = [];
      const pools: { poolId: string; subnet: string; gateway?: string }[] = [];
      let dns: IpAddr | undefined;
      const requests = req.pools && req.pools.length ? req.pools : [{}];
      // Several pools in one transaction: plan them one after the other against the ones already planned.
      const planned: Subnet[] = [];
      for (const pr of requests) {
        const plan = await this.ipam.planPool({ ...pr, owner: req.name, avoid: [...(pr.avoid ?? []), ...planned] });
        if (planned.some((s) => s.overlaps(plan.pool.subnet))) throw conflict(`the subnets of network ${req.name} overlap each other`, obj);
        planned.push(plan.pool.subnet);
        if (!compares.some((c) => c.key === KEYS.poolsGuard)) compares.push(...plan.compares);
        ops.push(...plan.ops.filter((o) => !('put' in o && o.put === KEYS.poolsGuard)));
        pools.push({ poolId: plan.pool.id, subnet: plan.pool.subnet.toString(), ...(plan.pool.gateway ? { gateway: plan.pool.gateway.toString() } : {}) });
        if (dns === undefined && plan.pool.subnet.family === 4) {
          dns = dnsAddress(plan.pool, ops);
          if (dns) ops.push({ put: KEYS.addr(plan.pool.id, dns), value: JSON.stringify({ kind: 'aux', owner: `${req.name} dns` } satisfies StoredAddr) });
        }
      }
      const net: GlobalNetwork = {
        id: req.id ?? randomBytes(32).toString('hex'),
        name: req.name,
        driver: req.driver ?? 'overlay',
        vni,
        pools,
        options: { ...(req.options ?? {}) },
        createdBy: req.host,
        ...(dns ? { dns: dns.toString() } : {}),
        ...(req.owner ? { owner: req.owner } : {}),
        ...(req.labels && Object.keys(req.labels).length ? { labels: req.labels } : {}),
        ...(req.internal ? { internal: true } : {}),
        created: new Date().toISOString(),
      };
      ops.push({ put: KEYS.poolsGuard, value: net.id }, { put: KEYS.network(req.name), value: JSON.stringify(net) }, { put: KEYS.vni(vni), value: req.name });
      if ((await this.store.commit(compares, ops)).ok) return net;
      // Lost a race (name, VNI or the pools changed under us): look again; an explicit name or VNI taken is refused above.
    }
    throw new TnetError('unavailable', `creating network ${req.name} lost ${MAX_RACES} races in a row in the global store; retry`, { object: obj });
  }

  async get(name: string): Promise<GlobalNetwork | undefined> {
    const kv = await this.store.get(KEYS.network(name));
    return kv ? parseJson<GlobalNetwork>(kv) : undefined;
  }

  async list(): Promise<GlobalNetwork[]> {
    return (await this.store.list(KEYS.networks)).items.map((kv) => parseJson<GlobalNetwork>(kv));
  }

  /**
   * The networks as they come and go on every host: a 'resync' with all of them first (and again
   * after a compaction), then puts and deletes of KEYS.network(name) (values: GlobalNetwork JSON).
   * What a daemon mirrors into its local store.
   */
  watch(): Watch {
    return this.store.watch(KEYS.networks);
  }

  /**
   * Deletes the network with its VNI, pools and addresses. Refused ('busy') while any host still
   * has an endpoint on it (a peer record: a dead host's expire with its lease, so they never
   * block for longer than the TTL).
   */
  async delete(name: string): Promise<void> {
    const obj = `network "${name}"`;
    for (let race = 0; race < MAX_RACES; race++) {
      const kv = await this.store.get(KEYS.network(name));
      if (!kv) throw notFound(`network ${name} does not exist in the global store`, obj);
      const net = parseJson<GlobalNetwork>(kv);
      const peers = await this.store.list(KEYS.peers(name));
      if (peers.items.length) {
        const hosts = [...new Set(peers.items.map((p) => (JSON.parse(p.value) as { host?: string }).host ?? '?'))];
        throw busy(`network ${name} still has ${peers.items.length} endpoint(s) on host(s) ${hosts.join(', ')}: disconnect them first`, obj);
      }
      // A peer published between the check above and this commit is deleted with the network;
      // its host learns it from its watch of the networks. Deleting pools cannot make an overlap,
      // so the pools guard is not involved.
      const compares: Compare[] = [{ key: kv.key, modRevision: kv.modRevision }];
      const ops: Op[] = [{ delete: kv.key }, { delete: KEYS.vni(net.vni) }, { deletePrefix: KEYS.peers(name) }];
      for (const p of net.pools) ops.push(...this.ipam.deletePoolOps(p.poolId));
      if ((await this.store.commit(compares, ops)).ok) return;
    }
    throw new TnetError('unavailable', `deleting network ${name} lost ${MAX_RACES} races in a row; retry`, { object: obj });
  }
}
