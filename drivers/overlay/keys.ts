/**
 * The cluster's key ring for encrypted overlay networks, kept in the global store and shared by
 * every host: swarmkit's keymanager without a manager. Three keys (AES-128: 16 random bytes, plus
 * the 4-byte salt rfc4106 GCM takes), each with a tag that only grows (a Lamport-like counter:
 * a new key's tag is the ring's highest + 1).
 *
 * The primary key (the one hosts send with) is the key at index 1 of the tag-sorted ring, not the
 * newest (libnetwork agent.go getPrimaryKeyTag): a rotation adds a key everyone installs for
 * receiving first, and it becomes the primary only one rotation later, so no host ever sends with
 * a key a peer cannot yet decrypt.
 *
 * One etcd key holds the whole ring, so every change is one compare-and-swap:
 * - the first host creates it (create-if-absent: two hosts at once end with one ring, the loser
 *   reads the winner's);
 * - rotate() drops the oldest key and adds a new one, by CAS on the ring's modRevision; when
 *   another host rotated first, its rotation stands and this one is not applied (hosts whose
 *   timers fire together rotate once);
 * - watch() tells every host about a rotation, and resyncs after a reconnect or a compaction.
 *
 * The keys are readable by whoever can read the store: the store's TLS client authentication is
 * what guards them (swarmkit keeps them in its raft log the same way). Key material is never
 * logged: an EncryptionKey prints and serializes as its tag only.
 */
import { randomBytes } from 'node:crypto';
import { inspect } from 'node:util';
import { TnetError } from '../../libnetwork/errors.js';
import type { GlobalStore, KeyValue } from '../../libnetwork/store/global.js';

/** Where the ring lives (one key; under the global store's /tnet/v1/ like the other records). */
export const ENCRYPTION_KEYS = '/tnet/v1/encryption/keys';
/** Keys in the ring (swarmkit's keymanager keeps three). */
export const RING_SIZE = 3;
/** AES-128-GCM: 16 bytes of key, 4 of salt. */
export const KEY_BYTES = 16;
export const SALT_BYTES = 4;
/** swarmkit's DefaultKeyRotationInterval: rotate every 12 hours. */
export const DEFAULT_ROTATION_MS = 12 * 3600 * 1000;

