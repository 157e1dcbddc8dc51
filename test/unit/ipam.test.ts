import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TnetError } from '../../libnetwork/errors.js';
import { Ipam, migrations } from '../../libnetwork/ipam/ipam.js';
import { Subnet } from '../../libnetwork/ipam/subnet.js';
import { refuse } from './refuse.js';
import { type Db, openDb } from '../../libnetwork/store/db.js';

let dir: string;
let db: Db;
let ipam: Ipam;

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tnet-ipam-'));
  db = openDb(dir);
  ipam = new Ipam(db, { ulaSeed: 'test-host' });
});

afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});


/** Everything observable about the IPAM state, to prove a refused request changed nothing. */
function snapshot(): string {
  return JSON.stringify(
    ipam.listPools().map((p) => ({ ...p, addresses: ipam.listAddresses(p.id) })),
    (_k, v) => (typeof v === 'bigint' ? v.toString() : typeof v === 'object' && v && 'family' in v && 'value' in v ? String(v) : v),
  );
}

const addrs = (poolId: string) => ipam.listAddresses(poolId).map((a) => a.address.toString());
const next = (poolId: string, owner?: string) =>
  ipam.requestAddress(poolId, owner === undefined ? {} : { owner }).toString();

describe('pools', () => {
  it('exports migrations prefixed ipam- and applies them once', () => {
    expect(migrations.length).toBeGreaterThan(0);
    for (const m of migrations) expect(m.id).toMatch(/^ipam-/);
    new Ipam(db); // a second instance on the same database does not re-apply
    const applied = db.prepare("SELECT id FROM migrations WHERE id LIKE 'ipam-%'").all();
    expect(applied).toHaveLength(migrations.length);
  });

  it('picks the first free default pool, skipping existing pools and avoided routes', () => {
    const a = ipam.requestPool({ owner: 'a' });
    expect(a.subnet.toString()).toBe('172.17.0.0/16');
    expect(a.range.equals(a.subnet)).toBe(true);
    expect(a.gateway?.toString()).toBe('172.17.0.1');
    expect(a.v6).toBe(false);
    const b = ipam.requestPool({ avoid: [Subnet.parse('172.18.3.0/24'), Subnet.parse('0.0.0.0/0')] });
    expect(b.subnet.toString()).toBe('172.19.0.0/16'); // 172.17 taken, 172.18 has a host route, /0 ignored
    const c = ipam.requestPool({ avoid: [Subnet.parse('172.16.0.0/12')] });
    expect(c.subnet.toString()).toBe('192.168.0.0/20');
    const d = ipam.requestPool({});
    expect(d.subnet.toString()).toBe('172.18.0.0/16'); // the route was only avoided for b and c
    expect(ipam.listPools().map((p) => p.id)).toEqual([a.id, b.id, c.id, d.id]);
    expect(ipam.getPool(a.id)).toEqual(a);
  });

  it('uses configured default pools', () => {
    const custom = new Ipam(db, { v4Pools: [{ base: '10.200.0.0/16', size: 24 }] });
    expect(custom.requestPool({}).subnet.toString()).toBe('10.200.0.0/24');
    expect(custom.requestPool({}).subnet.toString()).toBe('10.200.1.0/24');
  });

  it('refuses when every default pool is taken', () => {
    const small = new Ipam(db, { v4Pools: [{ base: '10.200.0.0/23', size: 24 }] });
    small.requestPool({});
    small.requestPool({});
    const before = snapshot();
    expect(refuse(() => small.requestPool({}), 'conflict').message).toMatch(/no free IPv4 default pool left.*10\.200\.0\.0\/23/);
    expect(snapshot()).toBe(before);
  });

  it('picks IPv6 pools as /64s of the ULA /48', () => {
    const a = ipam.requestPool({ v6: true });
    const b = ipam.requestPool({ v6: true });
    expect(a.v6).toBe(true);
    expect(a.subnet.prefix).toBe(64);
    expect(Subnet.parse('fd00::/8').contains(a.subnet)).toBe(true);
    expect(b.subnet.network - a.subnet.network).toBe(1n << 64n);
    expect(a.gateway?.value).toBe(a.subnet.network + 1n);
    // The ULA is a function of the seed.
    const dir2 = mkdtempSync(join(tmpdir(), 'tnet-ipam-'));
    const db2 = openDb(dir2);
    try {
      expect(new Ipam(db2, { ulaSeed: 'test-host' }).requestPool({ v6: true }).subnet.equals(a.subnet)).toBe(true);
    } finally {
      db2.close();
      rmSync(dir2, { recursive: true, force: true });
    }
  });

  it('refuses an explicit subnet overlapping a pool, naming both subnets and the owner', () => {
    const net1 = ipam.requestPool({ subnet: '10.0.0.0/16', owner: 'net1' });
    const before = snapshot();
    const e = refuse(() => ipam.requestPool({ subnet: '10.0.5.0/24', owner: 'net2' }), 'conflict');
    expect(e.message).toContain('10.0.5.0/24');
    expect(e.message).toContain('10.0.0.0/16');
    expect(e.message).toContain('"net1"');
    expect(e.message).toContain(net1.id);
    refuse(() => ipam.requestPool({ subnet: '10.0.0.0/8' }), 'conflict');
    refuse(() => ipam.requestPool({ subnet: '10.0.0.0/16' }), 'conflict');
    expect(snapshot()).toBe(before);
    // An explicit subnet is not checked against avoid (only tnet's own pools).
    expect(ipam.requestPool({ subnet: '10.1.0.0/16', avoid: [Subnet.parse('10.1.0.0/16')] }).subnet.toString()).toBe(
      '10.1.0.0/16',
    );
  });

  it('refuses bad pool requests and changes nothing', () => {
    ipam.requestPool({ subnet: '10.9.0.0/24' });
    const before = snapshot();
    const cases: [object, RegExp][] = [
      [{ subnet: '10.0.0.1/24' }, /host bits set; did you mean 10\.0\.0\.0\/24/],
      [{ subnet: '10.0.0.0/24', gateway: '10.0.1.1' }, /gateway 10\.0\.1\.1 is not in subnet 10\.0\.0\.0\/24/],
      [{ subnet: '10.0.0.0/24', gateway: '10.0.0.0' }, /network address/],
      [{ subnet: '10.0.0.0/24', gateway: '10.0.0.255' }, /broadcast address/],
      [{ subnet: '10.0.0.0/24', gateway: 'nope' }, /"nope" is not a valid IP address/],
      [{ subnet: '10.0.0.0/24', ipRange: '10.0.1.0/25' }, /ip range 10\.0\.1\.0\/25 is not inside subnet 10\.0\.0\.0\/24/],
      [{ subnet: '10.0.0.0/24', ipRange: '10.0.0.0/23' }, /not inside subnet/],
      [{ subnet: '10.0.0.0/24', auxAddresses: { h1: '10.0.2.5' } }, /aux address "h1" 10\.0\.2\.5 is not in subnet/],
      [{ subnet: '10.0.0.0/24', auxAddresses: { h1: '10.0.0.5', h2: '10.0.0.5' } }, /"h1" and "h2" are both 10\.0\.0\.5/],
      [{ subnet: '10.0.0.0/24', auxAddresses: { h1: '10.0.0.1' } }, /is the gateway/],
      [{ ipRange: '10.0.0.0/25' }, /needs an explicit subnet/],
      [{ gateway: '10.0.0.1' }, /needs an explicit subnet/],
      [{ subnet: '10.0.0.0/24', v6: true }, /IPv4 but an IPv6 pool/],
      [{ subnet: 'fd00::/64', ipRange: '10.0.0.0/25' }, /not inside subnet/],
      [{ subnet: '10.0.0.0/24', gateway: '10.0.0.1', noGateway: true }, /noGateway/],
    ];
    for (const [req, message] of cases) {
      expect(refuse(() => ipam.requestPool(req), 'invalid-argument').message).toMatch(message);
    }
    expect(snapshot()).toBe(before);
  });

  it('reserves gateway and aux addresses, and allocates from the ip range', () => {
    // The recorded docker network create --subnet 10.98.0.0/24 --ip-range 10.98.0.128/25
    // --gateway 10.98.0.254 --aux-address host1=10.98.0.5
    const p = ipam.requestPool({
      subnet: '10.98.0.0/24',
      ipRange: '10.98.0.128/25',
      gateway: '10.98.0.254',
      auxAddresses: { host1: '10.98.0.5' },
      options: { foo: 'bar' },
    });
    expect(p.range.toString()).toBe('10.98.0.128/25');
    expect(p.gateway?.toString()).toBe('10.98.0.254');
    expect(p.auxAddresses.host1?.toString()).toBe('10.98.0.5');
    expect(p.options).toEqual({ foo: 'bar' });
    expect(ipam.listAddresses(p.id).map((a) => [a.address.toString(), a.kind, a.owner])).toEqual([
      ['10.98.0.5', 'aux', 'host1'],
      ['10.98.0.254', 'gateway', undefined],
    ]);
    expect(next(p.id)).toBe('10.98.0.128'); // the range's first address is a host of the subnet
    // Static addresses may lie outside the range (Docker allows --ip anywhere in the subnet).
    expect(ipam.requestAddress(p.id, { address: '10.98.0.10' }).toString()).toBe('10.98.0.10');
    // Aux and gateway are taken; they go with the pool, not with releaseAddress.
    expect(refuse(() => ipam.requestAddress(p.id, { address: '10.98.0.5' }), 'conflict').message).toContain(
      'aux address "host1"',
    );
    expect(refuse(() => ipam.requestAddress(p.id, { address: '10.98.0.254' }), 'conflict').message).toContain(
      'the gateway',
    );
    refuse(() => ipam.releaseAddress(p.id, '10.98.0.254'), 'invalid-argument');
    // The range's dynamic addresses end before the gateway and the broadcast address.
    const got: string[] = [];
    for (;;) {
      try {
        got.push(next(p.id));
      } catch (e) {
        expect((e as TnetError).message).toBe('no free address left in range 10.98.0.128/25 of pool 10.98.0.0/24');
        break;
      }
    }
    expect(got.length).toBe(125); // .129 .. .253
    expect(got.at(-1)).toBe('10.98.0.253');
  });

  it('noGateway reserves nothing, for the Docker face', () => {
    const p = ipam.requestPool({ subnet: '10.0.0.0/24', noGateway: true });
    expect(p.gateway).toBeUndefined();
    expect(ipam.listAddresses(p.id)).toEqual([]);
    expect(next(p.id)).toBe('10.0.0.1');
  });

  it('shares identical shared requests with reference counting', () => {
    const req = { subnet: '10.50.0.0/24', shared: true, addressSpace: 'LocalDefault', noGateway: true };
    const a = ipam.requestPool(req);
    const b = ipam.requestPool(req);
    expect(b.id).toBe(a.id);
    expect(b.refs).toBe(2);
    expect(ipam.listPools()).toHaveLength(1);
    ipam.requestAddress(a.id, { address: '10.50.0.7' });
    // A different request for an overlapping subnet is still a conflict, as is an unshared one.
    refuse(() => ipam.requestPool({ ...req, ipRange: '10.50.0.0/25' }), 'conflict');
    refuse(() => ipam.requestPool({ ...req, addressSpace: 'Other' }), 'conflict');
    refuse(() => ipam.requestPool({ ...req, shared: false }), 'conflict');
    expect(ipam.releasePool(a.id)).toBe(1);
    expect(ipam.getPool(a.id).refs).toBe(1);
    expect(addrs(a.id)).toEqual(['10.50.0.7']); // still there for the remaining user
    expect(ipam.releasePool(a.id)).toBe(0);
    refuse(() => ipam.getPool(a.id), 'not-found');
    expect(ipam.listPools()).toEqual([]);
    // An unshared pool is never joined.
    const c = ipam.requestPool({ subnet: '10.51.0.0/24' });
    refuse(() => ipam.requestPool({ subnet: '10.51.0.0/24' }), 'conflict');
    expect(ipam.releasePool(c.id)).toBe(0);
  });

  it('release deletes the pool with its addresses; the subnet is then free again', () => {
    const p = ipam.requestPool({ subnet: '10.0.0.0/24' });
    next(p.id);
    expect(ipam.releasePool(p.id)).toBe(0);
    refuse(() => ipam.releasePool(p.id), 'not-found');
    refuse(() => ipam.requestAddress(p.id), 'not-found');
    refuse(() => ipam.listAddresses(p.id), 'not-found');
    expect(db.prepare('SELECT count(*) AS n FROM ipam_addresses').get()).toEqual({ n: 0 });
    expect(db.prepare('SELECT count(*) AS n FROM ipam_free').get()).toEqual({ n: 0 });
    const again = ipam.requestPool({ subnet: '10.0.0.0/24' });
    expect(again.id).not.toBe(p.id);
    expect(next(again.id)).toBe('10.0.0.2');
  });
});

