import { randomUUID } from 'node:crypto';
import { TnetError, conflict, invalid, notFound } from '../errors.js';
import { type Db, type Migration, migrate } from '../store/db.js';
import { type Family, IpAddr, familyBits } from './address.js';
import {
  DEFAULT_V4_POOLS,
  type PoolSource,
  type PoolSpec,
  defaultV6Pools,
  firstFreeSubnet,
  parsePoolSpecs,
} from './defaults.js';
import { Subnet } from './subnet.js';

/*
 * Storage. Three tables, all changed only inside one IMMEDIATE transaction per operation, so two
 * processes sharing the database file serialise on SQLite's write lock and a kill -9 loses nothing
 * that returned.
 *
 * - ipam_pools: one row per pool, with its definition (subnet, range, gateway, aux addresses).
 * - ipam_addresses: one row per address that is not free (gateway, aux, static, dynamic, held),
 *   with its owner. PRIMARY KEY (pool, addr) is the last line of defence against handing out an
 *   address twice.
 * - ipam_free: the free addresses of each pool as disjoint runs [lo, hi]; a run-length "bitmap".
 *   First-free is one index lookup, so time and space grow with the number of holes, never with
 *   the size of the pool: a /48 costs what a /24 costs.
 *
 * Addresses are 16-byte big-endian BLOBs (IPv4 too, zero-extended): SQLite compares BLOBs with
 * memcmp, so byte order is numeric order and range queries on the primary key are exact.
 */
export const migrations: Migration[] = [
  {
    id: 'ipam-1',
    sql: `
      CREATE TABLE ipam_pools (
        id            TEXT PRIMARY KEY,
        address_space TEXT NOT NULL,
        family        INTEGER NOT NULL CHECK (family IN (4, 6)),
        subnet        TEXT NOT NULL,           -- canonical CIDR
        range         TEXT NOT NULL,           -- canonical CIDR; = subnet when no ip-range
        gateway       TEXT,                    -- canonical address, NULL for no gateway
        aux           TEXT NOT NULL,           -- JSON {name: address}
        owner         TEXT,
        shared        INTEGER NOT NULL CHECK (shared IN (0, 1)),
        share_key     TEXT,                    -- identity of a shared request; NULL unless shared
        refs          INTEGER NOT NULL CHECK (refs >= 1),
        options       TEXT NOT NULL,           -- JSON {key: value}, kept for the faces
        created_at    TEXT NOT NULL DEFAULT (datetime('now'))
      );
      CREATE INDEX ipam_pools_share_key ON ipam_pools (share_key) WHERE share_key IS NOT NULL;
      CREATE TABLE ipam_addresses (
        pool  TEXT NOT NULL REFERENCES ipam_pools (id) ON DELETE CASCADE,
        addr  BLOB NOT NULL CHECK (length(addr) = 16),
        kind  TEXT NOT NULL CHECK (kind IN ('gateway', 'aux', 'static', 'dynamic', 'held')),
        owner TEXT,
        PRIMARY KEY (pool, addr)
      ) WITHOUT ROWID;
      CREATE TABLE ipam_free (
        pool TEXT NOT NULL REFERENCES ipam_pools (id) ON DELETE CASCADE,
        lo   BLOB NOT NULL CHECK (length(lo) = 16),
        hi   BLOB NOT NULL CHECK (length(hi) = 16),
        PRIMARY KEY (pool, lo)
      ) WITHOUT ROWID;
    `,
  },
];

/** The address space pools go to when a request names none. */
export const DEFAULT_ADDRESS_SPACE = 'local';