/** One key of the ring. Prints and serializes as its tag only. */
export class EncryptionKey {
  readonly tag: number;
  readonly #key: Buffer;
  readonly #salt: Buffer;
  constructor(tag: number, key: Buffer, salt: Buffer) {
    this.tag = tag;
    this.#key = Buffer.from(key);
    this.#salt = Buffer.from(salt);
  }
  /** The AEAD key as rfc4106(gcm(aes)) takes it: key then salt (20 bytes). A copy. */
  aeadKey(): Buffer {
    return Buffer.concat([this.#key, this.#salt]);
  }
  /** For the store only (encode()). */
  material(): { key: Buffer; salt: Buffer } {
    return { key: Buffer.from(this.#key), salt: Buffer.from(this.#salt) };
  }
  toJSON(): { tag: number } {
    return { tag: this.tag };
  }
  toString(): string {
    return `key ${this.tag}`;
  }
  [inspect.custom](): string {
    return `EncryptionKey { tag: ${this.tag} }`;
  }
}

/** The ring as one host saw it: keys sorted by tag, and the store revision it was read at. */
export class KeyRing {
  readonly keys: readonly EncryptionKey[];
  constructor(
    keys: readonly EncryptionKey[],
    /** The ring's modRevision in the store: what a rotation compares. */
    readonly revision: number,
    /** When the ring was last rotated (or made), ms since the epoch. */
    readonly rotatedAt: number,
  ) {
    if (keys.length === 0) throw new TnetError('internal', 'an encryption key ring needs at least one key');
    this.keys = [...keys].sort((a, b) => a.tag - b.tag);
  }
  /** The key hosts send with: index 1 of the tag-sorted ring (index 0 while the ring has one key). */
  get primary(): EncryptionKey {
    return this.keys[Math.min(1, this.keys.length - 1)]!;
  }
  get tags(): number[] {
    return this.keys.map((k) => k.tag);
  }
  toJSON(): { tags: number[]; primary: number; revision: number } {
    return { tags: this.tags, primary: this.primary.tag, revision: this.revision };
  }
  [inspect.custom](): string {
    return `KeyRing { tags: [${this.tags.join(', ')}], primary: ${this.primary.tag}, revision: ${this.revision} }`;
  }
}

interface StoredRing {
  readonly version: 1;
  readonly rotatedAt: number;
  readonly keys: readonly { readonly tag: number; readonly key: string; readonly salt: string }[];
}

export function encodeRing(keys: readonly EncryptionKey[], rotatedAt: number): string {
  const stored: StoredRing = {
    version: 1,
    rotatedAt,
    keys: keys.map((k) => {
      const m = k.material();
      return { tag: k.tag, key: m.key.toString('base64'), salt: m.salt.toString('base64') };
    }),
  };
  return JSON.stringify(stored);
}

/** Reads a stored ring; a malformed one is named without its content (it holds keys). */
export function decodeRing(kv: KeyValue): KeyRing {
  const bad = (why: string) =>
    new TnetError('internal', `the encryption key ring at ${kv.key} (revision ${kv.modRevision}) is malformed: ${why}; delete it to have a new one made (encrypted networks then renegotiate)`, {
      object: kv.key,
    });
  let s: StoredRing;
  try {
    s = JSON.parse(kv.value) as StoredRing;
  } catch {
    throw bad('not JSON');
  }
  if (s?.version !== 1 || !Array.isArray(s.keys) || s.keys.length === 0) throw bad('no keys or an unknown version');
  const seen = new Set<number>();
  const keys = s.keys.map((k) => {
    if (!Number.isSafeInteger(k?.tag) || k.tag <= 0 || seen.has(k.tag)) throw bad('a tag is not a unique positive integer');
    seen.add(k.tag);
    const key = Buffer.from(String(k.key), 'base64');
    const salt = Buffer.from(String(k.salt), 'base64');
    if (key.length !== KEY_BYTES || salt.length !== SALT_BYTES) throw bad(`key ${k.tag} is not ${KEY_BYTES} bytes of key and ${SALT_BYTES} of salt`);
    return new EncryptionKey(k.tag, key, salt);
  });
  return new KeyRing(keys, kv.modRevision, Number.isFinite(s.rotatedAt) ? s.rotatedAt : 0);
}

/** What a rotation did: `rotated` false when another host's rotation came first (`ring` is then theirs). */
export interface Rotation {
  readonly ring: KeyRing;
  readonly rotated: boolean;
}

/** A running watch of the ring. */
export interface KeyWatch {
  close(): Promise<void>;
}

export class ClusterKeys {
  constructor(
    private readonly store: GlobalStore,
    private readonly opts: { readonly random?: (n: number) => Buffer; readonly now?: () => number } = {},
  ) {}

  private fresh(tag: number): EncryptionKey {
    const random = this.opts.random ?? randomBytes;
    return new EncryptionKey(tag, random(KEY_BYTES), random(SALT_BYTES));
  }

  private now(): number {
    return (this.opts.now ?? Date.now)();
  }

  /** The ring, or undefined when no host made one yet. */
  async get(): Promise<KeyRing | undefined> {
    const kv = await this.store.get(ENCRYPTION_KEYS);
    return kv ? decodeRing(kv) : undefined;
  }

  /** The ring, made now if absent (create-if-absent: of two hosts at once, one ring stands). */
  async ensure(): Promise<KeyRing> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const cur = await this.get();
      if (cur) return cur;
      const keys = Array.from({ length: RING_SIZE }, (_, i) => this.fresh(i + 1));
      const at = this.now();
      const r = await this.store.commit([{ key: ENCRYPTION_KEYS, absent: true }], [{ put: ENCRYPTION_KEYS, value: encodeRing(keys, at) }]);
      if (r.ok) return new KeyRing(keys, r.revision, at);
      // Another host made it first: read theirs (the loop; a delete in between makes one again).
    }
    throw new TnetError('unavailable', `the encryption key ring at ${ENCRYPTION_KEYS} keeps changing under this host (created and deleted); retry`, {
      object: ENCRYPTION_KEYS,
    });
  }

  /**
   * Drops the oldest key and adds one tagged above the newest, by CAS on `from` (default: the
   * ring as it is now). The old primary's successor (index 1 of the new ring) was already in
   * every host's ring, so hosts can switch to it as soon as they see the new ring.
   */
  async rotate(from?: KeyRing): Promise<Rotation> {
    const base = from ?? (await this.ensure());
    const kept = base.keys.length >= RING_SIZE ? base.keys.slice(base.keys.length - RING_SIZE + 1) : base.keys;
    const keys = [...kept, this.fresh(base.keys.at(-1)!.tag + 1)];
    const at = this.now();
    const r = await this.store.commit([{ key: ENCRYPTION_KEYS, modRevision: base.revision }], [{ put: ENCRYPTION_KEYS, value: encodeRing(keys, at) }]);
    if (r.ok) return { ring: new KeyRing(keys, r.revision, at), rotated: true };
    // Lost the CAS: another host rotated (or made the ring) since `base`. Theirs stands.
    return { ring: await this.ensure(), rotated: false };
  }

  /** Rotates when the ring is older than `maxAgeMs` (every host may call it on a timer: one rotation wins). */
  async rotateIfOlder(maxAgeMs = DEFAULT_ROTATION_MS): Promise<Rotation> {
    const ring = await this.ensure();
    if (this.now() - ring.rotatedAt < maxAgeMs) return { ring, rotated: false };
    return this.rotate(ring);
  }

  /**
   * Calls `onChange` with the ring now and after every change made by any host, once per
   * revision (a resync after a reconnect or a compaction repeats nothing already delivered). A
   * missing ring (none yet, or deleted) is made (ensure), which arrives here as a change. `onError` hears about a
   * malformed ring or a failed re-creation; the watch goes on.
   */
  watch(onChange: (ring: KeyRing) => void, onError: (e: unknown) => void = () => undefined): KeyWatch {
    const w = this.store.watch(ENCRYPTION_KEYS);
    let delivered = 0;
    const deliver = (kv: KeyValue) => {
      if (kv.modRevision <= delivered) return;
      let ring: KeyRing;
      try {
        ring = decodeRing(kv);
      } catch (e) {
        return onError(e);
      }
      delivered = kv.modRevision;
      onChange(ring);
    };
    const remake = () => void this.ensure().catch(onError);
    w.onEvent((e) => {
      if (e.type === 'resync') {
        const kv = e.items.find((i) => i.key === ENCRYPTION_KEYS);
        if (kv) deliver(kv);
        else remake();
      } else if (e.type === 'put') {
        if (e.kv.key === ENCRYPTION_KEYS) deliver(e.kv);
      } else if (e.key === ENCRYPTION_KEYS) remake();
    });
    return { close: () => w.close() };
  }
}