describe('addresses', () => {
  it('hands out the lowest free address, never network or broadcast', () => {
    const p = ipam.requestPool({ subnet: '10.0.0.0/29', owner: 'n' });
    expect([next(p.id, 'a'), next(p.id, 'b'), next(p.id), next(p.id), next(p.id)]).toEqual([
      '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6',
    ]);
    const before = snapshot();
    const e = refuse(() => next(p.id), 'conflict');
    expect(e.message).toBe('no free address left in pool 10.0.0.0/29');
    expect(snapshot()).toBe(before);
    expect(refuse(() => ipam.requestAddress(p.id, { address: '10.0.0.0' }), 'invalid-argument').message).toMatch(
      /network address/,
    );
    expect(refuse(() => ipam.requestAddress(p.id, { address: '10.0.0.7' }), 'invalid-argument').message).toMatch(
      /broadcast address/,
    );
    expect(ipam.listAddresses(p.id).slice(0, 3)).toEqual([
      { address: expect.anything(), kind: 'gateway' },
      { address: expect.anything(), kind: 'dynamic', owner: 'a' },
      { address: expect.anything(), kind: 'dynamic', owner: 'b' },
    ]);
  });

  it('exhaustion names the pool: /30 holds a gateway and one host', () => {
    const p = ipam.requestPool({ subnet: '10.0.0.0/30' });
    expect(next(p.id)).toBe('10.0.0.2');
    expect(refuse(() => next(p.id), 'conflict').message).toBe('no free address left in pool 10.0.0.0/30');
  });

  it('uses every address of /31 and /32 (RFC 3021)', () => {
    const p31 = ipam.requestPool({ subnet: '10.0.0.0/31', noGateway: true });
    expect([next(p31.id), next(p31.id)]).toEqual(['10.0.0.0', '10.0.0.1']);
    refuse(() => next(p31.id), 'conflict');
    const p32 = ipam.requestPool({ subnet: '10.0.1.7/32', noGateway: true });
    expect(next(p32.id)).toBe('10.0.1.7');
    const g31 = ipam.requestPool({ subnet: '10.0.2.0/31' });
    expect(g31.gateway?.toString()).toBe('10.0.2.0');
    expect(next(g31.id)).toBe('10.0.2.1');
  });

  it('reuses released addresses, lowest first', () => {
    const p = ipam.requestPool({ subnet: '10.0.0.0/24' });
    const got = Array.from({ length: 10 }, () => next(p.id));
    expect(got[0]).toBe('10.0.0.2');
    expect(got[9]).toBe('10.0.0.11');
    ipam.releaseAddress(p.id, '10.0.0.7');
    ipam.releaseAddress(p.id, '10.0.0.4');
    ipam.releaseAddress(p.id, '10.0.0.5');
    expect(addrs(p.id)).not.toContain('10.0.0.5');
    expect([next(p.id), next(p.id), next(p.id), next(p.id)]).toEqual(['10.0.0.4', '10.0.0.5', '10.0.0.7', '10.0.0.12']);
    const before = snapshot();
    expect(refuse(() => ipam.releaseAddress(p.id, '10.0.0.200'), 'not-found').message).toBe(
      'address 10.0.0.200 is not allocated in pool 10.0.0.0/24',
    );
    refuse(() => ipam.releaseAddress('no-such-pool', '10.0.0.2'), 'not-found');
    refuse(() => ipam.releaseAddress(p.id, 'bogus'), 'invalid-argument');
    expect(snapshot()).toBe(before);
    // Release everything: the free list merges back into one run.
    for (const a of ipam.listAddresses(p.id)) if (a.kind === 'dynamic') ipam.releaseAddress(p.id, a.address.toString());
    expect(db.prepare('SELECT count(*) AS n FROM ipam_free WHERE pool = ?').get(p.id)).toEqual({ n: 1 });
    expect(next(p.id)).toBe('10.0.0.2');
  });

  it('static requests: inside the subnet, refused when taken, naming the owner', () => {
    const p = ipam.requestPool({ subnet: '10.0.0.0/24' });
    expect(ipam.requestAddress(p.id, { address: '10.0.0.3', owner: 'web' }).toString()).toBe('10.0.0.3');
    const before = snapshot();
    const e = refuse(() => ipam.requestAddress(p.id, { address: '10.0.0.3', owner: 'db' }), 'conflict');
    expect(e.message).toBe('address 10.0.0.3 in pool 10.0.0.0/24 is already allocated (owner "web")');
    expect(refuse(() => ipam.requestAddress(p.id, { address: '10.0.1.3' }), 'invalid-argument').message).toBe(
      'address 10.0.1.3 is not in subnet 10.0.0.0/24',
    );
    refuse(() => ipam.requestAddress(p.id, { address: 'fd00::3' }), 'invalid-argument');
    refuse(() => ipam.requestAddress(p.id, { address: '10.0.0.3/24' }), 'invalid-argument');
    expect(snapshot()).toBe(before);
    // Dynamic allocation goes around the static address.
    expect([next(p.id), next(p.id)]).toEqual(['10.0.0.2', '10.0.0.4']);
    expect(ipam.listAddresses(p.id).find((a) => a.address.toString() === '10.0.0.3')).toMatchObject({
      kind: 'static',
      owner: 'web',
    });
  });

  it('held addresses: static before dynamic, claimed only by their owner', () => {
    const p = ipam.requestPool({ subnet: '10.0.0.0/24' });
    // Restore: the static addresses known for endpoints are held before anything dynamic runs.
    ipam.holdAddress(p.id, '10.0.0.2', 'web');
    ipam.holdAddress(p.id, '10.0.0.3', 'db');
    expect(next(p.id, 'x')).toBe('10.0.0.4');
    expect(refuse(() => ipam.requestAddress(p.id, { address: '10.0.0.2', owner: 'x' }), 'conflict').message).toContain(
      'held for owner "web"',
    );
    refuse(() => ipam.requestAddress(p.id, { address: '10.0.0.2' }), 'conflict');
    refuse(() => ipam.holdAddress(p.id, '10.0.0.2', 'x'), 'conflict');
    refuse(() => ipam.holdAddress(p.id, '10.0.0.5', ''), 'invalid-argument');
    expect(ipam.requestAddress(p.id, { address: '10.0.0.2', owner: 'web' }).toString()).toBe('10.0.0.2');
    // A stopped container keeps its static IP by holding it again, not by releasing it.
    ipam.holdAddress(p.id, '10.0.0.2', 'web');
    expect(next(p.id)).toBe('10.0.0.5');
    // Released for good, a held address is reusable.
    ipam.releaseAddress(p.id, '10.0.0.3');
    expect(next(p.id)).toBe('10.0.0.3');
    expect(ipam.listAddresses(p.id).map((a) => [a.address.toString(), a.kind, a.owner ?? null])).toEqual([
      ['10.0.0.1', 'gateway', null],
      ['10.0.0.2', 'held', 'web'],
      ['10.0.0.3', 'dynamic', null],
      ['10.0.0.4', 'dynamic', 'x'],
      ['10.0.0.5', 'dynamic', null],
    ]);
  });

  it('1000 allocations are distinct and in order', () => {
    const p = ipam.requestPool({ subnet: '10.8.0.0/16' });
    const got = db.transaction(() => Array.from({ length: 1000 }, () => ipam.requestAddress(p.id).value))();
    expect(new Set(got).size).toBe(1000);
    expect(got.every((v, i) => i === 0 || v === got[i - 1]! + 1n)).toBe(true);
    expect(ipam.listAddresses(p.id)).toHaveLength(1001); // with the gateway
  });

  it('IPv6: /64 and /48 pools allocate thousands quickly, with a free list that stays small', () => {
    const p64 = ipam.requestPool({ subnet: 'fd00:1::/64' });
    const p48 = ipam.requestPool({ subnet: 'fd00:2::/48', gateway: 'fd00:2::ffff' });
    expect(p48.subnet.size).toBe(1n << 80n);
    const t0 = performance.now();
    const heap0 = process.memoryUsage().heapUsed;
    // One enclosing transaction: this measures the allocator, not 6000 fsyncs of the disk.
    const [a64, a48] = db.transaction(() => {
      const x = Array.from({ length: 3000 }, () => ipam.requestAddress(p64.id).toString());
      const y = Array.from({ length: 3000 }, () => ipam.requestAddress(p48.id).toString());
      return [x, y];
    })();
    const ms = performance.now() - t0;
    expect(ms).toBeLessThan(2000);
    expect(process.memoryUsage().heapUsed - heap0).toBeLessThan(64 * 1024 * 1024);
    expect(a64[0]).toBe('fd00:1::2'); // ::0 is the subnet-router anycast, ::1 the gateway
    expect(a64[2999]).toBe('fd00:1::bb9');
    expect(new Set(a48).size).toBe(3000);
    expect(a48.slice(0, 2)).toEqual(['fd00:2::1', 'fd00:2::2']);
    expect(a48).not.toContain('fd00:2::ffff');
    // The free list is a handful of runs, whatever the size of the pool.
    const runs = db.prepare('SELECT pool, count(*) AS n FROM ipam_free GROUP BY pool').all() as { n: number }[];
    for (const r of runs) expect(r.n).toBeLessThanOrEqual(2);
    // Static addresses far out in a /48, and the very last one, work and are listed.
    ipam.requestAddress(p48.id, { address: 'fd00:2:0:ffff:ffff:ffff:ffff:ffff' });
    ipam.releaseAddress(p48.id, 'fd00:2::5');
    expect(ipam.requestAddress(p48.id).toString()).toBe('fd00:2::5');
    expect(addrs(p48.id).at(-1)).toBe('fd00:2:0:ffff:ffff:ffff:ffff:ffff');
    refuse(() => ipam.requestAddress(p64.id, { address: 'fd00:1::' }), 'invalid-argument');
  });

  it('every allocation commits on its own', () => {
    const p = ipam.requestPool({ subnet: '10.0.0.0/22' });
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) ipam.requestAddress(p.id);
    // Each is its own durable transaction (fsync); this only guards against something pathological.
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(addrs(p.id)).toHaveLength(201);
  });
});
