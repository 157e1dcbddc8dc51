/**
 * The GlobalStore on etcd v3 (npm etcd3 1.1.2, Debian etcd-server 3.4). What was measured here
 * and shapes this file (reference overlay.md section 6):
 * - the lease keepalive is ours (autoKeepAlive: false + keepaliveOnce every TTL/3): etcd3's own
 *   loop declares the lease lost after 2 x TTL without an answer even when etcd was merely down
 *   (an etcd restart resets every lease to its full TTL, so nothing had expired), and after
 *   client.close() it keeps firing "client was already closed" every ~100 ms until `lost`;
 * - only etcd's answer "TTL <= 0" means lost: then a new lease, and this host's leased keys are
 *   written again (create-if-absent: a key another host took meanwhile is reported, not stolen);
 * - a watch resumes by itself after a reconnect (from its last revision + 1); a watch whose
 *   revision was compacted is cancelled ("Watcher canceled"): we re-list and hand a 'resync';
 * - the per-host circuit breaker etcd3 installs by default keeps a restarted etcd unused for 5 s:
 *   with one host it only delays recovery, so calls pass straight through and fail fast instead
 *   (each unary call has a deadline; the caller sees 'unavailable' naming the endpoint).
 */
import { readFileSync } from 'node:fs';
import { Etcd3, type IOptions, type Watcher } from 'etcd3';
import { TnetError, invalid } from '../errors.js';
import { log } from '../log.js';
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

/** A parsed `--store` value. */
export interface StoreUrl {
  /** The URL as given, without credentials: what messages name. */
  readonly endpoint: string;
  /** host:port of each cluster member. */
  readonly hosts: readonly string[];
  /** etcds:// (or a CA given): TLS. */
  readonly tls: boolean;
  readonly username?: string;
  readonly password?: string;
}

const STORE_FORMS = 'etcd://HOST:PORT[,HOST:PORT...] or etcds://HOST:PORT[,...] (TLS)';

/**
 * Parses `--store` / TNET_STORE: `etcd://HOST:PORT[,HOST:PORT...]`, `etcds://...` for TLS, with
 * optional `USER:PASSWORD@` before the hosts. IPv6 hosts in brackets. Every mistake is an
 * 'invalid-argument' naming the value and the expected form.
 */
export function parseStoreUrl(url: string): StoreUrl {
  const bad = (why: string) => invalid(`store "${redact(url)}": ${why}; expected ${STORE_FORMS}`, 'store');
  const m = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i.exec(url.trim());
  if (!m) throw bad('not a URL');
  const scheme = m[1]!.toLowerCase();
  if (scheme !== 'etcd' && scheme !== 'etcds') throw bad(`unsupported scheme "${scheme}" (tnet's global store is etcd)`);
  let rest = m[2]!.replace(/\/+$/, '');
  let username: string | undefined;
  let password: string | undefined;
  const at = rest.lastIndexOf('@');
  if (at >= 0) {
    const cred = rest.slice(0, at);
    rest = rest.slice(at + 1);
    const colon = cred.indexOf(':');
    if (colon <= 0) throw bad('credentials must be USER:PASSWORD@');
    username = decodeURIComponent(cred.slice(0, colon));
    password = decodeURIComponent(cred.slice(colon + 1));
  }
  if (rest.includes('/')) throw bad('no path is allowed after the hosts');
  if (rest === '') throw bad('no host');
  const hosts = rest.split(',').map((h) => {
    const hm = /^(\[[0-9a-f:.]+\]|[a-z0-9.-]+):(\d{1,5})$/i.exec(h);
    if (!hm) throw bad(`"${h}" is not HOST:PORT`);
    const port = Number(hm[2]);
    if (port < 1 || port > 65535) throw bad(`port ${port} of "${h}" is out of range`);
    return `${hm[1]}:${port}`;
  });
  return { endpoint: `${scheme}://${hosts.join(',')}`, hosts, tls: scheme === 'etcds', username, password };
}

/** The URL with any password replaced, for messages. */
function redact(url: string): string {
  return url.replace(/\/\/([^:@/]+):[^@/]*@/, '//$1:***@');
}

export interface EtcdStoreOptions {
  /** The `--store` value (parseStoreUrl). */
  readonly url: string;
  /** TLS files (PEM). A CA implies TLS even with etcd://. A client cert needs its key. */
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  /** etcd authentication; overrides USER:PASSWORD@ in the URL. */
  readonly username?: string;
  readonly password?: string;
  /** Lease TTL in seconds (default DEFAULT_LEASE_TTL). */
  readonly ttl?: number;
  /** Deadline of each call, ms (default 3000): how long an operation waits for an unreachable etcd. */
  readonly timeoutMs?: number;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw invalid(`store ${what} "${path}" cannot be read: ${(e as Error).message}`, 'store');
  }
}

