import { randomUUID } from 'node:crypto';
import { TnetError, busy, conflict, invalid, notFound } from '../errors.js';
import { type Db, type Migration, commitWithoutFsync, migrate } from '../store/db.js';
import { type Family, IpAddr, familyBits } from './address.js';
import {
  DEFAULT_V4_POOLS,
  type PoolSource,
  type PoolSpec,
  blockedBy,
  defaultV6Pools,
  firstFreeBlock,
  parsePoolSpecs,
} from './defaults.js';
import { type Run, Runs, key, unkey } from './runs.js';
import { Subnet } from './subnet.js';
import { checkUsableSubnet } from './usable.js';

/*
 * Storage. Four tables, all changed only inside one IMMEDIATE transaction per operation, so two
 * processes sharing the database file serialise on SQLite's write lock and a kill -9 loses nothing
 * that returned.
 *
 * - ipam_pools: one row per pool, with its definition (subnet, range, gateway, aux addresses), its
 *   address domain (addressDomain()), its subnet's first and last address as keys, and for a child
 *   pool its parent. Indexed by (domain, family, first_addr) for top-level pools and by
 *   (parent, first_addr) for children: pools of one index are disjoint, so sorted by first address
 *   they are sorted by last address too, and the only pools a subnet can overlap are the last one
 *   starting at or below its first address and the first ones starting above it (predecessor and
 *   successor: two index lookups, see clash()).
 * - ipam_space: the free address space pools are cut from, as disjoint runs [lo, hi] per scope: one
 *   scope per address domain and family ('local/4', 'global/6', ...) for top-level pools, and one
 *   per parent pool (its id) for its children. Choosing the lowest free subnet walks these runs, so
 *   it jumps over a whole stretch of pools at once instead of over one pool at a time.
 * - ipam_addresses: one row per address that is not free (gateway, aux, static, dynamic, held),
 *   with its owner. PRIMARY KEY (pool, addr) is the last line of defence against handing out an
 *   address twice.
 * - ipam_free: the free addresses of each pool as disjoint runs [lo, hi]; a run-length "bitmap".
 *   First-free is one index lookup, so time and space grow with the number of holes, never with
 *   the size of the pool: a /48 costs what a /24 costs.
 *
 * Addresses are 16-byte big-endian BLOBs (IPv4 too, zero-extended): SQLite compares BLOBs with
 * memcmp, so byte order is numeric order and range queries on the primary key are exact.
 *
 * ipam_pools and ipam_space say the same thing twice (what is taken); clash() reads the first, the
 * search for a free subnet the second, and a request that finds them disagreeing is refused
 * ('internal') rather than guessed at.
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
  {
    // Indexed pool requests, child pools, owners. SQL cannot parse CIDR text, so the keys of the
    // rows already there (domain, first_addr, last_addr: NULL after this step) are filled in, and
    // cut out of ipam_space, by the Ipam that opens the database (Ipam.fillKeys), in its first
    // transaction after the migrations.
    id: 'ipam-2',
    sql: `
      ALTER TABLE ipam_pools ADD COLUMN domain TEXT;        -- addressDomain(address_space)
      ALTER TABLE ipam_pools ADD COLUMN first_addr BLOB;    -- key of the subnet's first address
      ALTER TABLE ipam_pools ADD COLUMN last_addr BLOB;     -- key of the subnet's last address
      ALTER TABLE ipam_pools ADD COLUMN parent TEXT REFERENCES ipam_pools (id); -- NULL: top-level
      ALTER TABLE ipam_pools ADD COLUMN children_only INTEGER NOT NULL DEFAULT 0 CHECK (children_only IN (0, 1));
      CREATE INDEX ipam_pools_span ON ipam_pools (domain, family, first_addr) WHERE parent IS NULL;
      CREATE INDEX ipam_pools_children ON ipam_pools (parent, first_addr);
      CREATE INDEX ipam_pools_owner ON ipam_pools (owner) WHERE owner IS NOT NULL;
      CREATE INDEX ipam_addresses_owner ON ipam_addresses (owner) WHERE owner IS NOT NULL;
      CREATE TABLE ipam_space (
        scope TEXT NOT NULL,                   -- 'local/4', 'global/6', ... or a parent pool's id
        lo    BLOB NOT NULL CHECK (length(lo) = 16),
        hi    BLOB NOT NULL CHECK (length(hi) = 16),
        PRIMARY KEY (scope, lo)
      ) WITHOUT ROWID;
      INSERT INTO ipam_space (scope, lo, hi) VALUES
        ('local/4', zeroblob(16), X'000000000000000000000000FFFFFFFF'),
        ('local/6', zeroblob(16), X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF'),
        ('global/4', zeroblob(16), X'000000000000000000000000FFFFFFFF'),
        ('global/6', zeroblob(16), X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF');
    `,
  },
];

/**
 * Where a pool's subnet must be unique. Every local address space of this host ('local',
 * 'tnet-local', the 'docker:*' mirrors of dockerd's own pools, ...) is one domain: a lab network
 * never overlaps a Docker network, whichever IPAM made it. The global (cluster-wide) spaces are
 * another: their pools are allocated for the whole cluster, not against this host's.
 */