export interface PoolRequest {
  /** CIDR; omitted = the first default pool of the family that is free and not in `avoid`. */
  readonly subnet?: string;
  /** CIDR inside `subnet`: dynamic addresses come from here (Docker's --ip-range / SubPool). */
  readonly ipRange?: string;
  /** Reserved at creation. Default: the first usable address of the subnet (not of ipRange). */
  readonly gateway?: string;
  /** No gateway is reserved (the Docker face: dockerd asks for the gateway with RequestAddress). */
  readonly noGateway?: boolean;
  /** Named addresses reserved at creation (Docker's --aux-address name=ip). */
  readonly auxAddresses?: Readonly<Record<string, string>>;
  /** IPv6 pool. Defaults to the subnet's family, or IPv4 when no subnet is given. */
  readonly v6?: boolean;
  /**
   * Subnets an auto-chosen pool must not overlap: the host's routes (destinations, without the
   * default route; a /0 here is ignored, as dockerd ignores the default route). Not applied to an
   * explicit subnet, which only has to be free of other tnet pools.
   */
  readonly avoid?: readonly Subnet[];
  /** Who the pool is for (a network id or name); shown in conflict messages. */
  readonly owner?: string;
  readonly addressSpace?: string;
  readonly options?: Readonly<Record<string, string>>;
  /**
   * Docker semantics: an identical shared request (same address space, subnet, range, gateway and
   * aux addresses) returns the existing shared pool and adds a reference; releasePool drops one
   * reference and deletes the pool with the last. Without `shared`, any overlap is a conflict.
   */
  readonly shared?: boolean;
}

export interface Pool {
  readonly id: string;
  readonly addressSpace: string;
  readonly subnet: Subnet;
  /** Where dynamic addresses come from; equals `subnet` when no ip-range was given. */
  readonly range: Subnet;
  readonly gateway?: IpAddr;
  readonly auxAddresses: Readonly<Record<string, IpAddr>>;
  readonly v6: boolean;
  readonly owner?: string;
  readonly shared: boolean;
  /** References held by shared requests; 1 for an unshared pool. */
  readonly refs: number;
  readonly options: Readonly<Record<string, string>>;
}

/**
 * Why an address is not free. `held`: kept for its owner (e.g. a stopped container's static IP);
 * dynamic allocation skips it and only a static request by the same owner takes it.
 */
export type AddressKind = 'gateway' | 'aux' | 'static' | 'dynamic' | 'held';

export interface Allocation {
  readonly address: IpAddr;
  readonly kind: AddressKind;
  readonly owner?: string;
}

export interface IpamOptions {
  /** IPv4 auto pools (dockerd's default-address-pools). Default: DEFAULT_V4_POOLS. */
  readonly v4Pools?: readonly PoolSpec[];
  /** IPv6 auto pools. Default: /64s of the ULA /48 derived from `ulaSeed`. */
  readonly v6Pools?: readonly PoolSpec[];
  /** Seed of the default ULA prefix: a host id or the state directory. Default: the db file path. */
  readonly ulaSeed?: string;
}

interface PoolRow {
  id: string;
  address_space: string;
  family: Family;
  subnet: string;
  range: string;
  gateway: string | null;
  aux: string;
  owner: string | null;
  shared: 0 | 1;
  share_key: string | null;
  refs: number;
  options: string;
}

interface Run {
  lo: bigint;
  hi: bigint;
}

/** 16-byte big-endian key: memcmp order is numeric order. */
function key(v: bigint): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(v >> 64n, 0);
  b.writeBigUInt64BE(v & 0xffff_ffff_ffff_ffffn, 8);
  return b;
}

function unkey(b: Buffer): bigint {
  return (b.readBigUInt64BE(0) << 64n) | b.readBigUInt64BE(8);
}

/**
 * The addresses of a subnet a host may use. IPv4 loses the network and broadcast addresses,
 * except in /31 and /32 (RFC 3021, point-to-point). IPv6 has no broadcast; its first address is
 * the subnet-router anycast (RFC 4291 2.6.1), kept back as dockerd does, except in /127 and /128.
 */
function usable(s: Subnet): Run {
  const lo = s.network;
  const hi = s.network + s.size - 1n;
  if (s.prefix >= familyBits(s.family) - 1) return { lo, hi };
  return { lo: lo + 1n, hi: s.family === 4 ? hi - 1n : hi };
}

/** The gateway a pool gets: the requested one, else the subnet's first usable address, unless noGateway. */
function gatewayOf(want: { gateway?: IpAddr | undefined; noGateway: boolean }, subnet: Subnet): IpAddr | undefined {
  return want.noGateway ? undefined : (want.gateway ?? IpAddr.of(subnet.family, usable(subnet).lo));
}

