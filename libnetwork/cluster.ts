/**
 * The cluster: what this host shares with every other tnet daemon pointed at the same global
 * store (etcd), and how the core follows it. Global-scope networks (overlay) live in the store;
 * each host mirrors them into its local state, so every verb, view and the reconcile treat them
 * like local networks, and each host follows the peer table of the networks it mirrors: remote
 * endpoints go to the driver (a static neighbour + FDB entry each) and to the DNS (their names).
 *
 * Following the store never blocks the local host: the data plane is the kernel's, so an etcd
 * outage changes nothing already programmed; the watches resume where they were (or re-list
 * after a compaction) and the driver is handed the difference.
 */
import { hostname } from 'node:os';
import type { Core } from './core.js';
import type { IpAddr } from './ipam/address.js';
import { GlobalAllocator, type GlobalNetwork, GlobalNetworks } from './ipam/global.js';
import { log } from './log.js';
import type { Endpoint, Network } from './model.js';
import type { GlobalStore, Watch } from './store/global.js';
import { type Peer, type PeerEvent, PeerTable, type PeerWatch } from './store/peers.js';

export type { Peer } from './store/peers.js';

/** How long a failed re-list of the global networks waits before it is tried again. */
const RESYNC_RETRY_MS = 2000;

/** This host in the cluster: the store, its identity and VTEP, and the global tables. */
export class Cluster {
  readonly ipam: GlobalAllocator;
  readonly networks: GlobalNetworks;
  readonly peers: PeerTable;

  private constructor(
    readonly store: GlobalStore,
    /** `HOSTNAME/INSTANCE`: unique per host (several simulated hosts share a hostname), the same after a restart. */
    readonly host: string,
    readonly vtep: IpAddr,
  ) {
    this.ipam = new GlobalAllocator(store);
    this.networks = new GlobalNetworks(store, this.ipam);
    this.peers = new PeerTable(store, host);
  }

  /**
   * Joins: publishes this host's VTEP under its lease. Refused ('conflict') when another live
   * host advertises the same address.
   */
  static async join(store: GlobalStore, opts: { instance: string; vtep: IpAddr }): Promise<Cluster> {
    const c = new Cluster(store, `${hostname()}/${opts.instance.slice(0, 12)}`, opts.vtep);
    await c.peers.publishVtep(opts.vtep.toString());
    return c;
  }
}

/** Who an address of the cluster's is allocated to: `HOST:ENDPOINT-ID`, so its host can find it again. */
export const addressOwner = (c: Cluster, endpointId: string) => `${c.host}:${endpointId}`;

/** The peer record of a local endpoint. */
export function peerOf(net: Network, ep: Endpoint): Omit<Peer, 'vtep' | 'host'> {
  return {
    network: net.name,
    endpointId: ep.id,
    ...(ep.ipv4 ? { ip: ep.ipv4.toString() } : {}),
    ...(ep.ipv6 ? { ip6: ep.ipv6.toString() } : {}),
    mac: ep.mac,
    name: ep.name,
    aliases: ep.aliases,
  };
}

/**
 * Follows the cluster for one controller: mirrors the global networks into the local state
 * (`mirror`/`unmirror`, given by the network module) and, per mirrored network, its remote
 * peers into the driver and the controller's 'peer' events.
 */
export class ClusterSync {
  private networksWatch: Watch | undefined;
  private readonly peerWatches = new Map<string, PeerWatch>();
  private closed = false;
  /** Settles when the first listing of networks has been mirrored (and every watch has had its first resync). */
  readonly ready: Promise<void>;
  private markReady!: () => void;

  constructor(
    private readonly core: Core,
    private readonly cluster: Cluster,
    private readonly mirror: {
      add(g: GlobalNetwork): Promise<Network | undefined>;
      remove(name: string): Promise<void>;
    },
  ) {
    this.ready = new Promise((r) => (this.markReady = r));
  }

  /** Starts following; `ready` settles once the store's networks are mirrored here. */
  start(): void {
    const w = this.cluster.networks.watch();
    this.networksWatch = w;
    void (async () => {
      for await (const e of w) {
        if (this.closed) break;
        try {
          if (e.type === 'resync') await this.resync(e.items.map((kv) => JSON.parse(kv.value) as GlobalNetwork));
          else if (e.type === 'put') await this.adopt(JSON.parse(e.kv.value) as GlobalNetwork);
          else await this.remove(e.key.slice(e.key.lastIndexOf('/') + 1));
        } catch (err) {
          log.error({ err }, 'cluster: a global network could not be mirrored on this host');
          // A re-list left half done (the store went away in the middle): done again from a
          // fresh listing once it answers, so no stale record or missing mirror is left for long.
          if (e.type === 'resync') this.retryResync();
        }
        if (e.type === 'resync') this.markReady();
      }
    })();
  }

  private retrying = false;

