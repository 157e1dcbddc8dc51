import { randomBytes } from 'node:crypto';
import { IpAddr } from '../ipam/address.js';
import { Subnet } from '../ipam/subnet.js';
import type { AddressSource, Endpoint, IpConfig, Lifecycle, Network, Owner, PortMapping, Sandbox } from '../model.js';
import { conflict, invalid } from '../errors.js';
import { type Db, type Migration, checkpoint, commitWithoutFsync, storeError } from './db.js';
import { labMigrations } from './labs.js';

/**
 * The CNM objects in SQLite. Every row is written before the kernel objects it stands for are
 * made (state 'creating') and flipped to 'ready' after: the reconcile at start finishes or
 * undoes whatever a kill -9 interrupted. Synchronous on purpose: better-sqlite3 transactions
 * run to completion on the one JS thread, so a check-then-insert cannot interleave.
 */
export const migrations: Migration[] = [
  {
    id: 'core-1',
    sql: `
      CREATE TABLE instance (id TEXT PRIMARY KEY);
      CREATE TABLE networks (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        driver TEXT NOT NULL,
        state TEXT NOT NULL,
        internal INTEGER NOT NULL,
        pool4 TEXT, subnet4 TEXT, gateway4 TEXT,
        pool6 TEXT, subnet6 TEXT, gateway6 TEXT,
        options TEXT NOT NULL,
        labels TEXT NOT NULL,
        docker INTEGER NOT NULL,
        created TEXT NOT NULL
      );
      CREATE TABLE sandboxes (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        netns TEXT NOT NULL,
        created TEXT NOT NULL
      );
      CREATE TABLE endpoints (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        network_id TEXT NOT NULL REFERENCES networks(id),
        sandbox_id TEXT REFERENCES sandboxes(id),
        state TEXT NOT NULL,
        ipv4 TEXT, ipv6 TEXT,
        mac TEXT NOT NULL,
        host_ifname TEXT NOT NULL UNIQUE,
        ifname TEXT NOT NULL,
        aliases TEXT NOT NULL,
        gateway_provider INTEGER NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (sandbox_id, ifname)
      );
      CREATE INDEX endpoints_by_network ON endpoints(network_id);
      CREATE INDEX endpoints_by_sandbox ON endpoints(sandbox_id);
      -- One row per published host port: the UNIQUE key is what makes a port taken.
      -- host_ip '' means every address; the overlap with specific addresses is checked in code.
      CREATE TABLE ports (
        endpoint_id TEXT NOT NULL REFERENCES endpoints(id) ON DELETE CASCADE,
        proto TEXT NOT NULL,
        host_ip TEXT NOT NULL,
        host_port INTEGER NOT NULL,
        container_port INTEGER NOT NULL,
        PRIMARY KEY (proto, host_ip, host_port)
      );
      CREATE INDEX ports_by_endpoint ON ports(endpoint_id);
    `,
  },
  {
    // 0.1.0 -> 0.2.0: the Docker flag becomes an owner (docker, a lab, none) with names unique per
    // owner; an endpoint's host interface is optional (a macvlan has none); the instance gets the
    // scope its host-wide kernel names carry (existing state keeps the unscoped names it made);
    // drivers get a table of their own. Tables are rebuilt (SQLite cannot change a column's
    // constraints in place); migrate() turns foreign keys off around it and checks them after.
    id: 'core-2',
    sql: `
      ALTER TABLE instance ADD COLUMN scope TEXT NOT NULL DEFAULT '';
      CREATE TABLE networks_v2 (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        driver TEXT NOT NULL,
        state TEXT NOT NULL,
        internal INTEGER NOT NULL,
        pool4 TEXT, subnet4 TEXT, gateway4 TEXT,
        pool6 TEXT, subnet6 TEXT, gateway6 TEXT,
        addresses TEXT NOT NULL,
        options TEXT NOT NULL,
        labels TEXT NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (owner, name)
      );
      INSERT INTO networks_v2 (id, name, owner, driver, state, internal, pool4, subnet4, gateway4,
          pool6, subnet6, gateway6, addresses, options, labels, created)
        SELECT id, name, CASE docker WHEN 1 THEN 'docker' ELSE '' END, driver, state, internal,
          pool4, subnet4, gateway4, pool6, subnet6, gateway6,
          CASE docker WHEN 1 THEN 'external' ELSE 'tnet' END, options, labels, created
        FROM networks;
      DROP TABLE networks;
      ALTER TABLE networks_v2 RENAME TO networks;

      CREATE TABLE sandboxes_v2 (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        owner TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        netns TEXT NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (owner, name)
      );
      INSERT INTO sandboxes_v2 (id, name, owner, kind, state, netns, created)
        SELECT id, name, '', kind, state, netns, created FROM sandboxes;
      DROP TABLE sandboxes;
      ALTER TABLE sandboxes_v2 RENAME TO sandboxes;

      CREATE TABLE endpoints_v2 (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        network_id TEXT NOT NULL REFERENCES networks(id),
        sandbox_id TEXT REFERENCES sandboxes(id),
        state TEXT NOT NULL,
        ipv4 TEXT, ipv6 TEXT,
        mac TEXT NOT NULL,
        host_ifname TEXT UNIQUE,
        ifname TEXT NOT NULL,
        aliases TEXT NOT NULL,
        gateway_provider INTEGER NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (sandbox_id, ifname)
      );
      INSERT INTO endpoints_v2 (id, name, network_id, sandbox_id, state, ipv4, ipv6, mac, host_ifname,
          ifname, aliases, gateway_provider, created)
        SELECT id, name, network_id, sandbox_id, state, ipv4, ipv6, mac, host_ifname,
          ifname, aliases, gateway_provider, created
        FROM endpoints;
      DROP TABLE endpoints;
      ALTER TABLE endpoints_v2 RENAME TO endpoints;
      CREATE INDEX endpoints_by_network ON endpoints(network_id);
      CREATE INDEX endpoints_by_sandbox ON endpoints(sandbox_id);

      -- Each driver's own records (overlay peers, macvlan parents it made): key/value per driver.
      CREATE TABLE driver_kv (
        driver TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (driver, key)
      ) WITHOUT ROWID;
    `,
  },
  {
    // Where a Docker endpoint was joined (its SandboxKey), to tell a container that went while
    // tnet was down (dockerd gave up telling tnet) from one that runs.
    id: 'core-3',
    sql: `ALTER TABLE endpoints ADD COLUMN sandbox_key TEXT;`,
  },
  ...labMigrations, // core-4: labs, wires, lab processes (store/labs.ts)
  {
    // One row a group commit rewrites with synchronous=FULL (State.synced): its fsync of the WAL
    // carries every fsync-free commit before it to disk.
    id: 'core-5',
    sql: `CREATE TABLE sync_mark (id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL); INSERT INTO sync_mark VALUES (1, 0);`,
  },
];