export type AddressDomain = 'local' | 'global';

const GLOBAL_ADDRESS_SPACES: ReadonlySet<string> = new Set(['global', 'tnet-global', 'docker:GlobalDefault']);

/** The address domain of an address space: the one rule for which pools may not overlap which. */
export function addressDomain(addressSpace: string): AddressDomain {
  return GLOBAL_ADDRESS_SPACES.has(addressSpace) ? 'global' : 'local';
}

/** The ipam_space scope top-level pools of a domain and family are cut from. */
const topScope = (domain: AddressDomain, family: Family) => `${domain}/${family}`;

/** The address space pools go to when a request names none. */
export const DEFAULT_ADDRESS_SPACE = 'local';

export interface PoolRequest {
  /**
   * CIDR; omitted = the first default pool of the family that is free and not in `avoid` (for a
   * child pool: the lowest free block of `prefixLength` bits in the parent).
   */
  readonly subnet?: string;
  /** CIDR inside `subnet`: dynamic addresses come from here (Docker's --ip-range / SubPool). */
  readonly ipRange?: string;
  /** Reserved at creation. Default: the first usable address of the subnet (not of ipRange). */
  readonly gateway?: string;
  /**
   * No gateway is reserved (the Docker face: dockerd asks for the gateway with RequestAddress; a
   * point-to-point /31 or /127 child whose two addresses are both for hosts).
   */
  readonly noGateway?: boolean;
  /** Named addresses reserved at creation (Docker's --aux-address name=ip). */
  readonly auxAddresses?: Readonly<Record<string, string>>;
  /** IPv6 pool. Defaults to the subnet's family (a child: the parent's), or IPv4 when no subnet is given. */
  readonly v6?: boolean;
  /**
   * Subnets an auto-chosen pool must not overlap: the host's routes (destinations, without the
   * default route; a /0 here is ignored, as dockerd ignores the default route). Not applied to an
   * explicit subnet, which only has to be free of other tnet pools.
   */
  readonly avoid?: readonly Subnet[];
  /** Who the pool is for (a network id or name); shown in conflict messages. */
  readonly owner?: string;
  /**
   * Default DEFAULT_ADDRESS_SPACE (a child: its parent's, and no other). Pools overlap no pool of
   * the same address domain and family (addressDomain(): all of this host's local spaces are one).
   */
  readonly addressSpace?: string;
  readonly options?: Readonly<Record<string, string>>;
  /**
   * Docker semantics: an identical shared request (same address space, subnet, range, gateway and
   * aux addresses) returns the existing shared pool and adds a reference; releasePool drops one
   * reference and deletes the pool with the last. Without `shared`, any overlap is a conflict.
   * Not for child or childrenOnly pools.
   */
  readonly shared?: boolean;
  /**
   * Carve this pool out of the pool with this id, which must have been created with
   * `childrenOnly`: `subnet` if given (inside the parent), else the lowest free block of
   * `prefixLength` bits. A child only has to be free of its siblings (the parent is already free of
   * every other pool); it takes the parent's address space and family and is otherwise a normal
   * pool: gateway, ip-range, aux addresses and allocation as for any other.
   */
  readonly parent?: string;
  /** The prefix length of a child pool chosen in its parent (with `parent`, without `subnet`). */
  readonly prefixLength?: number;
  /**
   * The pool only carves child pools (e.g. the block a lab's point-to-point links come from). It
   * has no gateway, aux addresses or ip-range, requestAddress and holdAddress on it are refused
   * (no address of its own can then sit where a child is wanted), and releasePool refuses
   * ('busy') while it has children.
   */
  readonly childrenOnly?: boolean;
  /** false: commit without an fsync of its own, for a caller that commits a durable record after (see Ipam.commit). */
  readonly durable?: boolean;
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
  /** The id of the pool this one was carved from; absent for a top-level pool. */
  readonly parent?: string;
  /** The pool only carves child pools: no addresses are allocated in it. */
  readonly childrenOnly: boolean;
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
  domain: AddressDomain;
  first_addr: Buffer;
  last_addr: Buffer;
  parent: string | null;
  children_only: 0 | 1;
}

