/**
 * The GlobalStore contract (test/global-store-contract.ts) on the in-memory store, plus what only
 * the memory cluster can show quickly: a lost lease is renewed and this host's keys re-published.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { parseStoreUrl } from '../../libnetwork/store/etcd.js';
import { MemoryCluster, MemoryGlobalStore } from '../../libnetwork/store/memory-global.js';
import type { StoreEvent } from '../../libnetwork/store/global.js';
import { CASES, type ContractEnv } from '../global-store-contract.js';

const cluster = new MemoryCluster('memory://test');
afterAll(() => cluster.shutdown());
const TTL = 1;
const env: ContractEnv = {
  ttl: TTL,
  open: (opts) => MemoryGlobalStore.open(cluster, { ttl: opts?.ttl ?? TTL }),
  compact: async () => cluster.compact(),
  outage: { stop: async () => cluster.stop(), start: async () => cluster.start() },
};

describe('GlobalStore contract (memory)', () => {
  for (const c of CASES) it(c.name, () => c.run(env), 15_000);
});

describe('memory lease loss', () => {
  it('a host stalled past its TTL gets a new lease and its leased keys back; a key taken meanwhile is a conflict', async () => {
    const c = new MemoryCluster();
    const a = await MemoryGlobalStore.open(c, { ttl: 1 });
    const b = await MemoryGlobalStore.open(c, { ttl: 1 });
    const events: StoreEvent[] = [];
    a.onStoreEvent((e) => events.push(e));
    await a.put('/k/mine', '1', { leased: true });
    await a.put('/k/taken', 'a', { leased: true });
    const old = a.lease;
    // Simulate a stall: the cluster expires a's lease (keepalives stop reaching it).
    c.expireLease(old);
    await b.put('/k/taken', 'b');
    await new Promise((r) => setTimeout(r, 800));
    expect(events.map((e) => e.type)).toEqual(['lease-lost', 'lease-renewed']);
    const renewed = events[1] as Extract<StoreEvent, { type: 'lease-renewed' }>;
    expect(renewed.republished).toEqual(['/k/mine']);
    expect(renewed.conflicts).toEqual(['/k/taken']);
    expect(a.lease).not.toBe(old);
    expect((await b.get('/k/mine'))?.lease).toBe(a.lease);
    expect((await b.get('/k/taken'))?.value).toBe('b');
    await a.close();
    await b.close();
    c.shutdown();
  });
});

describe('parseStoreUrl', () => {
  it('accepts etcd:// and etcds:// host lists with credentials', () => {
    expect(parseStoreUrl('etcd://10.0.0.1:2379')).toEqual({ endpoint: 'etcd://10.0.0.1:2379', hosts: ['10.0.0.1:2379'], tls: false, username: undefined, password: undefined });
    const u = parseStoreUrl('etcds://root:s%3Acret@a.example:2379,[fd00::1]:2379/');
    expect(u.hosts).toEqual(['a.example:2379', '[fd00::1]:2379']);
    expect(u.tls).toBe(true);
    expect([u.username, u.password]).toEqual(['root', 's:cret']);
    expect(u.endpoint).toBe('etcds://a.example:2379,[fd00::1]:2379');
  });
  it.each([
    ['http://10.0.0.1:2379', /unsupported scheme "http"/],
    ['etcd://10.0.0.1', /"10.0.0.1" is not HOST:PORT/],
    ['etcd://10.0.0.1:99999', /port 99999/],
    ['etcd://', /no host/],
    ['10.0.0.1:2379', /not a URL/],
    ['etcd://u:pw@h:1/x', /no path/],
  ])('refuses %s', (url, re) => {
    expect(() => parseStoreUrl(url)).toThrow(re);
    try {
      parseStoreUrl(url);
    } catch (e) {
      expect((e as Error).message).not.toContain(':pw@');
      expect((e as { code: string }).code).toBe('invalid-argument');
    }
  });
});

describe('GlobalAllocator (memory)', () => {
  it('IPv6 pools from the global ULA, explicit ranges and aux addresses; local-only features refused', async () => {
    const { GlobalAllocator } = await import('../../libnetwork/ipam/global.js');
    const c = new MemoryCluster();
    const s = await MemoryGlobalStore.open(c, { ttl: 1 });
    const ipam = new GlobalAllocator(s);
    const p6 = await ipam.requestPool({ v6: true, owner: 'v6net' });
    expect(p6.subnet.toString()).toBe('fd7e:7e7e:7e00::/64');
    expect(p6.gateway?.toString()).toBe('fd7e:7e7e:7e00::1');
    expect((await ipam.requestAddress(p6.id)).toString()).toBe('fd7e:7e7e:7e00::2');
    const p4 = await ipam.requestPool({ subnet: '10.5.0.0/24', ipRange: '10.5.0.128/25', auxAddresses: { router: '10.5.0.2' } });
    expect((await ipam.requestAddress(p4.id)).toString()).toBe('10.5.0.128');
    expect((await ipam.listAddresses(p4.id)).map((a) => [a.address.toString(), a.kind])).toEqual([
      ['10.5.0.1', 'gateway'],
      ['10.5.0.2', 'aux'],
      ['10.5.0.128', 'dynamic'],
    ]);
    // A held address goes back to its owner only.
    await ipam.holdAddress(p4.id, '10.5.0.50', 'ctr1');
    await expect(ipam.requestAddress(p4.id, { address: '10.5.0.50', owner: 'ctr2' })).rejects.toMatchObject({ code: 'conflict' });
    expect((await ipam.requestAddress(p4.id, { address: '10.5.0.50', owner: 'ctr1' })).toString()).toBe('10.5.0.50');
    // The auto pool skips a pool made by hand and the host's routes to avoid.
    const { Subnet } = await import('../../libnetwork/ipam/subnet.js');
    const auto = await ipam.requestPool({ avoid: [Subnet.parse('10.0.0.0/23')] });
    expect(auto.subnet.toString()).toBe('10.0.2.0/24');
    await expect(ipam.requestPool({ shared: true })).rejects.toMatchObject({ code: 'invalid-argument' });
    await expect(ipam.requestPool({ childrenOnly: true })).rejects.toMatchObject({ code: 'invalid-argument' });
    await expect(ipam.requestPool({ subnet: '10.5.0.0/16' })).rejects.toMatchObject({ code: 'conflict', message: /overlaps 10.5.0.0\/24/ });
    await expect(ipam.requestAddress(p4.id, { address: '10.6.0.1' })).rejects.toMatchObject({ code: 'invalid-argument' });
    expect((await ipam.listPools()).map((p) => p.subnet.toString())).toEqual(['fd7e:7e7e:7e00::/64', '10.5.0.0/24', '10.0.2.0/24']);
    for (const p of await ipam.listPools()) await ipam.releasePool(p.id);
    await expect(ipam.requestAddress(p4.id)).rejects.toMatchObject({ code: 'not-found' });
    await s.close();
    c.shutdown();
  });

  it('a consumer that stops iterating closes its watch', async () => {
    const c = new MemoryCluster();
    const s = await MemoryGlobalStore.open(c, { ttl: 1 });
    const w = s.watch('/x/');
    for await (const e of w) {
      expect(e.type).toBe('resync');
      break;
    }
    const it = w[Symbol.asyncIterator]();
    await s.put('/x/a', '1');
    expect(await it.next()).toEqual({ value: undefined, done: true });
    await s.close();
    c.shutdown();
  });
});
