/**
 * The global store: state shared by every tnet daemon of a cluster (overlay networks, their VNIs,
 * their address allocations, the peer table). Two implementations: etcd (store/etcd.ts, the real
 * one) and an in-memory one (store/memory-global.ts) with the same semantics, for unit tests.
 *
 * The model is etcd's, kept small:
 * - keys and values are strings; every change bumps one store-wide revision;
 * - `commit` is a transaction: compares on keys (absent, or at a given modRevision) and, if all
 *   hold, a list of puts and deletes applied at once. Create-if-absent and compare-and-swap are
 *   its two common shapes (create(), swap()); an allocation is a create that won;
 * - `leased` puts live under this host's lease: a host that dies (no keepalive for the TTL)
 *   loses them everywhere at once, which is what keeps the peer table free of stale peers;
 * - a watch never loses an event: it resumes from the last revision seen after a reconnect, and
 *   when that revision was compacted it re-lists and hands the consumer a 'resync' with the full
 *   current list (flannel's resyncWatch; flannel#126 is what a spurious delete instead costs).
 *
 * Errors: TnetError('unavailable') naming the endpoint when the store cannot be reached (the
 * caller's operation failed, nothing is half done: a commit either applied or did not).
 */
import type { TnetError } from '../errors.js';

/** One key as the store holds it. Revisions are etcd's (numbers: a cluster will not pass 2^53). */
export interface KeyValue {
  readonly key: string;
  readonly value: string;
  /** Revision of the transaction that created the key (since its last deletion). */
  readonly createRevision: number;
  /** Revision of its last change: what a compare-and-swap compares. */
  readonly modRevision: number;
  /** Lease id the key lives under ('0' = none). */
  readonly lease: string;
}

/** Everything under a prefix, and the revision the listing reflects (a watch continues from revision + 1). */
export interface Listing {
  readonly revision: number;
  readonly items: readonly KeyValue[];
}

/** A condition of a transaction: the key is absent, or its last change was at `modRevision`. */
export type Compare =
  | { readonly key: string; readonly absent: true }
  | { readonly key: string; readonly modRevision: number };

/** A change of a transaction. `leased`: under this host's lease (removed when the host dies). */
export type Op =
  | { readonly put: string; readonly value: string; readonly leased?: boolean }
  | { readonly delete: string }
  | { readonly deletePrefix: string };

export interface CommitResult {
  /** Whether every compare held and the ops were applied. */
  readonly ok: boolean;
  /** The store's revision after the transaction (applied or not). */
  readonly revision: number;
}

/** What a watch delivers. `resync` replaces everything the consumer knew under the prefix. */
export type WatchEvent =
  | { readonly type: 'put'; readonly kv: KeyValue; readonly revision: number }
  | { readonly type: 'delete'; readonly key: string; readonly revision: number }
  | { readonly type: 'resync'; readonly items: readonly KeyValue[]; readonly revision: number; readonly reason: string };

export interface WatchOptions {
  /**
   * Deliver changes after this revision (a Listing's revision). Omitted: the watch starts with a
   * 'resync' holding the current list, then changes after it.
   */
  readonly afterRevision?: number;
}

/** A running watch: an async iterator of events, or a callback. close() ends both. */
export interface Watch extends AsyncIterable<WatchEvent> {
  /** Calls `fn` for each event, in order (instead of iterating). */
  onEvent(fn: (e: WatchEvent) => void): void;
  /** The last revision delivered to the consumer. */
  readonly revision: number;
  close(): Promise<void>;
}

/** Events about the store itself, for the daemon's log and the overlay driver. */
export type StoreEvent =
  /** The lease expired (etcd said so): every leased key of this host is gone everywhere. */
  | { readonly type: 'lease-lost'; readonly lease: string }
  /**
   * A new lease was granted after a loss and this host's leased keys were written again under
   * it. `conflicts`: keys another host had taken meanwhile (not overwritten).
   */
  | { readonly type: 'lease-renewed'; readonly lease: string; readonly republished: readonly string[]; readonly conflicts: readonly string[] }
  | { readonly type: 'unavailable'; readonly error: TnetError }
  | { readonly type: 'available' };

export interface GlobalStore {
  /** Where the store is, for messages: `etcd://10.0.0.1:2379` or `memory`. */
  readonly endpoint: string;
  /** This host's lease id (granted by open()). */
  readonly lease: string;
  /** The lease TTL in seconds. */
  readonly ttl: number;