/** Why `a` (inside `s`) can never be allocated, or undefined if it can. */
function reservedReason(s: Subnet, a: IpAddr): string | undefined {
  const { lo, hi } = usable(s);
  if (a.value >= lo && a.value <= hi) return undefined;
  if (a.value === s.network) {
    return s.family === 4 ? 'the network address' : 'the subnet-router anycast address';
  }
  return 'the broadcast address';
}

const ownerText = (owner: string | null | undefined) =>
  owner ? `owner "${owner}"` : 'no owner recorded';

/** Address pools and allocation on the SQLite state database. See the storage note above. */
export class Ipam {
  private readonly v4Sources: PoolSource[];
  private readonly v6Sources: PoolSource[];
  private readonly q: ReturnType<typeof statements>;

  constructor(
    private readonly db: Db,
    options: IpamOptions = {},
  ) {
    this.v4Sources = parsePoolSpecs(options.v4Pools ?? DEFAULT_V4_POOLS, 4);
    this.v6Sources = parsePoolSpecs(options.v6Pools ?? defaultV6Pools(options.ulaSeed ?? db.name), 6);
    migrate(db, migrations);
    this.q = statements(db);
  }

  // ---- pools ----

  /** Creates a pool (or joins an identical shared one). Refuses bad or overlapping requests. */
  requestPool(req: PoolRequest = {}): Pool {
    const want = this.checkPoolRequest(req);
    return this.db
      .transaction((): Pool => {
        if (want.shared && want.subnet) {
          const same = this.q.poolByShareKey.get(shareKey(want, want.subnet, want.range ?? want.subnet)) as
            | PoolRow
            | undefined;
          if (same) {
            this.q.setRefs.run(same.refs + 1, same.id);
            return toPool({ ...same, refs: same.refs + 1 });
          }
        }
        const existing = (this.q.pools.all() as PoolRow[]).map((r) => ({ row: r, subnet: Subnet.parse(r.subnet) }));
        let subnet = want.subnet;
        if (subnet) {
          const clash = existing.find((p) => p.subnet.overlaps(subnet!));
          if (clash) {
            throw conflict(
              `subnet ${subnet} overlaps ${clash.subnet} of pool ${clash.row.id} (${ownerText(clash.row.owner)})` +
                (clash.row.shared && want.shared ? '; a shared pool is only reused by an identical request' : ''),
              `subnet "${subnet}"`,
            );
          }
        } else {
          const blockers = [...existing.map((p) => p.subnet), ...want.avoid];
          subnet = firstFreeSubnet(want.family === 4 ? this.v4Sources : this.v6Sources, blockers);
          if (!subnet) {
            const sources = (want.family === 4 ? this.v4Sources : this.v6Sources)
              .map((s) => `${s.base} (/${s.size})`)
              .join(', ');
            throw conflict(
              `no free IPv${want.family} default pool left: every subnet of ${sources} overlaps an existing pool or a host route`,
            );
          }
        }
        const range = want.range ?? subnet;
        const gateway = gatewayOf(want, subnet);
        const id = randomUUID();
        this.q.insertPool.run({
          id,
          address_space: want.addressSpace,
          family: want.family,
          subnet: subnet.toString(),
          range: range.toString(),
          gateway: gateway?.toString() ?? null,
          aux: JSON.stringify(Object.fromEntries(want.aux.map(([n, a]) => [n, a.toString()]))),
          owner: want.owner ?? null,
          shared: want.shared ? 1 : 0,
          share_key: want.shared ? shareKey(want, subnet, range) : null,
          options: JSON.stringify(want.options),
        });
        const all = usable(subnet);
        this.q.insertRun.run(id, key(all.lo), key(all.hi));
        if (gateway) this.take(id, gateway.value, 'gateway', null);
        for (const [name, a] of want.aux) this.take(id, a.value, 'aux', name);
        return this.loadPool(id);
      })
      .immediate();
  }