interface NetworkRow {
  id: string;
  name: string;
  owner: string;
  driver: string;
  state: string;
  internal: number;
  pool4: string | null;
  subnet4: string | null;
  gateway4: string | null;
  pool6: string | null;
  subnet6: string | null;
  gateway6: string | null;
  addresses: string;
  options: string;
  labels: string;
  created: string;
}

interface SandboxRow {
  id: string;
  name: string;
  owner: string;
  kind: string;
  state: string;
  netns: string;
  created: string;
}

interface EndpointRow {
  id: string;
  name: string;
  network_id: string;
  sandbox_id: string | null;
  state: string;
  ipv4: string | null;
  ipv6: string | null;
  mac: string;
  host_ifname: string | null;
  ifname: string;
  aliases: string;
  gateway_provider: number;
  sandbox_key: string | null;
  created: string;
}

interface PortRow {
  endpoint_id: string;
  proto: string;
  host_ip: string;
  host_port: number;
  container_port: number;
}

function ipConfig(pool: string | null, subnet: string | null, gateway: string | null): IpConfig | undefined {
  if (!pool || !subnet) return undefined;
  return { poolId: pool, subnet: Subnet.parse(subnet), gateway: gateway ? IpAddr.parse(gateway) : undefined };
}

function poolColumns(ipv4: IpConfig | undefined, ipv6: IpConfig | undefined) {
  return {
    pool4: ipv4?.poolId ?? null,
    subnet4: ipv4?.subnet.toString() ?? null,
    gateway4: ipv4?.gateway?.toString() ?? null,
    pool6: ipv6?.poolId ?? null,
    subnet6: ipv6?.subnet.toString() ?? null,
    gateway6: ipv6?.gateway?.toString() ?? null,
  };
}

