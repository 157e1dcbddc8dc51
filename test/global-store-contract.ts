/**
 * The GlobalStore contract: the same cases run against the in-memory store (test/unit, vitest)
 * and against a real etcd with TLS client authentication (test/integration, tap). Each case
 * opens its own clients ("hosts"), closes them, and leaves no key behind (checked by `clean`).
 * Assertions are node:assert, so a failing case throws in either runner.
 */
import assert from 'node:assert/strict';
import { isTnetError } from '../libnetwork/errors.js';
import { GLOBAL_PREFIX, GlobalAllocator, GlobalNetworks, KEYS } from '../libnetwork/ipam/global.js';
import type { GlobalStore, WatchEvent } from '../libnetwork/store/global.js';
import { type PeerEvent, PeerTable } from '../libnetwork/store/peers.js';

export interface ContractEnv {
  /** A new client: one "host" of the cluster. */
  open(opts?: { ttl?: number }): Promise<GlobalStore>;
  /** The lease TTL the env's clients use, in seconds. */
  readonly ttl: number;
  /** Compacts the store's history up to its current revision. */
  compact(): Promise<void>;
  /** Stops the store (an outage) and starts it again; absent: the case is skipped. */
  readonly outage?: { stop(): Promise<void>; start(): Promise<void> };
}

export interface ContractCase {
  readonly name: string;
  run(env: ContractEnv): Promise<void>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits for the next event matching `pred` from an iterator, failing after `ms`. */
async function next<T>(it: AsyncIterator<T>, pred: (e: T) => boolean, ms: number, what: string): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const left = end - Date.now();
    if (left <= 0) assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    const r = await Promise.race([it.next(), sleep(left).then(() => 'timeout' as const)]);
    if (r === 'timeout') assert.fail(`timed out after ${ms} ms waiting for ${what}`);
    if (r.done) assert.fail(`the watch ended while waiting for ${what}`);
    if (pred(r.value)) return r.value;
  }
}

/** Nothing tnet wrote is left in the store (the pools guard, a fixed marker, aside). */
export async function clean(s: GlobalStore): Promise<void> {
  const left = (await s.list(GLOBAL_PREFIX)).items.map((kv) => kv.key).filter((k) => k !== KEYS.poolsGuard);
  const test = (await s.list('/test/')).items.map((kv) => kv.key);
  assert.deepEqual([...left, ...test], [], 'no key is left in the store');
}

async function withStores<T>(env: ContractEnv, n: number, fn: (s: GlobalStore[]) => Promise<T>): Promise<T> {
  const stores: GlobalStore[] = [];
  try {
    for (let i = 0; i < n; i++) stores.push(await env.open());
    return await fn(stores);
  } finally {
    for (const s of stores) await s.close();
  }
}

