/**
 * The overlay peer table on the global store: each host's VTEP record and its endpoints' peer
 * records, all under the host's lease, so a host that dies is withdrawn everywhere when its lease
 * expires (libnetwork pre-swarm kept them forever: overlay.md section 3). An overlay driver
 * watches a network's peers and programs one static neighbour + FDB entry per remote endpoint.
 */
import { conflict, invalid } from '../errors.js';
import { KEYS } from '../ipam/global.js';
import type { GlobalStore, KeyValue, Watch } from './global.js';

/** One host's tunnel endpoint. */
export interface VtepRecord {
  readonly host: string;
  readonly vtep: string;
}

/** One endpoint as remote hosts need it: where to send its frames, and its names for DNS. */
export interface Peer {
  readonly network: string;
  readonly endpointId: string;
  readonly ip?: string;
  readonly ip6?: string;
  readonly mac: string;
  /** The VTEP address of the host the endpoint lives on. */
  readonly vtep: string;
  readonly host: string;
  readonly name: string;
  readonly aliases?: readonly string[];
}

export type PeerEvent =
  | { readonly type: 'add'; readonly peer: Peer }
  | { readonly type: 'remove'; readonly peer: Peer }
  /**
   * The watch re-listed (start, or after a compaction): `peers` is the whole remote table now;
   * `added` and `removed` are the difference from what this watch had delivered before.
   */
  | { readonly type: 'resync'; readonly peers: readonly Peer[]; readonly added: readonly Peer[]; readonly removed: readonly Peer[] };

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export class PeerTable {
  private vtep: string | undefined;

  constructor(
    readonly store: GlobalStore,
    /** This host's name: unique per host, kept across restarts (peers of the same host are its own). */
    readonly host: string,
  ) {}

  /**
   * Publishes this host's VTEP under its lease. Refused ('conflict') when another host advertises
   * the same address: two hosts on one VTEP would receive each other's tunnelled frames. The same
   * host restarting takes its record over (its old lease may not have expired yet).
   */
  async publishVtep(vtep: string): Promise<void> {
    const key = KEYS.host(vtep);
    const value = JSON.stringify({ host: this.host, vtep } satisfies VtepRecord);
    for (;;) {
      if (await this.store.create(key, value, { leased: true })) break;
      const cur = await this.store.get(key);
      if (!cur) continue; // expired in between
      const rec = JSON.parse(cur.value) as VtepRecord;
      if (rec.host !== this.host) {
        throw conflict(
          `VTEP address ${vtep} is already advertised by host ${rec.host}: give each host its own --advertise-addr`,
          `vtep "${vtep}"`,
        );
      }
      if (await this.store.swap(key, cur.modRevision, value, { leased: true })) break;
    }
    this.vtep = vtep;
  }

  /** Every host with a live VTEP record. */
  async hosts(): Promise<VtepRecord[]> {
    return (await this.store.list(KEYS.hosts)).items.map((kv) => JSON.parse(kv.value) as VtepRecord);
  }

  /** Publishes (or updates) a local endpoint's peer record under this host's lease. */
  async publishPeer(p: Omit<Peer, 'vtep' | 'host'>): Promise<Peer> {
    if (this.vtep === undefined) throw invalid('publish this host\'s VTEP before its endpoints', `endpoint "${p.endpointId}"`);
    if (!MAC.test(p.mac)) throw invalid(`endpoint ${p.endpointId}: MAC "${p.mac}" is not lower-case aa:bb:cc:dd:ee:ff`, `endpoint "${p.endpointId}"`);
    const peer: Peer = { ...p, vtep: this.vtep, host: this.host };
    await this.store.put(KEYS.peer(p.network, p.endpointId), JSON.stringify(peer), { leased: true });
    return peer;
  }

  async withdrawPeer(network: string, endpointId: string): Promise<void> {
    await this.store.delete(KEYS.peer(network, endpointId));
  }

  /**
   * This host's peer records in every network: after a restart, what the previous run published
   * (still there until its old lease expires, or re-published under the new one).
   */
  async ownPeers(): Promise<Peer[]> {
    return (await this.store.list(KEYS.allPeers)).items
      .map((kv) => JSON.parse(kv.value) as Peer)
      .filter((p) => p.host === this.host);
  }

  /**
   * Removes this host's peer records whose endpoint is not in `keep` (network -> endpoint ids):
   * a restarted daemon withdraws the endpoints it no longer has at once, instead of leaving remote
   * hosts to wait for the old lease. Returns the ones withdrawn.
   */
  async withdrawStale(keep: ReadonlyMap<string, ReadonlySet<string>>): Promise<Peer[]> {
    const stale = (await this.ownPeers()).filter((p) => !keep.get(p.network)?.has(p.endpointId));
    for (const p of stale) await this.withdrawPeer(p.network, p.endpointId);
    return stale;
  }

  /** The peers of a network now (every host's, this one's included). */
  async peers(network: string): Promise<Peer[]> {
    return (await this.store.list(KEYS.peers(network))).items.map((kv) => JSON.parse(kv.value) as Peer);
  }

  /**
   * The remote peers of a network (this host's own are left out): a 'resync' with the table
   * first, then add/remove as hosts connect, disconnect and die; a 'resync' again after etcd
   * compacted past the watch (with the difference, so a consumer never misses a removal).
   */
  watchPeers(network: string): PeerWatch {
    return new PeerWatch(this.store.watch(KEYS.peers(network)), this.host);
  }
}

export class PeerWatch implements AsyncIterable<PeerEvent> {
  /** The remote peers delivered so far, by key. */
  private readonly known = new Map<string, Peer>();

  constructor(
    private readonly inner: Watch,
    private readonly self: string,
  ) {}

  private remote(kv: KeyValue): Peer | undefined {
    const p = JSON.parse(kv.value) as Peer;
    return p.host === this.self ? undefined : p;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<PeerEvent> {
    for await (const e of this.inner) {
      if (e.type === 'put') {
        const p = this.remote(e.kv);
        if (!p) continue;
        this.known.set(e.kv.key, p);
        yield { type: 'add', peer: p };
      } else if (e.type === 'delete') {
        const p = this.known.get(e.key);
        if (!p) continue;
        this.known.delete(e.key);
        yield { type: 'remove', peer: p };
      } else {
        const now = new Map<string, Peer>();
        for (const kv of e.items) {
          const p = this.remote(kv);
          if (p) now.set(kv.key, p);
        }
        const added = [...now].filter(([k, p]) => JSON.stringify(this.known.get(k)) !== JSON.stringify(p)).map(([, p]) => p);
        const removed = [...this.known].filter(([k]) => !now.has(k)).map(([, p]) => p);
        this.known.clear();
        for (const [k, p] of now) this.known.set(k, p);
        yield { type: 'resync', peers: [...now.values()], added, removed };
      }
    }
  }

  /** The remote peers as this watch knows them now. */
  current(): Peer[] {
    return [...this.known.values()];
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