/** The last address of a subnet (the broadcast address for IPv4). */
const lastOf = (s: Subnet): bigint => s.network + s.size - 1n;

/**
 * The addresses of a subnet a host may use. IPv4 loses the network and broadcast addresses,
 * except in /31 and /32 (RFC 3021, point-to-point). IPv6 has no broadcast; its first address is
 * the subnet-router anycast (RFC 4291 2.6.1), kept back as dockerd does, except in /127 and /128.
 */
function usable(s: Subnet): Run {
  const lo = s.network;
  const hi = lastOf(s);
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
  /** The free addresses of each pool (ipam_free). */
  private readonly free: Runs;
  /** The free address space pools are cut from (ipam_space). */
  private readonly space: Runs;

  constructor(
    private readonly db: Db,
    options: IpamOptions = {},
  ) {
    this.v4Sources = parsePoolSpecs(options.v4Pools ?? DEFAULT_V4_POOLS, 4);
    this.v6Sources = parsePoolSpecs(options.v6Pools ?? defaultV6Pools(options.ulaSeed ?? db.name), 6);
    migrate(db, migrations);
    this.q = statements(db);
    this.free = new Runs(db, 'ipam_free', 'pool');
    this.space = new Runs(db, 'ipam_space', 'scope');
    this.fillKeys();
  }

  /**
   * Runs `fn` as one immediate (write-locking) transaction. `durable: false` commits without an
   * fsync of its own: the caller writes a durable record after it in this same database (the
   * endpoint or network it allocates for), and WAL commits reach the disk in order, so that fsync
   * carries this one too; a kill -9 in between loses nothing either (the WAL is in the OS's cache).
   * Saves one fsync (~0.25 ms here) per allocation on the controller's paths.
   */
  private commit<T>(durable: boolean | undefined, fn: () => T): T {
    return durable === false ? commitWithoutFsync(this.db, fn) : this.db.transaction(fn).immediate();
  }

  // ---- pools ----

  /** Creates a pool (or joins an identical shared one). Refuses bad or overlapping requests. */
  requestPool(req: PoolRequest = {}): Pool {
    const want = this.checkPoolRequest(req);
    return this.commit(req.durable, (): Pool => {
      if (want.shared && want.subnet) {
        const same = this.q.poolByShareKey.get(shareKey(want, want.subnet, want.range ?? want.subnet)) as
          | PoolRow
          | undefined;
        if (same) {
          this.q.setRefs.run(same.refs + 1, same.id);
          return toPool({ ...same, refs: same.refs + 1 });
        }
      }
      const parent = want.parent === undefined ? undefined : this.parentOf(want);
      const domain = parent ? parent.row.domain : addressDomain(want.addressSpace);
      const family = parent ? parent.subnet.family : want.family;
      // Where the subnet is cut from, and which pools it must not overlap.
      const scope = parent ? parent.row.id : topScope(domain, family);
      const among = parent ? { parent: parent.row.id } : { domain, family };
      let subnet = want.subnet;
      if (subnet) {
        const clash = this.clash(subnet, among);
        if (clash) {
          const clashSubnet = Subnet.parse(clash.subnet);
          const space = clash.address_space === want.addressSpace ? '' : `, address space "${clash.address_space}"`;
          throw conflict(
            `subnet ${subnet} overlaps ${clashSubnet} of pool ${clash.id} (${ownerText(clash.owner)}${space})` +
              (parent ? `, another child of pool ${parent.subnet}` : '') +
              (clash.shared && want.shared ? '; a shared pool is only reused by an identical request' : ''),
            `subnet "${subnet}"`,
          );
        }
      } else {
        const sources = parent
          ? [{ base: parent.subnet, size: want.prefixLength! }]
          : family === 4
            ? this.v4Sources
            : this.v6Sources;
        const avoided = blockedBy(want.avoid);
        subnet = firstFreeBlock(
          sources,
          (c) => avoided(c) ?? this.space.blockedUntil(scope, c.network, lastOf(c)),
        );
        if (!subnet) {
          if (parent) {
            throw conflict(
              `no free /${want.prefixLength} left in parent pool ${parent.subnet} (${parent.row.id})` +
                (want.avoid.length ? ' outside the host routes' : ''),
              `pool "${parent.row.id}"`,
            );
          }
          const list = sources.map((s) => `${s.base} (/${s.size})`).join(', ');
          throw conflict(
            `no free IPv${family} default pool left: every subnet of ${list} overlaps an existing pool or a host route`,
          );
        }
        const clash = this.clash(subnet, among);
        if (clash) throw this.disagree(scope, subnet, `pool ${clash.id} (${clash.subnet}) holds it`);
      }
      if (!this.space.cut(scope, subnet.network, lastOf(subnet))) {
        throw this.disagree(scope, subnet, 'no pool holds it but it is not free');
      }
      const range = want.range ?? subnet;
      const gateway = gatewayOf(want, subnet);
      const id = randomUUID();
      this.q.insertPool.run({
        id,
        address_space: parent ? parent.row.address_space : want.addressSpace,
        family,
        subnet: subnet.toString(),
        range: range.toString(),
        gateway: gateway?.toString() ?? null,
        aux: JSON.stringify(Object.fromEntries(want.aux.map(([n, a]) => [n, a.toString()]))),
        owner: want.owner ?? null,
        shared: want.shared ? 1 : 0,
        share_key: want.shared ? shareKey(want, subnet, range) : null,
        options: JSON.stringify(want.options),
        domain,
        first_addr: key(subnet.network),
        last_addr: key(lastOf(subnet)),
        parent: parent?.row.id ?? null,
        children_only: want.childrenOnly ? 1 : 0,
      });
      if (want.childrenOnly) {
        // All of it, network and broadcast addresses too: they are hosts of the children.
        this.space.insert(id, subnet.network, lastOf(subnet));
      } else {
        const all = usable(subnet);
        this.free.insert(id, all.lo, all.hi);
        if (gateway) this.take(id, gateway.value, 'gateway', null);
        for (const [name, a] of want.aux) this.take(id, a.value, 'aux', name);
      }
      return this.loadPool(id);
    });
  }

  /**
   * Drops one reference to the pool; the last one deletes the pool with every address in it
   * (the caller, which owns the network, has decided it is gone) and frees its subnet. Returns
   * the references left. A childrenOnly pool with children is refused ('busy').
   */
  releasePool(poolId: string): number {
    return this.db
      .transaction((): number => {
        const row = this.poolRow(poolId);
        if (row.refs > 1) {
          this.q.setRefs.run(row.refs - 1, poolId);
          return row.refs - 1;
        }
        if (row.children_only) {
          const { n } = this.q.childCount.get(poolId) as { n: number };
          if (n > 0) {
            throw busy(
              `pool ${row.subnet} (${poolId}) has ${n} child pool${n === 1 ? '' : 's'}; release ${n === 1 ? 'it' : 'them'} first`,
              `pool "${poolId}"`,
            );
          }
          this.space.clear(poolId);
        }
        this.q.deletePoolAddresses.run(poolId);
        this.free.clear(poolId);
        this.q.deletePool.run(poolId);
        const subnet = Subnet.parse(row.subnet);
        const scope = row.parent ?? topScope(row.domain, row.family);
        if (!this.space.restore(scope, subnet.network, lastOf(subnet))) {
          throw this.disagree(scope, subnet, 'its pool was released but it is free already');
        }
        return 0;
      })
      .immediate();
  }

  /** The pool; 'not-found' if there is none with this id. */
  getPool(poolId: string): Pool {
    return this.loadPool(poolId);
  }

  /** Every pool (or every pool of `owner`), oldest first. */
  listPools(filter: { owner?: string } = {}): Pool[] {
    const rows = filter.owner === undefined ? this.q.pools.all() : this.q.poolsByOwner.all(filter.owner);
    return (rows as PoolRow[]).map(toPool);
  }

  // ---- addresses ----

  /**
   * A static address (`address`: inside the subnet, possibly outside the ip-range as Docker
   * allows) or, without one, the lowest free address of the pool's range. Refuses a taken static
   * address ('conflict', naming its owner) unless it is held for the same `owner`, and any
   * address of a childrenOnly pool ('invalid-argument').
   */
  requestAddress(poolId: string, opts: { address?: string; owner?: string; durable?: boolean } = {}): IpAddr {
    const wanted = opts.address === undefined || opts.address === '' ? undefined : IpAddr.parse(opts.address);
    const owner = opts.owner ?? null;
    return this.commit(opts.durable, (): IpAddr => {
      const pool = this.addressPool(poolId);
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
      const rangeHi = lastOf(pool.range);
      const hi = rangeHi < bounds.hi ? rangeHi : bounds.hi;
      const free = this.free.firstIn(poolId, lo, hi);
      if (free === undefined) {
        const where = pool.range.equals(pool.subnet) ? '' : `range ${pool.range} of `;
        throw conflict(`no free address left in ${where}pool ${pool.subnet}`, `pool "${poolId}"`);
      }
      this.take(poolId, free, 'dynamic', owner);
      return IpAddr.of(pool.subnet.family, free);
    });
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
        const pool = this.addressPool(poolId);
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

  /**
   * Frees every static and dynamic address recorded for `owner`, in any pool (an endpoint that is
   * gone, or that crashed before releasing its addresses). Held addresses stay: they are kept for
   * the owner on purpose and go with releaseAddress. Returns how many were freed.
   */
  releaseOwned(owner: string, opts: { durable?: boolean } = {}): number {
    if (!owner) throw invalid('releasing the addresses of an owner needs the owner');
    return this.commit(opts.durable, (): number => {
      const rows = this.q.ownedAddresses.all(owner) as { pool: string; addr: Buffer }[];
      for (const r of rows) {
        this.q.deleteAddress.run(r.pool, r.addr);
        this.giveBack(r.pool, unkey(r.addr));
      }
      return rows.length;
    });
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

  /**
   * Pools written before 'ipam-2' (or by an older tnet since) have no keys: computes them and
   * cuts the pools out of the free space of their domain. Those pools are top-level, and the
   * older code kept every pool apart from every other; should two overlap anyway, both stay.
   */
  private fillKeys(): void {
    if (!this.q.anyUnkeyed.get()) return;
    this.db
      .transaction(() => {
        for (const r of this.q.unkeyed.all() as { id: string; address_space: string; subnet: string }[]) {
          const subnet = Subnet.parse(r.subnet);
          const domain = addressDomain(r.address_space);
          this.q.setKeys.run(domain, key(subnet.network), key(lastOf(subnet)), r.id);
          this.space.cutAll(topScope(domain, subnet.family), subnet.network, lastOf(subnet));
        }
      })
      .immediate();
  }

  /**
   * The pool `subnet` would overlap among the top-level pools of a domain and family, or among the
   * children of a parent; undefined if none. These pools are disjoint, so only two can: the last
   * one starting at or below the subnet's first address, and the first one starting above it.
   */
  private clash(
    subnet: Subnet,
    among: { parent: string } | { domain: AddressDomain; family: Family },
  ): PoolRow | undefined {
    const first = key(subnet.network);
    const last = key(lastOf(subnet));
    const [below, above] =
      'parent' in among
        ? [this.q.childAtOrBelow.get(among.parent, first), this.q.childAbove.get(among.parent, first)]
        : [
            this.q.topAtOrBelow.get(among.domain, among.family, first),
            this.q.topAbove.get(among.domain, among.family, first),
          ];
    const b = below as PoolRow | undefined;
    if (b && Buffer.compare(b.last_addr, first) >= 0) return b;
    const a = above as PoolRow | undefined;
    if (a && Buffer.compare(a.first_addr, last) <= 0) return a;
    return undefined;
  }

  /** The two indexes of what is taken (pool rows, free space) disagree: refuse rather than guess. */
  private disagree(scope: string, subnet: Subnet, what: string): TnetError {
    return new TnetError('internal', `IPAM free space of scope "${scope}" disagrees with its pools at ${subnet}: ${what}`);
  }

  /** The parent a child request names, checked against the request. */
  private parentOf(want: ReturnType<Ipam['checkPoolRequest']>): { row: PoolRow; subnet: Subnet } {
    const id = want.parent!;
    const row = this.q.pool.get(id) as PoolRow | undefined;
    if (!row) throw notFound(`no IPAM pool with id "${id}" to carve a child pool from`, `pool "${id}"`);
    const subnet = Subnet.parse(row.subnet);
    const what = `parent pool ${subnet} (${id})`;
    if (!row.children_only) {
      throw invalid(`${what} was not created with childrenOnly; only such a pool carves child pools`, `pool "${id}"`);
    }
    if (want.addressSpaceGiven && want.addressSpace !== row.address_space) {
      throw invalid(
        `a child pool is in its parent's address space "${row.address_space}", not "${want.addressSpace}"`,
        `pool "${id}"`,
      );
    }
    if (want.v6 !== undefined && want.v6 !== (subnet.family === 6)) {
      throw invalid(`${what} is IPv${subnet.family} but an IPv${want.v6 ? 6 : 4} child was requested`, `pool "${id}"`);
    }
    const prefix = want.subnet?.prefix ?? want.prefixLength!;
    if (want.subnet && !subnet.contains(want.subnet)) {
      throw invalid(`subnet ${want.subnet} is not inside ${what}`, `subnet "${want.subnet}"`);
    }
    if (!(prefix > subnet.prefix && prefix <= familyBits(subnet.family))) {
      throw invalid(
        `a child of ${what} needs a prefix length between ${subnet.prefix + 1} and ${familyBits(subnet.family)}, not ${prefix}`,
        `pool "${id}"`,
      );
    }
    return { row, subnet };
  }

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
    const parent = req.parent === undefined || req.parent === '' ? undefined : req.parent;
    if (req.prefixLength !== undefined) {
      const what = `prefix length ${req.prefixLength}`;
      if (!Number.isInteger(req.prefixLength)) throw invalid(`${what} is not an integer`, what);
      if (parent === undefined) throw invalid(`${what} chooses a child pool's size; it needs a parent`, what);
      if (subnet && subnet.prefix !== req.prefixLength) {
        throw invalid(`${what} does not match subnet ${subnet}`, `subnet "${subnet}"`);
      }
    }
    if (parent !== undefined && !subnet && req.prefixLength === undefined) {
      throw invalid(`a child pool of pool "${parent}" needs a subnet or a prefixLength`, `pool "${parent}"`);
    }
    const childrenOnly = req.childrenOnly ?? false;
    if (req.shared && (parent !== undefined || childrenOnly)) {
      throw invalid(`a ${childrenOnly ? 'childrenOnly' : 'child'} pool cannot be shared`, 'shared');
    }
    const needsSubnet = (what: string) => {
      if (!subnet) throw invalid(`${what} needs an explicit subnet`, what);
      if (childrenOnly) throw invalid(`${what} is not for a childrenOnly pool, which only carves child pools`, what);
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
    const noGateway = (req.noGateway ?? false) || childrenOnly;
    // Blocks no network can use (loopback, multicast, a /32 with a gateway...): usable.ts says which.
    if (subnet) checkUsableSubnet(subnet, !noGateway);
    const aux: [string, IpAddr][] = [];
    for (const [name, text] of Object.entries(req.auxAddresses ?? {})) {
      needsSubnet(`aux address "${name}"`);
      if (name === '') throw invalid(`aux address ${text} has an empty name`, `aux address "${text}"`);
      const a = IpAddr.parse(text);
      this.checkInSubnet(subnet!, a, `aux address "${name}"`);
      const dup = aux.find(([, b]) => b.equals(a));
      if (dup) throw invalid(`aux addresses "${dup[0]}" and "${name}" are both ${a}`, `aux address "${name}"`);
      if (gatewayOf({ gateway, noGateway }, subnet!)?.equals(a)) {
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
      v6: req.v6,
      subnet,
      range,
      gateway,
      noGateway,
      aux,
      // A /0 is the default route: it would block everything and dockerd ignores it too. A route
      // of the other family never overlaps (Subnet.overlaps), so the list needs no other filter.
      avoid: (req.avoid ?? []).filter((s) => s.prefix > 0),
      owner: req.owner,
      addressSpace: req.addressSpace || DEFAULT_ADDRESS_SPACE,
      addressSpaceGiven: Boolean(req.addressSpace),
      options: { ...(req.options ?? {}) },
      shared: req.shared ?? false,
      parent,
      prefixLength: req.prefixLength,
      childrenOnly,
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

  /** A pool addresses may be taken in: not a childrenOnly one. */
  private addressPool(poolId: string): Pool {
    const pool = this.loadPool(poolId);
    if (pool.childrenOnly) {
      throw invalid(
        `pool ${pool.subnet} (${poolId}) only carves child pools (childrenOnly); addresses come from its children`,
        `pool "${poolId}"`,
      );
    }
    return pool;
  }

  /** Marks a free address as taken: records it and cuts it out of its free run. */
  private take(poolId: string, a: bigint, kind: AddressKind, owner: string | null): void {
    if (!this.free.cut(poolId, a, a)) {
      // ipam_addresses said free but no run covers it: the two tables disagree. Refuse rather than guess.
      throw new TnetError('internal', `IPAM free list of pool ${poolId} does not hold address value ${a}`);
    }
    this.q.insertAddress.run(poolId, key(a), kind, owner);
  }

  /** Returns an address to the free runs, merging with its neighbours so runs stay few. */
  private giveBack(poolId: string, a: bigint): void {
    if (!this.free.restore(poolId, a, a)) {
      throw new TnetError('internal', `IPAM free list of pool ${poolId} already holds address value ${a}`);
    }
  }
}

/** Every statement, prepared once per Ipam. */
function statements(db: Db) {
  // Pools of one index: top-level ones of a domain and family, or the children of one parent.
  const top = 'domain = ? AND family = ? AND parent IS NULL';
  return {
    pool: db.prepare('SELECT * FROM ipam_pools WHERE id = ?'),
    pools: db.prepare('SELECT * FROM ipam_pools ORDER BY rowid'),
    poolsByOwner: db.prepare('SELECT * FROM ipam_pools WHERE owner = ? ORDER BY rowid'),
    poolByShareKey: db.prepare('SELECT * FROM ipam_pools WHERE share_key = ?'),
    insertPool: db.prepare(
      `INSERT INTO ipam_pools (id, address_space, family, subnet, range, gateway, aux, owner,
         shared, share_key, refs, options, domain, first_addr, last_addr, parent, children_only)
       VALUES (@id, @address_space, @family, @subnet, @range, @gateway, @aux, @owner,
         @shared, @share_key, 1, @options, @domain, @first_addr, @last_addr, @parent, @children_only)`,
    ),
    setRefs: db.prepare('UPDATE ipam_pools SET refs = ? WHERE id = ?'),
    deletePool: db.prepare('DELETE FROM ipam_pools WHERE id = ?'),
    deletePoolAddresses: db.prepare('DELETE FROM ipam_addresses WHERE pool = ?'),
    // The pool starting at or below a first address, and the first one starting above it.
    topAtOrBelow: db.prepare(`SELECT * FROM ipam_pools WHERE ${top} AND first_addr <= ? ORDER BY first_addr DESC LIMIT 1`),
    topAbove: db.prepare(`SELECT * FROM ipam_pools WHERE ${top} AND first_addr > ? ORDER BY first_addr LIMIT 1`),
    childAtOrBelow: db.prepare(
      'SELECT * FROM ipam_pools WHERE parent = ? AND first_addr <= ? ORDER BY first_addr DESC LIMIT 1',
    ),
    childAbove: db.prepare('SELECT * FROM ipam_pools WHERE parent = ? AND first_addr > ? ORDER BY first_addr LIMIT 1'),
    childCount: db.prepare('SELECT count(*) AS n FROM ipam_pools WHERE parent = ?'),
    anyUnkeyed: db.prepare('SELECT 1 FROM ipam_pools WHERE first_addr IS NULL LIMIT 1'),
    unkeyed: db.prepare('SELECT id, address_space, subnet FROM ipam_pools WHERE first_addr IS NULL ORDER BY rowid'),
    setKeys: db.prepare('UPDATE ipam_pools SET domain = ?, first_addr = ?, last_addr = ? WHERE id = ?'),
    address: db.prepare('SELECT kind, owner FROM ipam_addresses WHERE pool = ? AND addr = ?'),
    addresses: db.prepare('SELECT addr, kind, owner FROM ipam_addresses WHERE pool = ? ORDER BY addr'),
    ownedAddresses: db.prepare(
      "SELECT pool, addr FROM ipam_addresses WHERE owner = ? AND kind IN ('static', 'dynamic')",
    ),
    insertAddress: db.prepare('INSERT INTO ipam_addresses (pool, addr, kind, owner) VALUES (?, ?, ?, ?)'),
    updateAddress: db.prepare('UPDATE ipam_addresses SET kind = ?, owner = ? WHERE pool = ? AND addr = ?'),
    deleteAddress: db.prepare('DELETE FROM ipam_addresses WHERE pool = ? AND addr = ?'),
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
    ...(r.parent === null ? {} : { parent: r.parent }),
    childrenOnly: r.children_only === 1,
  };
}