const toPort = (r: PortRow): PortMapping => ({
  proto: r.proto as PortMapping['proto'],
  hostIp: r.host_ip,
  hostPort: r.host_port,
  containerPort: r.container_port,
});

const NETWORK_COLUMNS = ['id', 'name', 'owner', 'driver', 'state', 'internal', 'pool4', 'subnet4', 'gateway4',
  'pool6', 'subnet6', 'gateway6', 'addresses', 'options', 'labels', 'created'] as const;
const SANDBOX_COLUMNS = ['id', 'name', 'owner', 'kind', 'state', 'netns', 'created'] as const;
const ENDPOINT_COLUMNS = ['id', 'name', 'network_id', 'sandbox_id', 'state', 'ipv4', 'ipv6', 'mac', 'host_ifname',
  'ifname', 'aliases', 'gateway_provider', 'sandbox_key', 'created'] as const;
const PORT_COLUMNS = ['endpoint_id', 'proto', 'host_ip', 'host_port', 'container_port'] as const;

export function newId(): string {
  return randomBytes(32).toString('hex');
}

/** The scope of a new instance: its id unless the opener names one (see ControllerOptions.scope). */
const SCOPE = /^[a-z0-9]{0,8}$/;

export class State {
  readonly db: Db;
  /** This state's owner tag: every kernel object it makes carries `tnet:<instance>:`. */
  readonly instance: string;
  /** What host-wide kernel names (namespaces, the nft table) carry so instances do not collide; '' = none. */
  readonly scope: string;
  private readonly s;