  /**
   * Drops one reference to the pool; the last one deletes the pool with every address in it
   * (the caller, which owns the network, has decided it is gone). Returns the references left.
   */
  releasePool(poolId: string): number {
    return this.db
      .transaction((): number => {
        const row = this.poolRow(poolId);
        if (row.refs > 1) {
          this.q.setRefs.run(row.refs - 1, poolId);
          return row.refs - 1;
        }
        this.q.deletePoolAddresses.run(poolId);
        this.q.deletePoolFree.run(poolId);
        this.q.deletePool.run(poolId);
        return 0;
      })
      .immediate();
  }

  /** The pool; 'not-found' if there is none with this id. */
  getPool(poolId: string): Pool {
    return this.loadPool(poolId);
  }

  /** Every pool, oldest first. */
  listPools(): Pool[] {
    return (this.q.pools.all() as PoolRow[]).map(toPool);
  }

  // ---- addresses ----

  /**
   * A static address (`address`: inside the subnet, possibly outside the ip-range as Docker
   * allows) or, without one, the lowest free address of the pool's range. Refuses a taken static
   * address ('conflict', naming its owner) unless it is held for the same `owner`.
   */
  requestAddress(poolId: string, opts: { address?: string; owner?: string } = {}): IpAddr {
    const wanted = opts.address === undefined || opts.address === '' ? undefined : IpAddr.parse(opts.address);
    const owner = opts.owner ?? null;
    return this.db
      .transaction((): IpAddr => {
        const pool = this.loadPool(poolId);
        if (wanted) {
          this.checkInSubnet(pool.subnet, wanted, 'address');
          const row = this.addressRow(poolId, wanted.value);
          if (row) {
            if (row.kind === 'held' && owner !== null && row.owner === owner) {
              this.q.updateAddress.run('static', owner, poolId, key(wanted.value));
              return wanted;
            }
            throw this.taken(pool, wanted, row);
          }
          this.take(poolId, wanted.value, 'static', owner);
          return wanted;
        }
        const bounds = usable(pool.subnet);
        const lo = pool.range.network > bounds.lo ? pool.range.network : bounds.lo;
        const rangeHi = pool.range.network + pool.range.size - 1n;
        const hi = rangeHi < bounds.hi ? rangeHi : bounds.hi;
        const free = this.firstFree(poolId, lo, hi);
        if (free === undefined) {
          const where = pool.range.equals(pool.subnet) ? '' : `range ${pool.range} of `;
          throw conflict(`no free address left in ${where}pool ${pool.subnet}`, `pool "${poolId}"`);
        }
        this.take(poolId, free, 'dynamic', owner);
        return IpAddr.of(pool.subnet.family, free);
      })
      .immediate();
  }

  /**
   * Keeps `address` for `owner` without using it: dynamic allocation skips it, and only a static
   * requestAddress by the same owner takes it. This is how a static IP survives its container
   * being stopped (moby#49781): hold it instead of releasing it. Holding an address the owner
   * already has turns it into a hold; an address of anyone else is a 'conflict'.
   */
  holdAddress(poolId: string, address: string, owner: string): IpAddr {
    const a = IpAddr.parse(address);
    if (!owner) throw invalid(`holding address ${a} needs an owner to hold it for`, `address "${a}"`);
    return this.db
      .transaction((): IpAddr => {
        const pool = this.loadPool(poolId);
        this.checkInSubnet(pool.subnet, a, 'address');
        const row = this.addressRow(poolId, a.value);
        if (!row) {
          this.take(poolId, a.value, 'held', owner);
        } else if ((row.kind === 'static' || row.kind === 'dynamic' || row.kind === 'held') && row.owner === owner) {
          this.q.updateAddress.run('held', owner, poolId, key(a.value));
        } else {
          throw this.taken(pool, a, row);
        }
        return a;
      })
      .immediate();
  }

