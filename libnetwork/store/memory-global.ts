/**
 * The in-memory GlobalStore, for unit tests: a MemoryCluster plays etcd (one revision counter,
 * a history of changes, leases that expire, compaction, an outage), and each MemoryGlobalStore
 * on it plays one host's client. The semantics are the etcd implementation's, so the contract
 * test (test/unit/global-store-contract.ts) runs unchanged against both.
 */
import { TnetError } from '../errors.js';
import {
  type CommitResult,
  type Compare,
  DEFAULT_LEASE_TTL,
  type GlobalStore,
  type KeyValue,
  type Listing,
  type Op,
  type StoreEvent,
  type Watch,
  type WatchEvent,
  type WatchOptions,
  WatchQueue,
  PublishedKeys,
  TransactionalStore,
} from './global.js';

interface Change {
  readonly revision: number;
  readonly key: string;
  readonly kv?: KeyValue; // put; absent: delete
}

interface MemLease {
  readonly ttl: number;
  expiresAt: number;
}

/** The shared "etcd": every MemoryGlobalStore on one cluster sees the same keys and revisions. */
export class MemoryCluster {
  private readonly kv = new Map<string, KeyValue>();
  private readonly history: Change[] = [];
  private readonly leases = new Map<string, MemLease>();
  private readonly catchUps = new Set<() => void>();
  private nextLease = 1;
  private timer: NodeJS.Timeout | undefined;
  revision = 1;
  /** Changes at or below this revision are gone: a watch that needs them resyncs. */
  compacted = 0;
  up = true;

  constructor(readonly endpoint = 'memory') {}

  /** Throws 'unavailable' while the cluster is stopped, as the etcd client does. */
  check(): void {
    if (!this.up) throw new TnetError('unavailable', `the global store at ${this.endpoint} cannot be reached (stopped)`, { object: this.endpoint });
  }

  grant(ttl: number): string {
    this.check();
    const id = String(this.nextLease++);
    this.leases.set(id, { ttl, expiresAt: Date.now() + ttl * 1000 });
    this.ensureTimer();
    return id;
  }

  /** Remaining TTL in seconds, or 0 when the lease expired or never existed (etcd's answer). */
  keepAlive(id: string): number {
    this.check();
    this.expire();
    const l = this.leases.get(id);
    if (!l) return 0;
    l.expiresAt = Date.now() + l.ttl * 1000;
    return l.ttl;
  }

  /** Expires a lease now, as etcd does when its keepalives stop (a test's stalled host). */
  expireLease(id: string): void {
    this.dropLease(id);
  }

  revoke(id: string): void {
    this.check();
    this.dropLease(id);
  }

  get(key: string): KeyValue | undefined {
    this.check();
    this.expire();
    return this.kv.get(key);
  }

  list(prefix: string): Listing {
    this.check();
    this.expire();
    const items = [...this.kv.values()].filter((kv) => kv.key.startsWith(prefix)).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { revision: this.revision, items };
  }

  commit(compares: readonly Compare[], ops: readonly Op[], lease: string): CommitResult {
    this.check();
    this.expire();
    const holds = compares.every((c) => {
      const cur = this.kv.get(c.key);
      return 'absent' in c ? cur === undefined : cur?.modRevision === c.modRevision;
    });
    if (!holds) return { ok: false, revision: this.revision };
    if (ops.some((op) => 'put' in op && op.leased && !this.leases.has(lease))) {
      throw new TnetError('unavailable', `the lease ${lease} of this host expired: its keys are being written again`, { object: this.endpoint });
    }
    if (ops.length === 0) return { ok: true, revision: this.revision };
    const rev = ++this.revision;
    for (const op of ops) {
      if ('put' in op) {
        const prev = this.kv.get(op.put);
        const kv: KeyValue = {
          key: op.put,
          value: op.value,
          createRevision: prev?.createRevision ?? rev,
          modRevision: rev,
          lease: op.leased ? lease : '0',
        };
        this.kv.set(op.put, kv);
        this.history.push({ revision: rev, key: op.put, kv });
      } else {
        const keys = 'delete' in op ? [op.delete] : [...this.kv.keys()].filter((k) => k.startsWith(op.deletePrefix));
        for (const k of keys) if (this.kv.delete(k)) this.history.push({ revision: rev, key: k });
      }
    }
    this.notify();
    return { ok: true, revision: rev };
  }

  /** Drops history up to `revision` (default: now), as `etcdctl compact` does. */
  compact(revision = this.revision): void {
    this.compacted = Math.max(this.compacted, revision);
    while (this.history.length && this.history[0]!.revision <= this.compacted) this.history.shift();
  }

  /** An outage: every call fails 'unavailable', watches stall, leases do not expire. */
  stop(): void {
    this.up = false;
  }

  /** Back from an outage: leases get their full TTL again (etcd restarts count TTLs from start), watches catch up. */
  start(): void {
    this.up = true;
    const now = Date.now();
    for (const l of this.leases.values()) l.expiresAt = now + l.ttl * 1000;
    this.notify();
  }

  /** Changes after `revision` under `prefix`, or undefined when compaction removed some of them. */
  since(revision: number, prefix: string): Change[] | undefined {
    if (revision < this.compacted) return undefined;
    return this.history.filter((c) => c.revision > revision && c.key.startsWith(prefix));
  }

  subscribe(fn: () => void): () => void {
    this.catchUps.add(fn);
    return () => this.catchUps.delete(fn);
  }