/** A policy object that runs the call once (etcd3's IPolicy, of which the pool uses execute only). */
const passThrough = {
  execute: <T>(fn: (ctx: { signal: AbortSignal }) => PromiseLike<T> | T) => Promise.resolve().then(() => fn({ signal: new AbortController().signal })),
  onSuccess: () => ({ dispose() {} }),
  onFailure: () => ({ dispose() {} }),
};

/** Watch reconnect backoff: 100 ms doubling to 1 s (etcd3's default grows to 30 s: a long outage would delay recovery as long). */
interface Backoff {
  readonly duration: number;
  next(): Backoff;
}
const backoff = (ms: number): Backoff => ({
  duration: ms,
  next: () => backoff(Math.min(ms * 2, 1000)),
});

/** The end of the range of keys that start with `prefix` (etcd's prefix convention). */
function prefixEnd(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i]! < 0xff) {
      const end = Buffer.from(b.subarray(0, i + 1));
      end[i]! += 1;
      return end;
    }
  }
  return Buffer.from([0]);
}

interface RawKv {
  key: Buffer;
  value: Buffer;
  create_revision: string;
  mod_revision: string;
  lease: string;
}

const toKv = (kv: RawKv): KeyValue => ({
  key: kv.key.toString(),
  value: kv.value.toString(),
  createRevision: Number(kv.create_revision),
  modRevision: Number(kv.mod_revision),
  lease: String(kv.lease ?? '0'),
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class EtcdGlobalStore extends TransactionalStore implements GlobalStore {
  lease = '0';
  private readonly published = new PublishedKeys();
  private readonly listeners = new Set<(e: StoreEvent) => void>();
  private readonly watches = new Set<Watch>();
  private keepalive: NodeJS.Timeout | undefined;
  private closed = false;
  private down = false;
  private renewing = false;

  private constructor(
    private readonly client: Etcd3,
    readonly endpoint: string,
    readonly ttl: number,
    private readonly timeoutMs: number,
  ) {
    super();
  }

  /**
   * Connects and grants this host's lease. Rejects 'unavailable' naming the endpoint when etcd
   * cannot be reached (or refuses the TLS handshake or the credentials), 'invalid-argument' for
   * a bad URL or unreadable TLS files.
   */
  static async open(opts: EtcdStoreOptions): Promise<EtcdGlobalStore> {
    const url = parseStoreUrl(opts.url);
    const ttl = opts.ttl ?? DEFAULT_LEASE_TTL;
    if (!Number.isInteger(ttl) || ttl < 1) throw invalid(`store lease TTL ${ttl}: must be a whole number of seconds, at least 1`, 'store');
    if ((opts.cert === undefined) !== (opts.key === undefined)) {
      throw invalid('store TLS: a client certificate needs its key and a key its certificate (give both)', 'store');
    }
    const tls = url.tls || opts.ca !== undefined || opts.cert !== undefined;
    const timeoutMs = opts.timeoutMs ?? 3000;
    const username = opts.username ?? url.username;
    const password = opts.password ?? url.password;
    const options: IOptions = {
      hosts: url.hosts.map((h) => `${tls ? 'https' : 'http'}://${h}`),
      dialTimeout: timeoutMs,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + timeoutMs }),
      faultHandling: {
        host: () => passThrough as never,
        global: passThrough as never,
        watchBackoff: backoff(100) as never,
      },
      // TLS without a CA or a client certificate: no credentials, and etcd3 uses the system CAs
      // for https hosts. A client certificate without a CA: null roots = the system CAs too.
      ...(opts.ca !== undefined || opts.cert !== undefined
        ? {
            credentials: {
              rootCertificate: opts.ca !== undefined ? readPem(opts.ca, 'CA') : (null as unknown as Buffer),
              ...(opts.cert !== undefined ? { certChain: readPem(opts.cert, 'client certificate'), privateKey: readPem(opts.key!, 'client key') } : {}),
            },
          }
        : {}),
      ...(username !== undefined ? { auth: { username, password: password ?? '' } } : {}),
    };
    const client = new Etcd3(options);
    const store = new EtcdGlobalStore(client, url.endpoint, ttl, timeoutMs);
    try {
      store.lease = await store.grant();
    } catch (e) {
      client.close();
      throw store.wrap(e, 'granting this host\'s lease');
    }
    store.keepalive = setInterval(() => void store.tick(), (ttl * 1000) / 3);
    store.keepalive.unref();
    return store;
  }

  /** A call failure as a TnetError: 'unavailable' naming the endpoint, with the likely fix. */
  private wrap(e: unknown, doing: string): TnetError {
    if (e instanceof TnetError) return e;
    // grpc appends a timestamp and an empty "Resolution note": noise in a message for a person.
    const msg = (e instanceof Error ? e.message : String(e)).replace(/\s*\(\d{4}-\d\d-\d\dT[^)]*\)\.?\s*(Resolution note:.*)?$/s, '');
    const name = e instanceof Error ? e.constructor.name : '';
    let hint = 'is etcd running and reachable from this host?';
    if (/handshake|certificate|SSL|TLS|alert/i.test(msg)) hint = 'the TLS handshake failed: check the CA, the client certificate and key';
    else if (/auth|permission|password|user/i.test(msg) || /Authentication|PermissionDenied|InvalidAuth/.test(name)) {
      hint = 'etcd refused the credentials: check the user and password';
    }
    return new TnetError('unavailable', `the global store at ${this.endpoint} cannot be used (${doing}): ${msg}; ${hint}`, {
      object: this.endpoint,
      cause: e,
    });
  }

  private async call<T>(doing: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new TnetError('internal', `the global store client for ${this.endpoint} is closed`, { object: this.endpoint });
    try {
      const r = await fn();
      this.setDown(false);
      return r;
    } catch (e) {
      const err = this.wrap(e, doing);
      this.setDown(true, err);
      throw err;
    }
  }

  private setDown(down: boolean, error?: TnetError): void {
    if (down === this.down) return;
    this.down = down;
    this.emit(down ? { type: 'unavailable', error: error! } : { type: 'available' });
  }

  private emit(e: StoreEvent): void {
    for (const fn of this.listeners) {
      try {
        fn(e);
      } catch (err) {
        log.error({ err }, 'global store event listener failed');
      }
    }
  }

  private async grant(): Promise<string> {
    const r = await this.client.leaseClient.leaseGrant({ TTL: this.ttl, ID: 0 }, { deadline: Date.now() + this.timeoutMs });
    return String(r.ID);
  }

  /** One keepalive; etcd's "TTL <= 0" (and only that) is a lost lease. */
  private async keepAliveOnce(): Promise<number> {
    const stream = await this.client.leaseClient.leaseKeepAlive();
    try {
      return await new Promise<number>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('lease keepalive timed out')), this.timeoutMs);
        stream.on('data', (res: { TTL: string }) => {
          clearTimeout(timer);
          resolve(Number(res.TTL));
        });
        stream.on('error', (err: Error) => {
          clearTimeout(timer);
          reject(err);
        });
        stream.write({ ID: this.lease });
      });
    } finally {
      stream.end();
    }
  }

  private async tick(): Promise<void> {
    if (this.closed || this.renewing) return;
    let left: number;
    try {
      left = await this.keepAliveOnce();
      this.setDown(false);
    } catch (e) {
      this.setDown(true, this.wrap(e, 'keeping the lease alive'));
      return;
    }
    if (left > 0 || this.closed) return;
    this.renewing = true;
    try {
      await this.renew();
    } finally {
      this.renewing = false;
    }
  }

  /** After a lost lease: a new one, and this host's leased keys written again under it. */
  private async renew(): Promise<void> {
    log.warn({ store: this.endpoint, lease: this.lease }, 'the global store lease expired: granting a new one and re-publishing');
    this.emit({ type: 'lease-lost', lease: this.lease });
    try {
      this.lease = await this.grant();
    } catch (e) {
      this.setDown(true, this.wrap(e, 'granting a new lease'));
      return; // the next tick finds TTL 0 again and retries
    }
    const { republished, conflicts } = await this.published.republish((c, o) => this.rawCommit(c, o));
    this.emit({ type: 'lease-renewed', lease: this.lease, republished, conflicts });
  }

  async get(key: string): Promise<KeyValue | undefined> {
    return this.call(`reading ${key}`, async () => {
      const r = await this.client.kv.range({ key: Buffer.from(key) });
      return r.kvs[0] ? toKv(r.kvs[0] as RawKv) : undefined;
    });
  }

  async list(prefix: string): Promise<Listing> {
    return this.call(`listing ${prefix}`, () => this.rawList(prefix));
  }

  private async rawList(prefix: string): Promise<Listing> {
    const r = await this.client.kv.range({ key: Buffer.from(prefix), range_end: prefixEnd(prefix) });
    return { revision: Number(r.header.revision), items: r.kvs.map((kv) => toKv(kv as RawKv)) };
  }

  private async rawCommit(compares: readonly Compare[], ops: readonly Op[]): Promise<CommitResult> {
    const r = await this.client.kv.txn({
      compare: compares.map((c) =>
        'absent' in c
          ? { key: Buffer.from(c.key), target: 'Create' as const, result: 'Equal' as const, create_revision: 0 }
          : { key: Buffer.from(c.key), target: 'Mod' as const, result: 'Equal' as const, mod_revision: c.modRevision },
      ),
      success: ops.map((op) =>
        'put' in op
          ? { request_put: { key: Buffer.from(op.put), value: Buffer.from(op.value), lease: op.leased ? this.lease : 0 } }
          : 'delete' in op
            ? { request_delete_range: { key: Buffer.from(op.delete) } }
            : { request_delete_range: { key: Buffer.from(op.deletePrefix), range_end: prefixEnd(op.deletePrefix) } },
      ),
      failure: [],
    });
    return { ok: r.succeeded, revision: Number(r.header.revision) };
  }

  async commit(compares: readonly Compare[], ops: readonly Op[]): Promise<CommitResult> {
    const r = await this.call('a transaction', () => this.rawCommit(compares, ops));
    if (r.ok) {
      this.published.note(ops);
    }
    return r;
  }

  async delete(key: string): Promise<boolean> {
    return this.call(`deleting ${key}`, async () => {
      const r = await this.client.kv.deleteRange({ key: Buffer.from(key) });
      this.published.forget(key);
      return Number(r.deleted) > 0;
    });
  }

  watch(prefix: string, opts: WatchOptions = {}): Watch {
    if (this.closed) throw new TnetError('internal', `the global store client for ${this.endpoint} is closed`, { object: this.endpoint });
    const q = new WatchQueue();
    let closed = false;
    let watcher: Watcher | undefined;
    let rev = opts.afterRevision ?? 0;

    /** Lists until etcd answers (or the watch is closed), then hands the consumer the full list. */
    const resync = async (reason: string) => {
      for (let delay = 100; !closed; delay = Math.min(delay * 2, 1000)) {
        try {
          const l = await this.rawList(prefix);
          rev = l.revision;
          q.push({ type: 'resync', items: l.items, revision: l.revision, reason });
          return;
        } catch (e) {
          log.debug({ err: e, prefix }, 'watch re-list failed; retrying');
          await sleep(delay);
        }
      }
    };

    const start = async (needList: boolean, reason: string): Promise<void> => {
      if (needList) await resync(reason);
      if (closed) return;
      const w = this.client.watch().prefix(prefix).startRevision(String(rev + 1)).watcher();
      watcher = w;
      w.on('put', (kv) => {
        const e: WatchEvent = { type: 'put', kv: toKv(kv as RawKv), revision: Number(kv.mod_revision) };
        rev = e.revision;
        q.push(e);
      });
      w.on('delete', (kv) => {
        const e: WatchEvent = { type: 'delete', key: kv.key.toString(), revision: Number(kv.mod_revision) };
        rev = e.revision;
        q.push(e);
      });
      w.on('data', (res) => {
        // A response's header revision is the store's: nothing under the prefix changed up to it.
        const r = Number(res.header?.revision ?? 0);
        if (r > rev && res.events.length === 0) rev = r;
      });
      w.on('error', (err) => {
        // Compacted past our revision (or cancelled by etcd): the changes in between are gone, so
        // re-list and replace; a plain disconnect is not an error here (etcd3 resumes by itself).
        log.info({ err: err.message, prefix, revision: rev }, 'watch cancelled by etcd: re-listing');
        if (watcher === w) watcher = undefined;
        void w.cancel().catch(() => undefined);
        if (!closed) void start(true, `watch cancelled at revision ${rev}: ${err.message}`);
      });
    };
    void start(opts.afterRevision === undefined, 'start');

    const watches = this.watches;
    const w: Watch = {
      [Symbol.asyncIterator]: () => q[Symbol.asyncIterator](),
      onEvent: (fn) => q.onEvent(fn),
      get revision() {
        return q.revision;
      },
      close: async () => {
        if (closed) return;
        closed = true;
        q.end();
        watches.delete(w);
        const cur = watcher;
        watcher = undefined;
        if (cur) await Promise.race([cur.cancel().catch(() => undefined), sleep(this.timeoutMs)]);
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
    if (opts.revoke !== false) {
      try {
        await this.client.leaseClient.leaseRevoke({ ID: this.lease }, { deadline: Date.now() + this.timeoutMs });
      } catch (e) {
        log.warn({ err: (e as Error).message, store: this.endpoint }, 'revoking the lease failed: its keys expire with the TTL');
      }
    }
    this.closed = true;
    this.listeners.clear();
    this.client.close();
  }
}