export const CASES: ContractCase[] = [
  {
    name: 'create-if-absent: of two hosts creating one key, exactly one wins and its value stays',
    run: (env) =>
      withStores(env, 2, async ([a, b]) => {
        const wins = await Promise.all([a!.create('/test/k', 'a'), b!.create('/test/k', 'b')]);
        assert.equal(wins.filter(Boolean).length, 1);
        const kv = await a!.get('/test/k');
        assert.equal(kv?.value, wins[0] ? 'a' : 'b');
        assert.equal(await b!.create('/test/k', 'again'), false);
        assert.equal(await a!.delete('/test/k'), true);
        assert.equal(await a!.delete('/test/k'), false);
        await clean(a!);
      }),
  },
  {
    name: 'compare-and-swap: a stale modRevision loses, the current one wins',
    run: (env) =>
      withStores(env, 1, async ([s]) => {
        await s!.put('/test/cas', '1');
        const v1 = (await s!.get('/test/cas'))!;
        assert.equal(await s!.swap('/test/cas', v1.modRevision, '2'), true);
        assert.equal(await s!.swap('/test/cas', v1.modRevision, '3'), false, 'stale revision refused');
        const v2 = (await s!.get('/test/cas'))!;
        assert.equal(v2.value, '2');
        assert.ok(v2.modRevision > v1.modRevision);
        assert.equal(v2.createRevision, v1.createRevision);
        const r = await s!.commit([{ key: '/test/cas', modRevision: v2.modRevision }, { key: '/test/other', absent: true }], [{ delete: '/test/cas' }]);
        assert.equal(r.ok, true);
        await clean(s!);
      }),
  },
  {
    name: 'list and watch: a resync first, then every change in order; afterRevision resumes exactly',
    run: (env) =>
      withStores(env, 2, async ([a, b]) => {
        await a!.put('/test/w/1', 'one');
        const w = b!.watch('/test/w/');
        const it = w[Symbol.asyncIterator]();
        const first = await next(it, () => true, 5000, 'the initial resync');
        assert.equal(first.type, 'resync');
        assert.deepEqual(first.type === 'resync' && first.items.map((kv) => [kv.key, kv.value]), [['/test/w/1', 'one']]);
        await a!.put('/test/w/2', 'two');
        await a!.put('/test/x', 'outside the prefix');
        await a!.delete('/test/w/1');
        const e2 = await next(it, () => true, 5000, 'put /test/w/2');
        assert.equal(e2.type === 'put' && e2.kv.key, '/test/w/2');
        const e3 = await next(it, () => true, 5000, 'delete /test/w/1');
        assert.equal(e3.type === 'delete' && e3.key, '/test/w/1');
        await w.close();
        // Resume from a listing's revision: exactly the changes after it.
        const l = await a!.list('/test/w/');
        assert.deepEqual(l.items.map((kv) => kv.key), ['/test/w/2']);
        await a!.put('/test/w/3', 'three');
        const w2 = b!.watch('/test/w/', { afterRevision: l.revision });
        const got: WatchEvent[] = [];
        w2.onEvent((e) => got.push(e));
        const end = Date.now() + 5000;
        while (got.length < 1 && Date.now() < end) await sleep(20);
        assert.deepEqual(got.map((e) => e.type === 'put' && e.kv.key), ['/test/w/3']);
        await w2.close();
        await a!.commit([], [{ deletePrefix: '/test/' }]);
        await clean(a!);
      }),
  },
  {
    name: 'compaction past the watch revision: a resync with the full list, nothing lost',
    run: (env) =>
      withStores(env, 1, async ([s]) => {
        await s!.put('/test/c/a', '1');
        const from = (await s!.list('/test/c/')).revision;
        await s!.put('/test/c/b', '2');
        await s!.delete('/test/c/a');
        await s!.put('/test/c/c', '3');
        await env.compact();
        const w = s!.watch('/test/c/', { afterRevision: from });
        const it = w[Symbol.asyncIterator]();
        const e = await next(it, () => true, 10_000, 'the resync after compaction');
        assert.equal(e.type, 'resync');
        assert.deepEqual(e.type === 'resync' && e.items.map((kv) => kv.key), ['/test/c/b', '/test/c/c']);
        await s!.put('/test/c/d', '4');
        const after = await next(it, () => true, 5000, 'a put after the resync');
        assert.equal(after.type === 'put' && after.kv.key, '/test/c/d');
        await w.close();
        await s!.commit([], [{ deletePrefix: '/test/' }]);
        await clean(s!);
      }),
  },
  {
    name: 'a host closed without revoking: its leased keys vanish from a watcher within TTL + 1 s',
    run: async (env) => {
      const dead = await env.open();
      const peer = await env.open();
      try {
        await dead.put('/test/l/dead', 'x', { leased: true });
        await dead.put('/test/l/durable', 'y');
        const w = peer.watch('/test/l/');
        const it = w[Symbol.asyncIterator]();
        const start = await next(it, () => true, 5000, 'the initial resync');
        assert.equal(start.type === 'resync' && start.items.length, 2);
        await dead.close({ revoke: false });
        const t0 = Date.now();
        const gone = await next(it, (e) => e.type === 'delete', (env.ttl + 3) * 1000, 'the leased key to expire');
        const ms = Date.now() - t0;
        assert.equal(gone.type === 'delete' && gone.key, '/test/l/dead');
        assert.ok(ms <= (env.ttl + 1) * 1000, `expired after ${ms} ms, TTL ${env.ttl} s`);
        assert.equal((await peer.get('/test/l/durable'))?.value, 'y', 'an unleased key stays');
        await w.close();
        await peer.delete('/test/l/durable');
        await clean(peer);
      } finally {
        await dead.close();
        await peer.close();
      }
    },
  },
  {
    name: 'close() revokes the lease: leased keys go at once; a live host keeps its keys past the TTL',
    run: async (env) => {
      const a = await env.open();
      const b = await env.open();
      try {
        await a.put('/test/r/a', 'x', { leased: true });
        await b.put('/test/r/b', 'y', { leased: true });
        await a.close();
        assert.equal(await b.get('/test/r/a'), undefined);
        await sleep((env.ttl + 1) * 1000);
        assert.equal((await b.get('/test/r/b'))?.value, 'y', 'kept alive past its TTL');
        await b.close();
        const c = await env.open();
        assert.equal(await c.get('/test/r/b'), undefined);
        await clean(c);
        await c.close();
      } finally {
        await a.close();
        await b.close();
      }
    },
  },
  {
    name: 'store outage: operations fail unavailable naming the endpoint; the watch resumes without losing a write',
    run: async (env) => {
      if (!env.outage) return;
      const a = await env.open();
      const b = await env.open();
      try {
        await a.put('/test/o/before', '1', { leased: true });
        const w = b.watch('/test/o/');
        const it = w[Symbol.asyncIterator]();
        await next(it, (e) => e.type === 'resync', 5000, 'the initial resync');
        await env.outage.stop();
        const err = await a.get('/test/o/before').then(
          () => undefined,
          (e: unknown) => e,
        );
        assert.ok(isTnetError(err, 'unavailable'), `expected unavailable, got ${String(err)}`);
        assert.ok((err as Error).message.includes(a.endpoint), `the error names ${a.endpoint}: ${(err as Error).message}`);
        await env.outage.start();
        // Written right after the restart: the watch must deliver it.
        for (let i = 0; ; i++) {
          try {
            await a.put('/test/o/after', '2');
            break;
          } catch (e) {
            if (i > 100) throw e;
            await sleep(100);
          }
        }
        const got = await next(it, (e) => (e.type === 'put' && e.kv.key === '/test/o/after') || (e.type === 'resync' && e.items.some((kv) => kv.key === '/test/o/after')), 15_000, 'the write made after the restart');
        // Nothing was compacted, so the watch resumes where it was: the write comes as a put, not a re-list.
        assert.equal(got.type, 'put', `resumed, not re-listed: ${JSON.stringify(got)}`);
        assert.equal((await a.get('/test/o/before'))?.value, '1', 'the lease survived the outage');
        await w.close();
        await a.commit([], [{ deletePrefix: '/test/' }]);
        await clean(a);
      } finally {
        await a.close();
        await b.close();
      }
    },
  },
  {
    name: 'networks: concurrent creates of one name from two hosts, exactly one wins; VNIs and subnets unique',
    run: (env) =>
      withStores(env, 2, async ([a, b]) => {
        const na = new GlobalNetworks(a!, new GlobalAllocator(a!));
        const nb = new GlobalNetworks(b!, new GlobalAllocator(b!));
        const r = await Promise.allSettled([na.create({ name: 'web', host: 'A' }), nb.create({ name: 'web', host: 'B' })]);
        assert.equal(r.filter((x) => x.status === 'fulfilled').length, 1, 'exactly one create of "web" wins');
        const lost = r.find((x) => x.status === 'rejected') as PromiseRejectedResult;
        assert.ok(isTnetError(lost.reason, 'conflict'), String(lost.reason));
        assert.match((lost.reason as Error).message, /network web already exists/);
        // Different names at once from both hosts: distinct VNIs and disjoint subnets.
        const names = ['n1', 'n2', 'n3', 'n4', 'n5', 'n6'];
        const made = await Promise.all(names.map((name, i) => (i % 2 ? na : nb).create({ name, host: i % 2 ? 'A' : 'B' })));
        const all = [...made, (await na.get('web'))!];
        assert.equal(new Set(all.map((n) => n.vni)).size, all.length, 'VNIs are unique');
        assert.ok(all.every((n) => n.vni >= 4096 && n.vni < 2 ** 24));
        assert.equal(new Set(all.map((n) => n.pools[0]!.subnet)).size, all.length, 'subnets are unique');
        // Explicit VNI: honoured, and refused when taken.
        const v = await na.create({ name: 'explicit', vni: 70000, host: 'A', pools: [{ subnet: '10.200.0.0/24' }] });
        assert.equal(v.vni, 70000);
        await assert.rejects(nb.create({ name: 'again', vni: 70000, host: 'B' }), (e) => isTnetError(e, 'conflict') && /vni 70000 is already used by network explicit/.test(e.message));
        await assert.rejects(nb.create({ name: 'overlap', host: 'B', pools: [{ subnet: '10.200.0.128/25' }] }), (e) => isTnetError(e, 'conflict') && /overlaps 10.200.0.0\/24/.test(e.message));
        await assert.rejects(nb.create({ name: 'badvni', vni: 12, host: 'B' }), (e) => isTnetError(e, 'invalid-argument'));
        assert.equal((await nb.list()).length, all.length + 1);
        for (const n of [...all, v]) await (n.name.length % 2 ? na : nb).delete(n.name);
        await assert.rejects(na.delete('web'), (e) => isTnetError(e, 'not-found'));
        await clean(a!);
      }),
  },
  {
    name: 'addresses: 2 hosts x 100 parallel allocations in one pool, no duplicates; release; static refused when taken',
    run: (env) =>
      withStores(env, 2, async ([a, b]) => {
        const ia = new GlobalAllocator(a!);
        const ib = new GlobalAllocator(b!);
        const pool = await ia.requestPool({ subnet: '10.77.0.0/23', owner: 'net' });
        assert.equal(pool.gateway?.toString(), '10.77.0.1');
        const got = await Promise.all([
          ...Array.from({ length: 100 }, (_, i) => ia.requestAddress(pool.id, { owner: `a${i}` })),
          ...Array.from({ length: 100 }, (_, i) => ib.requestAddress(pool.id, { owner: `b${i}` })),
        ]);
        const texts = got.map((x) => x.toString());
        assert.equal(new Set(texts).size, 200, 'no address handed out twice');
        assert.ok(!texts.includes('10.77.0.1') && !texts.includes('10.77.0.0'), 'neither the gateway nor the network address');
        const listed = await ib.listAddresses(pool.id);
        assert.equal(listed.length, 201, '200 + the gateway');
        assert.equal(listed.filter((x) => x.kind === 'dynamic').length, 200);
        // A static address taken by another host is refused, a free one is given.
        await assert.rejects(ib.requestAddress(pool.id, { address: texts[0]! }), (e) => isTnetError(e, 'conflict'));
        const st = await ib.requestAddress(pool.id, { address: '10.77.1.200', owner: 's' });
        assert.equal(st.toString(), '10.77.1.200');
        // Release on one host. The other may not have listed the pool since (an allocator lists it
        // only when it loses a race or looks full): it gets the released address or another free
        // one, never a taken one.
        await ia.releaseAddress(pool.id, texts[0]!);
        await assert.rejects(ia.releaseAddress(pool.id, texts[0]!), (e) => isTnetError(e, 'not-found'));
        const other = (await ib.requestAddress(pool.id, { owner: 'other' })).toString();
        assert.ok(!texts.slice(1).includes(other) && other !== '10.77.1.200' && other !== '10.77.0.1', `host b got a free address (${other})`);
        await ib.releaseAddress(pool.id, other);
        // The releasing host knows: every address below .202 was taken, so the released one is its lowest free.
        assert.equal((await ia.requestAddress(pool.id, { owner: 'again' })).toString(), texts[0]);
        assert.equal(await ia.releaseOwned('s'), 1);
        // Across a "restart": a new client sees the same allocations.
        const c = await env.open();
        try {
          const ic = new GlobalAllocator(c);
          assert.equal((await ic.getPool(pool.id)).subnet.toString(), '10.77.0.0/23');
          assert.equal((await ic.listAddresses(pool.id)).length, listed.length, "the same 201 allocations");
        } finally {
          await c.close();
        }
        assert.equal(await ia.releasePool(pool.id), 0);
        await assert.rejects(ia.getPool(pool.id), (e) => isTnetError(e, 'not-found'));
        await clean(a!);
      }),
  },
  {
    name: 'peers: a duplicate VTEP is refused; remote peers come and go, a dead host\'s expire; delete is refused while peers exist',
    run: async (env) => {
      const a = await env.open();
      const b = await env.open();
      try {
        const pa = new PeerTable(a, 'host-a');
        const pb = new PeerTable(b, 'host-b');
        await pa.publishVtep('192.0.2.1');
        await assert.rejects(pb.publishVtep('192.0.2.1'), (e) => isTnetError(e, 'conflict') && /already advertised by host host-a/.test(e.message));
        await pb.publishVtep('192.0.2.2');
        await pa.publishVtep('192.0.2.1'); // the same host again (a restart): accepted
        assert.deepEqual((await pb.hosts()).map((h) => h.host).sort(), ['host-a', 'host-b']);
        const nets = new GlobalNetworks(a, new GlobalAllocator(a));
        await nets.create({ name: 'ov', host: 'host-a' });
        const w = pb.watchPeers('ov');
        const it = w[Symbol.asyncIterator]();
        const r0 = await next(it, () => true, 5000, 'the initial resync');
        assert.equal(r0.type === 'resync' && r0.peers.length, 0);
        await pb.publishPeer({ network: 'ov', endpointId: 'eb', ip: '10.0.0.3', mac: '02:00:00:00:00:03', name: 'b1' });
        await pa.publishPeer({ network: 'ov', endpointId: 'ea', ip: '10.0.0.2', mac: '02:00:00:00:00:02', name: 'a1', aliases: ['web'] });
        const add = await next(it, () => true, 5000, 'the remote peer');
        assert.equal(add.type, 'add', 'own peers are not reported, the remote one is');
        assert.deepEqual(add.type === 'add' && [add.peer.ip, add.peer.vtep, add.peer.host, add.peer.name], ['10.0.0.2', '192.0.2.1', 'host-a', 'a1']);
        await assert.rejects(nets.delete('ov'), (e) => isTnetError(e, 'busy') && /host-a/.test(e.message));
        // host-a dies (no revoke): its peer is withdrawn from host-b's watch within TTL + 1 s.
        await a.close({ revoke: false });
        const t0 = Date.now();
        const rm = await next(it, (e: PeerEvent) => e.type === 'remove', (env.ttl + 3) * 1000, 'the dead host\'s peer to be withdrawn');
        assert.ok(Date.now() - t0 <= (env.ttl + 1) * 1000, `withdrawn after ${Date.now() - t0} ms`);
        assert.equal(rm.type === 'remove' && rm.peer.endpointId, 'ea');
        assert.deepEqual((await pb.hosts()).map((h) => h.host), ['host-b'], 'its VTEP record expired too');
        await pb.withdrawPeer('ov', 'eb');
        const netsB = new GlobalNetworks(b, new GlobalAllocator(b));
        await netsB.delete('ov');
        await w.close();
        await b.close();
        const c = await env.open();
        await clean(c);
        await c.close();
      } finally {
        await a.close();
        await b.close();
      }
    },
  },
  {
    name: 'a restarted host: takes its VTEP back, re-publishes what it has, withdraws what it lost; remote watchers see no removal of kept peers',
    run: async (env) => {
      const first = await env.open();
      const other = await env.open();
      let second: GlobalStore | undefined;
      try {
        const nets = new GlobalNetworks(other, new GlobalAllocator(other));
        const netWatch = nets.watch();
        const nit = netWatch[Symbol.asyncIterator]();
        await next(nit, (e) => e.type === 'resync', 5000, 'the networks resync');
        await nets.create({ name: 'rs', host: 'host-o' });
        const created = await next(nit, () => true, 5000, 'the network put');
        assert.equal(created.type === 'put' && created.kv.key, KEYS.network('rs'));
        const p1 = new PeerTable(first, 'host-r');
        await p1.publishVtep('192.0.2.7');
        await p1.publishPeer({ network: 'rs', endpointId: 'keep', ip: '10.0.0.2', mac: '02:00:00:00:00:02', name: 'k' });
        await p1.publishPeer({ network: 'rs', endpointId: 'gone', ip: '10.0.0.3', mac: '02:00:00:00:00:03', name: 'g' });
        const w = new PeerTable(other, 'host-o').watchPeers('rs');
        const it = w[Symbol.asyncIterator]();
        const r0 = await next(it, () => true, 5000, 'the initial resync');
        assert.equal(r0.type === 'resync' && r0.peers.length, 2);
        // The host "restarts": the old client dies without revoking, a new one starts at once.
        await first.close({ revoke: false });
        second = await env.open();
        const p2 = new PeerTable(second, 'host-r');
        await p2.publishVtep('192.0.2.7'); // its own old record: taken over, not refused
        assert.deepEqual((await p2.ownPeers()).map((p) => p.endpointId).sort(), ['gone', 'keep']);
        await p2.publishPeer({ network: 'rs', endpointId: 'keep', ip: '10.0.0.2', mac: '02:00:00:00:00:02', name: 'k' });
        const stale = await p2.withdrawStale(new Map([['rs', new Set(['keep'])]]));
        assert.deepEqual(stale.map((p) => p.endpointId), ['gone']);
        // Past the old lease's TTL: the remote watcher saw 'gone' leave and never 'keep'.
        const seen: PeerEvent[] = [];
        const end = Date.now() + (env.ttl + 1) * 1000;
        for (;;) {
          const left = end - Date.now();
          if (left <= 0) break;
          const r = await Promise.race([it.next(), sleep(left).then(() => undefined)]);
          if (!r || r.done) break;
          seen.push(r.value);
        }
        const removed = seen.filter((e) => e.type === 'remove').map((e) => e.type === 'remove' && e.peer.endpointId);
        assert.deepEqual(removed, ['gone'], `removals seen: ${JSON.stringify(seen)}`);
        assert.deepEqual(w.current().map((p) => p.endpointId), ['keep']);
        assert.deepEqual((await p2.peers('rs')).map((p) => p.endpointId), ['keep'], 'kept under the new lease');
        assert.deepEqual((await p2.hosts()).map((h) => h.host), ['host-r'], 'its VTEP record outlived the old lease');
        await w.close();
        await p2.withdrawStale(new Map());
        await nets.delete('rs');
        const del = await next(nit, (e) => e.type === 'delete', 5000, 'the network delete');
        assert.equal(del.type === 'delete' && del.key, KEYS.network('rs'));
        await netWatch.close();
        await second.close();
        await clean(other);
      } finally {
        await first.close();
        await second?.close();
        await other.close();
      }
    },
  },
];