  /** Ends the expiry timer (a test's teardown). */
  shutdown(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private notify(): void {
    if (!this.up) return;
    for (const fn of [...this.catchUps]) queueMicrotask(fn);
  }

  private ensureTimer(): void {
    if (this.timer) return;
    this.timer = setInterval(() => this.expire(), 100);
    this.timer.unref();
  }

  private expire(): void {
    if (!this.up) return;
    const now = Date.now();
    for (const [id, l] of this.leases) if (l.expiresAt <= now) this.dropLease(id);
  }

  private dropLease(id: string): void {
    if (!this.leases.delete(id)) return;
    const keys = [...this.kv.values()].filter((kv) => kv.lease === id).map((kv) => kv.key);
    if (keys.length === 0) return;
    const rev = ++this.revision;
    for (const k of keys) {
      this.kv.delete(k);
      this.history.push({ revision: rev, key: k });
    }
    this.notify();
  }
}

/** One host's client of a MemoryCluster. */
export class MemoryGlobalStore extends TransactionalStore implements GlobalStore {
  readonly endpoint: string;
  lease = '0';
  private readonly published = new PublishedKeys();
  private readonly listeners = new Set<(e: StoreEvent) => void>();
  private readonly watches = new Set<Watch>();
  private keepalive: NodeJS.Timeout | undefined;
  private closed = false;
  private wasDown = false;

  private constructor(
    private readonly cluster: MemoryCluster,
    readonly ttl: number,
  ) {
    super();
    this.endpoint = cluster.endpoint;
  }

  static async open(cluster: MemoryCluster, opts: { ttl?: number } = {}): Promise<MemoryGlobalStore> {
    const s = new MemoryGlobalStore(cluster, opts.ttl ?? DEFAULT_LEASE_TTL);
    s.lease = cluster.grant(s.ttl);
    s.keepalive = setInterval(() => void s.tick(), (s.ttl * 1000) / 3);
    s.keepalive.unref();
    return s;
  }

  private async tick(): Promise<void> {
    if (this.closed) return;
    if (!this.cluster.up) {
      if (!this.wasDown) this.emit({ type: 'unavailable', error: this.unavailable() });
      this.wasDown = true;
      return;
    }
    if (this.wasDown) this.emit({ type: 'available' });
    this.wasDown = false;
    if (this.cluster.keepAlive(this.lease) > 0) return;
    // Lost (we were stalled past the TTL): a new lease, and this host's keys written again.
    this.emit({ type: 'lease-lost', lease: this.lease });
    this.lease = this.cluster.grant(this.ttl);
    const lease = this.lease;
    const { republished, conflicts } = await this.published.republish((c, o) => this.cluster.commit(c, o, lease));
    this.emit({ type: 'lease-renewed', lease: this.lease, republished, conflicts });
  }

  private unavailable(): TnetError {
    return new TnetError('unavailable', `the global store at ${this.endpoint} cannot be reached (stopped)`, { object: this.endpoint });
  }

  private emit(e: StoreEvent): void {
    for (const fn of this.listeners) fn(e);
  }

  private live(): void {
    if (this.closed) throw new TnetError('internal', `the global store client for ${this.endpoint} is closed`);
  }

  async get(key: string): Promise<KeyValue | undefined> {
    this.live();
    return this.cluster.get(key);
  }

  async list(prefix: string): Promise<Listing> {
    this.live();
    return this.cluster.list(prefix);
  }

  async commit(compares: readonly Compare[], ops: readonly Op[]): Promise<CommitResult> {
    this.live();
    const r = this.cluster.commit(compares, ops, this.lease);
    if (r.ok) {
      this.published.note(ops);
    }
    return r;
  }

  async delete(key: string): Promise<boolean> {
    const cur = await this.get(key);
    if (!cur) return false;
    await this.commit([], [{ delete: key }]);
    return true;
  }

  watch(prefix: string, opts: WatchOptions = {}): Watch {
    this.live();
    const q = new WatchQueue();
    const cluster = this.cluster;
    let rev: number;
    const resync = (reason: string) => {
      const l = cluster.list(prefix);
      rev = l.revision;
      q.push({ type: 'resync', items: l.items, revision: l.revision, reason });
    };
    if (opts.afterRevision === undefined) resync('start');
    else rev = opts.afterRevision;
    const catchUp = () => {
      if (!cluster.up) return;
      const changes = cluster.since(rev, prefix);
      if (!changes) return resync(`revision ${rev} was compacted`);
      for (const c of changes) {
        rev = c.revision;
        q.push(c.kv ? { type: 'put', kv: c.kv, revision: c.revision } : { type: 'delete', key: c.key, revision: c.revision });
      }
      rev = Math.max(rev, cluster.revision);
    };
    const unsubscribe = cluster.subscribe(catchUp);
    queueMicrotask(catchUp);
    const watches = this.watches;
    const w: Watch = {
      [Symbol.asyncIterator]: () => q[Symbol.asyncIterator](),
      onEvent: (fn: (e: WatchEvent) => void) => q.onEvent(fn),
      get revision() {
        return q.revision;
      },
      close: async () => {
        unsubscribe();
        q.end();
        watches.delete(w);
      },
    };
    q.onReturn = () => void w.close();
    watches.add(w);
    return w;
  }

  onStoreEvent(fn: (e: StoreEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  async close(opts: { revoke?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    clearInterval(this.keepalive);
    for (const w of [...this.watches]) await w.close();
    if (opts.revoke !== false && this.cluster.up) this.cluster.revoke(this.lease);
    this.closed = true;
    this.listeners.clear();
  }
}