  constructor(db: Db, opts: { scope?: string } = {}) {
    this.db = db;
    if (opts.scope !== undefined && !SCOPE.test(opts.scope))
      throw invalid(`scope "${opts.scope}" must be at most 8 lowercase letters or digits`, `scope "${opts.scope}"`);
    const row = db.prepare('SELECT id, scope FROM instance').get() as { id: string; scope: string } | undefined;
    if (row) {
      if (opts.scope !== undefined && opts.scope !== row.scope)
        throw conflict(
          `this state directory's instance uses scope "${row.scope}" for its kernel names, not "${opts.scope}"; open it without a scope or with "${row.scope}"`,
          `scope "${opts.scope}"`,
        );
      this.instance = row.id;
      this.scope = row.scope;
    } else {
      this.instance = randomBytes(4).toString('hex');
      this.scope = opts.scope ?? this.instance;
      db.prepare('INSERT INTO instance (id, scope) VALUES (?, ?)').run(this.instance, this.scope);
    }
    const cols = (table: string, names: readonly string[]) =>
      db.prepare(`INSERT INTO ${table} (${names.join(', ')}) VALUES (${names.map((n) => '@' + n).join(', ')})`);
    this.s = {
      netById: db.prepare('SELECT * FROM networks WHERE id = ?'),
      netByName: db.prepare('SELECT * FROM networks WHERE name = ? ORDER BY owner'),
      netByPrefix: db.prepare("SELECT * FROM networks WHERE id LIKE ? || '%'"),
      nets: db.prepare('SELECT * FROM networks ORDER BY created, name'),
      netInsert: cols('networks', NETWORK_COLUMNS),
      netState: db.prepare('UPDATE networks SET state = ? WHERE id = ?'),
      netPools: db.prepare(`UPDATE networks SET pool4 = @pool4, subnet4 = @subnet4, gateway4 = @gateway4,
        pool6 = @pool6, subnet6 = @subnet6, gateway6 = @gateway6 WHERE id = @id`),
      netDelete: db.prepare('DELETE FROM networks WHERE id = ?'),
      sbById: db.prepare('SELECT * FROM sandboxes WHERE id = ?'),
      sbByName: db.prepare('SELECT * FROM sandboxes WHERE name = ? ORDER BY owner'),
      sbs: db.prepare('SELECT * FROM sandboxes ORDER BY created, name'),
      sbInsert: cols('sandboxes', SANDBOX_COLUMNS),
      sbState: db.prepare('UPDATE sandboxes SET state = ? WHERE id = ?'),
      sbDelete: db.prepare('DELETE FROM sandboxes WHERE id = ?'),
      epById: db.prepare('SELECT * FROM endpoints WHERE id = ?'),
      eps: db.prepare('SELECT * FROM endpoints ORDER BY created'),
      syncMark: db.prepare('UPDATE sync_mark SET n = n + 1 WHERE id = 1'),
      // The endpoints whose DNS names could clash with the candidates (@keys: a JSON array of the
      // lower-cased candidate names and of each as NAME.NETWORK): the same name ignoring case,
      // or one of theirs as NAME.THEIR-NETWORK (names.ts dnsNameClash judges the few rows found).
      epNames: db.prepare(`
        SELECT e.name, e.aliases, e.sandbox_id, n.name AS network FROM endpoints e JOIN networks n ON n.id = e.network_id
        WHERE EXISTS (
          SELECT 1 FROM (SELECT e.name AS t UNION ALL SELECT value FROM json_each(e.aliases))
          WHERE lower(t) IN (SELECT value FROM json_each(@keys)) OR lower(t) || '.' || lower(n.name) IN (SELECT value FROM json_each(@keys))
        )`),
      epsByNet: db.prepare('SELECT * FROM endpoints WHERE network_id = ? ORDER BY created'),
      epsBySb: db.prepare('SELECT * FROM endpoints WHERE sandbox_id = ? ORDER BY ifname'),
      epCountByNet: db.prepare('SELECT count(*) AS n FROM endpoints WHERE network_id = ?'),
      epInsert: cols('endpoints', ENDPOINT_COLUMNS),
      epState: db.prepare('UPDATE endpoints SET state = ? WHERE id = ?'),
      epAddresses: db.prepare('UPDATE endpoints SET ipv4 = ?, ipv6 = ?, mac = ? WHERE id = ?'),
      epGatewayProvider: db.prepare('UPDATE endpoints SET gateway_provider = ? WHERE id = ?'),
      epSandboxKey: db.prepare('UPDATE endpoints SET sandbox_key = ? WHERE id = ?'),
      epName: db.prepare('UPDATE endpoints SET name = ?, aliases = ? WHERE id = ?'),
      epDelete: db.prepare('DELETE FROM endpoints WHERE id = ?'),
      ports: db.prepare('SELECT * FROM ports'),
      portsByEp: db.prepare('SELECT * FROM ports WHERE endpoint_id = ? ORDER BY proto, host_port'),
      portsOnPort: db.prepare('SELECT * FROM ports WHERE proto = ? AND host_port = ?'),
      portInsert: cols('ports', PORT_COLUMNS),
      portsDelete: db.prepare('DELETE FROM ports WHERE endpoint_id = ?'),
      kvGet: db.prepare('SELECT value FROM driver_kv WHERE driver = ? AND key = ?'),
      kvPut: db.prepare('INSERT OR REPLACE INTO driver_kv (driver, key, value) VALUES (?, ?, ?)'),
      kvDelete: db.prepare('DELETE FROM driver_kv WHERE driver = ? AND key = ?'),
      kvList: db.prepare("SELECT key, value FROM driver_kv WHERE driver = ? AND substr(key, 1, length(?)) = ? ORDER BY key"),
    };
  }

  /** Runs `fn` as one immediate (write-locking) transaction; nested calls become savepoints. */
  tx<T>(fn: () => T): T {
    let r: T;
    try {
      r = this.db.transaction(fn).immediate();
    } catch (e) {
      throw storeError(e, this.db.name, 'the change');
    }
    this.checkpointSoon();
    return r;
  }

  private syncWaiters: { resolve: () => void; reject: (e: unknown) => void }[] | undefined;

  /**
   * Resolves once every commit made so far is on disk: a group commit. The callers of one turn of
   * the event loop share one fsync (a durable write of the sync mark, whose fsync of the WAL takes
   * every fsync-free commit before it along), so concurrent operations that each committed with
   * `unsynced` pay for one fsync between them instead of one each.
   */
  synced(): Promise<void> {
    return new Promise((resolve, reject) => {
      if (!this.syncWaiters) {
        this.syncWaiters = [];
        setImmediate(() => this.flushSynced());
      }
      this.syncWaiters.push({ resolve, reject });
    });
  }