  /**
   * Frees an allocated or held address for reuse. 'not-found' if it is not allocated (faces that
   * must be idempotent, like Docker's ReleaseAddress, may treat that as success). The gateway and
   * aux addresses belong to the pool's definition and go with the pool.
   */
  releaseAddress(poolId: string, address: string): void {
    const a = IpAddr.parse(address);
    this.db
      .transaction(() => {
        const pool = this.loadPool(poolId);
        const row = this.addressRow(poolId, a.value);
        if (!row) {
          throw notFound(`address ${a} is not allocated in pool ${pool.subnet}`, `address "${a}"`);
        }
        if (row.kind === 'gateway' || row.kind === 'aux') {
          const what = row.kind === 'gateway' ? 'the gateway' : `aux address "${row.owner}"`;
          throw invalid(
            `address ${a} is ${what} of pool ${pool.subnet}; it is released with the pool`,
            `address "${a}"`,
          );
        }
        this.q.deleteAddress.run(poolId, key(a.value));
        this.giveBack(poolId, a.value);
      })
      .immediate();
  }

  /** Every address of the pool that is not free, lowest first, with why and for whom. */
  listAddresses(poolId: string): Allocation[] {
    // A read transaction: the pool and its addresses from one snapshot.
    return this.db.transaction((): Allocation[] => {
      const pool = this.loadPool(poolId);
      const rows = this.q.addresses.all(poolId) as { addr: Buffer; kind: AddressKind; owner: string | null }[];
      return rows.map((r) => ({
        address: IpAddr.of(pool.subnet.family, unkey(r.addr)),
        kind: r.kind,
        ...(r.owner === null ? {} : { owner: r.owner }),
      }));
    })();
  }

  // ---- internals ----

  /** Parses and checks everything a pool request says, before touching the database. */
  private checkPoolRequest(req: PoolRequest) {
    const subnet = req.subnet === undefined || req.subnet === '' ? undefined : Subnet.parse(req.subnet);
    const family: Family = subnet?.family ?? (req.v6 ? 6 : 4);
    if (subnet && req.v6 !== undefined && req.v6 !== (subnet.family === 6)) {
      throw invalid(
        `subnet ${subnet} is IPv${subnet.family} but an IPv${req.v6 ? 6 : 4} pool was requested`,
        `subnet "${subnet}"`,
      );
    }
    const needsSubnet = (what: string) => {
      if (!subnet) throw invalid(`${what} needs an explicit subnet`, what);
    };
    let range: Subnet | undefined;
    if (req.ipRange !== undefined && req.ipRange !== '') {
      needsSubnet(`ip range "${req.ipRange}"`);
      range = Subnet.parse(req.ipRange);
      if (!subnet!.contains(range)) {
        throw invalid(`ip range ${range} is not inside subnet ${subnet}`, `ip range "${req.ipRange}"`);
      }
    }
    let gateway: IpAddr | undefined;
    if (req.gateway !== undefined && req.gateway !== '') {
      needsSubnet(`gateway "${req.gateway}"`);
      if (req.noGateway) throw invalid(`gateway ${req.gateway} given with noGateway`, `gateway "${req.gateway}"`);
      gateway = IpAddr.parse(req.gateway);
      this.checkInSubnet(subnet!, gateway, 'gateway');
    }
    const aux: [string, IpAddr][] = [];
    for (const [name, text] of Object.entries(req.auxAddresses ?? {})) {
      needsSubnet(`aux address "${name}"`);
      if (name === '') throw invalid(`aux address ${text} has an empty name`, `aux address "${text}"`);
      const a = IpAddr.parse(text);
      this.checkInSubnet(subnet!, a, `aux address "${name}"`);
      const dup = aux.find(([, b]) => b.equals(a));
      if (dup) throw invalid(`aux addresses "${dup[0]}" and "${name}" are both ${a}`, `aux address "${name}"`);
      if (gatewayOf({ gateway, noGateway: req.noGateway ?? false }, subnet!)?.equals(a)) {
        throw invalid(`aux address "${name}" ${a} is the gateway of ${subnet}`, `aux address "${name}"`);
      }
      aux.push([name, a]);
    }
    aux.sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
    for (const s of req.avoid ?? []) {
      if (!(s instanceof Subnet)) throw invalid('avoid must be a list of Subnet values');
    }
    return {
      family,
      subnet,
      range,
      gateway,
      noGateway: req.noGateway ?? false,
      aux,
      // A /0 is the default route: it would block everything and dockerd ignores it too.
      avoid: (req.avoid ?? []).filter((s) => s.family === family && s.prefix > 0),
      owner: req.owner,
      addressSpace: req.addressSpace || DEFAULT_ADDRESS_SPACE,
      options: { ...(req.options ?? {}) },
      shared: req.shared ?? false,
    };
  }