  get(key: string): Promise<KeyValue | undefined>;
  list(prefix: string): Promise<Listing>;
  /** A transaction: if every compare holds, apply every op, atomically. */
  commit(compares: readonly Compare[], ops: readonly Op[]): Promise<CommitResult>;
  /** Create-if-absent: true when this call created the key, false when it existed. */
  create(key: string, value: string, opts?: { leased?: boolean }): Promise<boolean>;
  /** Compare-and-swap on modRevision: true when the key was still at `modRevision` and now holds `value`. */
  swap(key: string, modRevision: number, value: string, opts?: { leased?: boolean }): Promise<boolean>;
  /** Unconditional put (leased: under this host's lease, and re-published after a lease loss). */
  put(key: string, value: string, opts?: { leased?: boolean }): Promise<void>;
  /** Deletes a key (absent is fine); resolves whether it existed. */
  delete(key: string): Promise<boolean>;
  watch(prefix: string, opts?: WatchOptions): Watch;
  /** Store events (lease lost/renewed, unavailable/available). Returns the unsubscribe function. */
  onStoreEvent(fn: (e: StoreEvent) => void): () => void;
  /**
   * Ends watches, stops the keepalive and disconnects. `revoke` (default true) revokes the lease
   * first, so this host's leased keys disappear now; false leaves them to expire with the TTL
   * (what a crash does).
   */
  close(opts?: { revoke?: boolean }): Promise<void>;
}

/** The default lease TTL, in seconds: a dead host's peers are withdrawn within this plus one second. */
export const DEFAULT_LEASE_TTL = 5;

/** Ops that put under the lease, to re-publish them after a lease loss. */
/**
 * The keys this host wrote under its lease, with their values: what it writes again (create if
 * absent) under a new lease when the old one was lost, so its records come back without taking a
 * key another host wrote meanwhile.
 */
export class PublishedKeys {
  private readonly keys = new Map<string, string>();

  /** Follows a transaction that succeeded. */
  note(ops: readonly Op[]): void {
    for (const op of ops) {
      if ('delete' in op) this.keys.delete(op.delete);
      else if ('put' in op) {
        if (op.leased) this.keys.set(op.put, op.value);
        else this.keys.delete(op.put);
      } else for (const k of [...this.keys.keys()]) if (k.startsWith(op.deletePrefix)) this.keys.delete(k);
    }
  }

  forget(key: string): void {
    this.keys.delete(key);
  }

  /** Writes every key again through `commit` (under the new lease); a key now held elsewhere is a conflict and forgotten. */
  async republish(commit: (compares: readonly Compare[], ops: readonly Op[]) => Promise<CommitResult> | CommitResult): Promise<{ republished: string[]; conflicts: string[] }> {
    const republished: string[] = [];
    const conflicts: string[] = [];
    for (const [key, value] of [...this.keys]) {
      try {
        const r = await commit([{ key, absent: true }], [{ put: key, value, leased: true }]);
        (r.ok ? republished : conflicts).push(key);
        if (!r.ok) this.keys.delete(key);
      } catch {
        conflicts.push(key);
      }
    }
    return { republished, conflicts };
  }
}

/** The shapes every store builds on its one transaction verb. */
export abstract class TransactionalStore {
  abstract commit(compares: readonly Compare[], ops: readonly Op[]): Promise<CommitResult>;

  async create(key: string, value: string, opts?: { leased?: boolean }): Promise<boolean> {
    return (await this.commit([{ key, absent: true }], [{ put: key, value, leased: opts?.leased }])).ok;
  }

  async swap(key: string, modRevision: number, value: string, opts?: { leased?: boolean }): Promise<boolean> {
    return (await this.commit([{ key, modRevision }], [{ put: key, value, leased: opts?.leased }])).ok;
  }

  async put(key: string, value: string, opts?: { leased?: boolean }): Promise<void> {
    await this.commit([], [{ put: key, value, leased: opts?.leased }]);
  }
}

/**
 * The queue behind a Watch: events pushed by the implementation, pulled by one consumer (an
 * iterator or a callback). Unbounded on purpose: dropping an event would break the promise.
 */
export class WatchQueue implements AsyncIterable<WatchEvent> {
  private readonly queued: WatchEvent[] = [];
  private waiter: ((r: IteratorResult<WatchEvent>) => void) | undefined;
  private listener: ((e: WatchEvent) => void) | undefined;
  private ended = false;
  revision = 0;
  /** Called once when the consumer stops iterating early (break): the implementation closes the watch. */
  onReturn: (() => void) | undefined;

  push(e: WatchEvent): void {
    if (this.ended) return;
    this.revision = e.revision;
    if (this.listener) return this.listener(e);
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      return w({ value: e, done: false });
    }
    this.queued.push(e);
  }

  onEvent(fn: (e: WatchEvent) => void): void {
    this.listener = fn;
    for (const e of this.queued.splice(0)) fn(e);
  }

  end(): void {
    this.ended = true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w({ value: undefined, done: true });
    }
  }

  [Symbol.asyncIterator](): AsyncIterator<WatchEvent> {
    return {
      next: () => {
        const e = this.queued.shift();
        if (e) return Promise.resolve({ value: e, done: false });
        if (this.ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.waiter = resolve));
      },
      return: async () => {
        this.end();
        this.onReturn?.();
        return { value: undefined, done: true };
      },
    };
  }
}