  private flushSynced(): void {
    const waiters = this.syncWaiters ?? [];
    this.syncWaiters = undefined;
    try {
      this.tx(() => this.s.syncMark.run());
    } catch (e) {
      for (const w of waiters) w.reject(e);
      return;
    }
    for (const w of waiters) w.resolve();
  }

  private checkpointTimer: NodeJS.Timeout | undefined;

  /**
   * A durable commit is in the WAL only: copy it into the database file within a second, off the
   * request path (one checkpoint for every commit of that second; see db.ts checkpoint).
   */
  private checkpointSoon(): void {
    if (this.checkpointTimer || !this.db.open || this.db.inTransaction) return;
    this.checkpointTimer = setTimeout(() => {
      this.checkpointTimer = undefined;
      if (!this.db.open) return;
      try {
        checkpoint(this.db);
      } catch {
        // a busy or full disk: the WAL keeps the commits, the next checkpoint (or the close) copies them
      }
    }, 1000);
    this.checkpointTimer.unref();
  }

  /** Copies the WAL into the database file, empties it, and closes the database. */
  close(): void {
    clearTimeout(this.checkpointTimer);
    this.checkpointTimer = undefined;
    if (!this.db.open) return;
    try {
      checkpoint(this.db, 'TRUNCATE');
    } finally {
      this.db.close();
    }
  }

  /**
   * Commits without an fsync of its own. The rows survive a kill -9 of this process at once (they
   * are in the WAL, in the OS's cache) but not a power loss, so only rows that need no more go here:
   * - intents (a row in state creating/deleting, with its allocations) written before the kernel
   *   work they announce: after a power loss those kernel objects are gone too, and the plain tx
   *   (synchronous=FULL) after the kernel work carries the intent to disk with its own fsync;
   * - Docker endpoint rows: they mirror what dockerd keeps itself, and after a power loss dockerd
   *   makes every endpoint anew (CreateEndpoint) and ignores a driver error on deleting an old one;
   * - a final commit the operation awaits `synced()` for before it returns (a group commit).
   * Saves one fsync (~0.25 ms here) per operation.
   */
  unsynced<T>(fn: () => T): T {
    try {
      return commitWithoutFsync(this.db, fn);
    } catch (e) {
      throw storeError(e, this.db.name, 'the change');
    }
  }

  // ---- networks
  private net(r: NetworkRow | undefined): Network | undefined {
    if (!r) return undefined;
    return {
      id: r.id,
      name: r.name,
      owner: r.owner as Owner,
      driver: r.driver,
      state: r.state as Lifecycle,
      internal: r.internal === 1,
      ipv4: ipConfig(r.pool4, r.subnet4, r.gateway4),
      ipv6: ipConfig(r.pool6, r.subnet6, r.gateway6),
      options: JSON.parse(r.options) as Record<string, string>,
      labels: JSON.parse(r.labels) as Record<string, string>,
      addresses: r.addresses as AddressSource,
      created: r.created,
    };
  }

  network(id: string): Network | undefined {
    return this.net(this.s.netById.get(id) as NetworkRow | undefined);
  }

  /**
   * By exact id, a name (`owner` given: that owner's; else the unowned network of that name, or
   * the only one), or a unique id prefix (as `docker network inspect` accepts).
   */
  findNetwork(ref: string, owner?: Owner): Network | undefined {
    const byId = this.s.netById.get(ref) as NetworkRow | undefined;
    if (byId) return this.net(byId);
    const named = byName(this.s.netByName.all(ref) as NetworkRow[], owner);
    if (named) return this.net(named);
    if (owner !== undefined) return undefined;
    if (!/^[0-9a-f]{4,63}$/.test(ref)) return undefined;
    const rows = this.s.netByPrefix.all(ref) as NetworkRow[];
    return rows.length === 1 ? this.net(rows[0]) : undefined;
  }

  networks(): Network[] {
    return (this.s.nets.all() as NetworkRow[]).map((r) => this.net(r)!);
  }