  private retryResync(): void {
    if (this.retrying || this.closed) return;
    this.retrying = true;
    setTimeout(() => {
      void (async () => {
        try {
          await this.resync(await this.cluster.networks.list());
          this.retrying = false;
        } catch (err) {
          log.warn({ err: (err as Error).message }, 'cluster: re-listing the global networks failed; trying again');
          this.retrying = false;
          this.retryResync();
        }
      })();
    }, RESYNC_RETRY_MS).unref();
  }

  private async resync(all: readonly GlobalNetwork[]): Promise<void> {
    const names = new Set(all.map((g) => g.name));
    for (const net of this.core.state.networks()) {
      if (this.core.isGlobal(net) && net.owner === '' && !names.has(net.name)) await this.remove(net.name);
    }
    for (const g of all) await this.adopt(g);
    await this.republish();
  }

  /** Mirrors a global network here and follows its peers (the watch's put, or this host's own create). */
  async adopt(g: GlobalNetwork): Promise<Network | undefined> {
    const net = await this.mirror.add(g);
    if (net && !this.peerWatches.has(net.name)) this.follow(net);
    return net;
  }

  private async remove(name: string): Promise<void> {
    await this.unfollow(name);
    await this.mirror.remove(name);
  }

  /** Stops following a network's peers (it is gone from this host). */
  async unfollow(name: string): Promise<void> {
    const w = this.peerWatches.get(name);
    this.peerWatches.delete(name);
    await w?.close();
  }

  /** The remote peers of `net`, into its driver and the 'peer' events, in the store's order. */
  private follow(net: Network): void {
    const w = this.cluster.peers.watchPeers(net.name);
    this.peerWatches.set(net.name, w);
    void (async () => {
      for await (const e of w) {
        if (this.closed) break;
        const cur = this.core.state.findNetwork(net.name, '');
        if (!cur || cur.id !== net.id) break; // gone from this host
        await this.apply(cur, e).catch((err: unknown) =>
          log.error({ err, network: net.name }, 'cluster: remote endpoints could not be programmed'),
        );
      }
    })();
  }

  private async apply(net: Network, e: PeerEvent): Promise<void> {
    const d = this.core.driver(net.driver);
    if (e.type === 'resync') {
      await d.setPeers?.(net, e.peers);
      for (const p of e.removed) this.core.events.emit('peer', 'down', p, net);
      for (const p of e.peers) this.core.events.emit('peer', 'up', p, net);
    } else if (e.type === 'add') {
      await d.addPeer?.(net, e.peer);
      this.core.events.emit('peer', 'up', e.peer, net);
    } else {
      await d.removePeer?.(net, e.peer);
      this.core.events.emit('peer', 'down', e.peer, net);
    }
  }

  /** The remote peers this host knows of a network now (views, DNS at start). */
  remotePeers(name: string): Peer[] {
    return this.peerWatches.get(name)?.current() ?? [];
  }

  /**
   * This host's endpoints on global networks, published again under this run's lease, and the
   * records of endpoints it no longer has withdrawn at once (a restart, or a return after an
   * outage), instead of leaving the other hosts to wait for the old lease.
   */
  private async republish(): Promise<void> {
    const keep = new Map<string, Set<string>>();
    for (const net of this.core.state.networks()) {
      if (!this.core.isGlobal(net) || net.state !== 'ready') continue;
      const ids = new Set<string>();
      for (const ep of this.core.state.endpointsOfNetwork(net.id)) {
        if (ep.state !== 'ready') continue;
        ids.add(ep.id);
        await this.cluster.peers.publishPeer(peerOf(net, ep));
      }
      keep.set(net.name, ids);
    }
    const gone = await this.cluster.peers.withdrawStale(keep);
    if (gone.length) log.info({ withdrawn: gone.map((p) => `${p.network}/${p.name}`) }, 'cluster: withdrew the records of endpoints this host no longer has');
    await this.releaseLeftovers();
  }

  /**
   * Addresses this host allocated for endpoints it does not have: a connect interrupted before
   * its endpoint was recorded, or one undone while the store was unreachable. Only this host's
   * (the owner names it): another host's connect in flight is never touched.
   */
  private async releaseLeftovers(): Promise<void> {
    const mine = `${this.cluster.host}:`;
    for (const net of this.core.state.networks()) {
      if (!this.core.isGlobal(net)) continue;
      const live = new Set(this.core.state.endpointsOfNetwork(net.id).map((e) => e.id));
      for (const ip of [net.ipv4, net.ipv6]) {
        if (!ip) continue;
        for (const a of await this.cluster.ipam.listAddresses(ip.poolId).catch(() => [])) {
          if (!a.owner?.startsWith(mine) || live.has(a.owner.slice(mine.length))) continue;
          log.info({ network: net.name, address: a.address.toString() }, 'cluster: releasing an address this host allocated for an endpoint it does not have');
          await this.cluster.ipam.releaseAddress(ip.poolId, a.address.toString()).catch(() => undefined);
        }
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.networksWatch?.close();
    for (const w of this.peerWatches.values()) await w.close();
    this.peerWatches.clear();
  }
}