  /** `a` must be a host address of `subnet`: inside it, and not network/broadcast/anycast. */
  private checkInSubnet(subnet: Subnet, a: IpAddr, what: string): void {
    if (!subnet.contains(a)) throw invalid(`${what} ${a} is not in subnet ${subnet}`, `${what} "${a}"`);
    const reason = reservedReason(subnet, a);
    if (reason) throw invalid(`${what} ${a} is ${reason} of ${subnet}`, `${what} "${a}"`);
  }

  private taken(pool: Pool, a: IpAddr, row: { kind: AddressKind; owner: string | null }): TnetError {
    const by =
      row.kind === 'gateway'
        ? 'the gateway'
        : row.kind === 'aux'
          ? `aux address "${row.owner}"`
          : row.kind === 'held'
            ? `held for ${ownerText(row.owner)}`
            : `allocated (${ownerText(row.owner)})`;
    return conflict(`address ${a} in pool ${pool.subnet} is already ${by}`, `address "${a}"`);
  }

  private addressRow(poolId: string, a: bigint): { kind: AddressKind; owner: string | null } | undefined {
    return this.q.address.get(poolId, key(a)) as { kind: AddressKind; owner: string | null } | undefined;
  }

  private poolRow(poolId: string): PoolRow {
    const row = this.q.pool.get(poolId) as PoolRow | undefined;
    if (!row) throw notFound(`no IPAM pool with id "${poolId}"`, `pool "${poolId}"`);
    return row;
  }

  private loadPool(poolId: string): Pool {
    return toPool(this.poolRow(poolId));
  }

  /** The lowest free address in [lo, hi], or undefined. */
  private firstFree(poolId: string, lo: bigint, hi: bigint): bigint | undefined {
    if (lo > hi) return undefined;
    const below = this.run(this.q.runAtOrBelow.get(poolId, key(lo)));
    if (below && below.hi >= lo) return lo;
    const above = this.run(this.q.runAbove.get(poolId, key(lo)));
    return above && above.lo <= hi ? above.lo : undefined;
  }

  /** Marks a free address as taken: records it and cuts it out of its free run. */
  private take(poolId: string, a: bigint, kind: AddressKind, owner: string | null): void {
    const run = this.run(this.q.runAtOrBelow.get(poolId, key(a)));
    if (!run || run.hi < a) {
      // ipam_addresses said free but no run covers it: the two tables disagree. Refuse rather than guess.
      throw new TnetError('internal', `IPAM free list of pool ${poolId} does not hold address value ${a}`);
    }
    this.q.deleteRun.run(poolId, key(run.lo));
    if (run.lo < a) this.q.insertRun.run(poolId, key(run.lo), key(a - 1n));
    if (a < run.hi) this.q.insertRun.run(poolId, key(a + 1n), key(run.hi));
    this.q.insertAddress.run(poolId, key(a), kind, owner);
  }

  /** Returns an address to the free runs, merging with its neighbours so runs stay few. */
  private giveBack(poolId: string, a: bigint): void {
    let lo = a;
    let hi = a;
    const left = this.run(this.q.runAtOrBelow.get(poolId, key(a)));
    if (left && left.hi >= a) {
      throw new TnetError('internal', `IPAM free list of pool ${poolId} already holds address value ${a}`);
    }
    if (left && left.hi === a - 1n) {
      this.q.deleteRun.run(poolId, key(left.lo));
      lo = left.lo;
    }
    const right = this.run(this.q.runAbove.get(poolId, key(a)));
    if (right && right.lo === a + 1n) {
      this.q.deleteRun.run(poolId, key(right.lo));
      hi = right.hi;
    }
    this.q.insertRun.run(poolId, key(lo), key(hi));
  }