  insertNetwork(n: Network): void {
    this.s.netInsert.run({
      id: n.id,
      name: n.name,
      owner: n.owner,
      driver: n.driver,
      state: n.state,
      internal: n.internal ? 1 : 0,
      ...poolColumns(n.ipv4, n.ipv6),
      options: JSON.stringify(n.options),
      labels: JSON.stringify(n.labels),
      addresses: n.addresses,
      created: n.created,
    });
  }

  /** The pools chosen after the intent row was written (see Controller.createNetwork). */
  setNetworkPools(id: string, ipv4: IpConfig | undefined, ipv6: IpConfig | undefined): void {
    this.s.netPools.run({ id, ...poolColumns(ipv4, ipv6) });
  }

  setNetworkState(id: string, state: Lifecycle): void {
    this.s.netState.run(state, id);
  }

  deleteNetwork(id: string): void {
    this.s.netDelete.run(id);
  }

  endpointCount(networkId: string): number {
    return (this.s.epCountByNet.get(networkId) as { n: number }).n;
  }

  // ---- sandboxes
  private sb(r: SandboxRow | undefined): Sandbox | undefined {
    if (!r) return undefined;
    return {
      id: r.id,
      name: r.name,
      owner: r.owner as Owner,
      kind: r.kind as Sandbox['kind'],
      state: r.state as Lifecycle,
      netns: r.netns,
      created: r.created,
    };
  }

  sandbox(id: string): Sandbox | undefined {
    return this.sb(this.s.sbById.get(id) as SandboxRow | undefined);
  }

  /** By id, or by name as findNetwork. */
  findSandbox(ref: string, owner?: Owner): Sandbox | undefined {
    const byId = this.s.sbById.get(ref) as SandboxRow | undefined;
    return this.sb(byId ?? byName(this.s.sbByName.all(ref) as SandboxRow[], owner));
  }

  sandboxes(): Sandbox[] {
    return (this.s.sbs.all() as SandboxRow[]).map((r) => this.sb(r)!);
  }

  insertSandbox(s: Sandbox): void {
    this.s.sbInsert.run({ id: s.id, name: s.name, owner: s.owner, kind: s.kind, state: s.state, netns: s.netns, created: s.created });
  }

  setSandboxState(id: string, state: Lifecycle): void {
    this.s.sbState.run(state, id);
  }

  deleteSandbox(id: string): void {
    this.s.sbDelete.run(id);
  }

  // ---- endpoints
  private ep(r: EndpointRow | undefined): Endpoint | undefined {
    if (!r) return undefined;
    return {
      id: r.id,
      name: r.name,
      networkId: r.network_id,
      sandboxId: r.sandbox_id ?? undefined,
      state: r.state as Lifecycle,
      ipv4: r.ipv4 ? IpAddr.parse(r.ipv4) : undefined,
      ipv6: r.ipv6 ? IpAddr.parse(r.ipv6) : undefined,
      mac: r.mac,
      hostIfname: r.host_ifname ?? undefined,
      ifname: r.ifname,
      aliases: JSON.parse(r.aliases) as string[],
      ports: (this.s.portsByEp.all(r.id) as PortRow[]).map(toPort),
      gatewayProvider: r.gateway_provider === 1,
      sandboxKey: r.sandbox_key ?? undefined,
      created: r.created,
    };
  }

  endpoint(id: string): Endpoint | undefined {
    return this.ep(this.s.epById.get(id) as EndpointRow | undefined);
  }

  endpoints(): Endpoint[] {
    return (this.s.eps.all() as EndpointRow[]).map((r) => this.ep(r)!);
  }

  /**
   * The DNS names (with their network's name) of every endpoint that could clash with `names`
   * joining `network`, for the clash check on each connect: the database finds the few candidates
   * (reading every endpoint per connect made a 300-node lab LAN quadratic).
   */
  endpointNames(names: readonly string[], network: string): { names: string[]; network: string; sandboxId: string | undefined }[] {
    const lower = names.map((n) => n.toLowerCase());
    const keys = JSON.stringify([...lower, ...lower.map((n) => `${n}.${network.toLowerCase()}`)]);
    return (this.s.epNames.all({ keys }) as { name: string; aliases: string; sandbox_id: string | null; network: string }[]).map((r) => ({
      names: [r.name, ...(JSON.parse(r.aliases) as string[])], network: r.network, sandboxId: r.sandbox_id ?? undefined,
    }));
  }

  endpointsOfNetwork(networkId: string): Endpoint[] {
    return (this.s.epsByNet.all(networkId) as EndpointRow[]).map((r) => this.ep(r)!);
  }

  endpointsOfSandbox(sandboxId: string): Endpoint[] {
    return (this.s.epsBySb.all(sandboxId) as EndpointRow[]).map((r) => this.ep(r)!);
  }

  insertEndpoint(e: Endpoint): void {
    this.s.epInsert.run({
      id: e.id,
      name: e.name,
      network_id: e.networkId,
      sandbox_id: e.sandboxId ?? null,
      state: e.state,
      ipv4: e.ipv4?.toString() ?? null,
      ipv6: e.ipv6?.toString() ?? null,
      mac: e.mac,
      host_ifname: e.hostIfname ?? null,
      ifname: e.ifname,
      aliases: JSON.stringify(e.aliases),
      gateway_provider: e.gatewayProvider ? 1 : 0,
      sandbox_key: e.sandboxKey ?? null,
      created: e.created,
    });
    for (const p of e.ports) this.insertPort(e.id, p);
  }

  setEndpointState(id: string, state: Lifecycle): void {
    this.s.epState.run(state, id);
  }

  /** Addresses chosen after the intent row was written (see Controller.createEndpoint). */
  setEndpointAddresses(id: string, ipv4: IpAddr | undefined, ipv6: IpAddr | undefined, mac: string): void {
    this.s.epAddresses.run(ipv4?.toString() ?? null, ipv6?.toString() ?? null, mac, id);
  }

  /** Joined into another engine's sandbox at this path, or left (undefined). */
  setSandboxKey(id: string, key: string | undefined): void {
    this.s.epSandboxKey.run(key ?? null, id);
  }

  /** The names an engine's endpoint is known by (learned after it joined: Docker's container name). */
  setEndpointNames(id: string, name: string, aliases: readonly string[]): void {
    this.s.epName.run(name, JSON.stringify(aliases), id);
  }

  setGatewayProvider(id: string, provider: boolean): void {
    this.s.epGatewayProvider.run(provider ? 1 : 0, id);
  }

  deleteEndpoint(id: string): void {
    this.s.portsDelete.run(id);
    this.s.epDelete.run(id);
  }

  // ---- ports
  /** Mappings on `proto`/`hostPort` that collide with `hostIp` ('' collides with every address). */
  portHolders(proto: string, hostIp: string, hostPort: number): (PortMapping & { endpointId: string })[] {
    return (this.s.portsOnPort.all(proto, hostPort) as PortRow[])
      .filter((r) => hostIp === '' || r.host_ip === '' || r.host_ip === hostIp)
      .map((r) => ({ ...toPort(r), endpointId: r.endpoint_id }));
  }

  insertPort(endpointId: string, p: PortMapping): void {
    this.s.portInsert.run({
      endpoint_id: endpointId,
      proto: p.proto,
      host_ip: p.hostIp,
      host_port: p.hostPort,
      container_port: p.containerPort,
    });
  }

  deletePorts(endpointId: string): void {
    this.s.portsDelete.run(endpointId);
  }

  allPorts(): (PortMapping & { endpointId: string })[] {
    return (this.s.ports.all() as PortRow[]).map((r) => ({ ...toPort(r), endpointId: r.endpoint_id }));
  }

  // ---- drivers' own records
  kvGet(driver: string, key: string): string | undefined {
    return (this.s.kvGet.get(driver, key) as { value: string } | undefined)?.value;
  }

  kvPut(driver: string, key: string, value: string): void {
    this.s.kvPut.run(driver, key, value);
  }

  kvDelete(driver: string, key: string): void {
    this.s.kvDelete.run(driver, key);
  }

  kvList(driver: string, prefix: string): { key: string; value: string }[] {
    return this.s.kvList.all(driver, prefix, prefix) as { key: string; value: string }[];
  }
}

/** The row of that owner's name; without an owner, the unowned one, else the only one. */
function byName<R extends { owner: string }>(rows: readonly R[], owner: Owner | undefined): R | undefined {
  if (owner !== undefined) return rows.find((r) => r.owner === owner);
  return rows.find((r) => r.owner === '') ?? (rows.length === 1 ? rows[0] : undefined);
}