  private run(row: unknown): Run | undefined {
    const r = row as { lo: Buffer; hi: Buffer } | undefined;
    return r && { lo: unkey(r.lo), hi: unkey(r.hi) };
  }
}

/** Every statement, prepared once per Ipam. */
function statements(db: Db) {
  return {
    pool: db.prepare('SELECT * FROM ipam_pools WHERE id = ?'),
    pools: db.prepare('SELECT * FROM ipam_pools ORDER BY rowid'),
    poolByShareKey: db.prepare('SELECT * FROM ipam_pools WHERE share_key = ?'),
    insertPool: db.prepare(
      `INSERT INTO ipam_pools (id, address_space, family, subnet, range, gateway, aux, owner,
         shared, share_key, refs, options)
       VALUES (@id, @address_space, @family, @subnet, @range, @gateway, @aux, @owner,
         @shared, @share_key, 1, @options)`,
    ),
    setRefs: db.prepare('UPDATE ipam_pools SET refs = ? WHERE id = ?'),
    deletePool: db.prepare('DELETE FROM ipam_pools WHERE id = ?'),
    deletePoolAddresses: db.prepare('DELETE FROM ipam_addresses WHERE pool = ?'),
    deletePoolFree: db.prepare('DELETE FROM ipam_free WHERE pool = ?'),
    address: db.prepare('SELECT kind, owner FROM ipam_addresses WHERE pool = ? AND addr = ?'),
    addresses: db.prepare('SELECT addr, kind, owner FROM ipam_addresses WHERE pool = ? ORDER BY addr'),
    insertAddress: db.prepare('INSERT INTO ipam_addresses (pool, addr, kind, owner) VALUES (?, ?, ?, ?)'),
    updateAddress: db.prepare('UPDATE ipam_addresses SET kind = ?, owner = ? WHERE pool = ? AND addr = ?'),
    deleteAddress: db.prepare('DELETE FROM ipam_addresses WHERE pool = ? AND addr = ?'),
    // The run starting at or below an address, and the first run starting above one.
    runAtOrBelow: db.prepare(
      'SELECT lo, hi FROM ipam_free WHERE pool = ? AND lo <= ? ORDER BY lo DESC LIMIT 1',
    ),
    runAbove: db.prepare('SELECT lo, hi FROM ipam_free WHERE pool = ? AND lo > ? ORDER BY lo LIMIT 1'),
    insertRun: db.prepare('INSERT INTO ipam_free (pool, lo, hi) VALUES (?, ?, ?)'),
    deleteRun: db.prepare('DELETE FROM ipam_free WHERE pool = ? AND lo = ?'),
  };
}

/** What makes two shared requests "identical" (Docker's pool identity, plus what tnet reserves). */
function shareKey(
  want: { addressSpace: string; gateway?: IpAddr | undefined; noGateway: boolean; aux: [string, IpAddr][] },
  subnet: Subnet,
  range: Subnet,
): string {
  return JSON.stringify([
    want.addressSpace,
    subnet.toString(),
    range.toString(),
    gatewayOf(want, subnet)?.toString() ?? null,
    want.aux.map(([n, a]) => [n, a.toString()]),
  ]);
}

function toPool(r: PoolRow): Pool {
  const subnet = Subnet.parse(r.subnet);
  const aux = JSON.parse(r.aux) as Record<string, string>;
  return {
    id: r.id,
    addressSpace: r.address_space,
    subnet,
    range: Subnet.parse(r.range),
    ...(r.gateway === null ? {} : { gateway: IpAddr.parse(r.gateway) }),
    auxAddresses: Object.fromEntries(Object.entries(aux).map(([n, a]) => [n, IpAddr.parse(a)])),
    v6: subnet.family === 6,
    ...(r.owner === null ? {} : { owner: r.owner }),
    shared: r.shared === 1,
    refs: r.refs,
    options: JSON.parse(r.options) as Record<string, string>,
  };
}
