import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TnetError } from '../../libnetwork/errors.js';
import { firstFreeSubnet, parsePoolSpecs } from '../../libnetwork/ipam/defaults.js';
import { type Allocator, LocalAllocator, addressDomain } from '../../libnetwork/ipam/index.js';
import { type AddressDomain, Ipam, type Pool, migrations } from '../../libnetwork/ipam/ipam.js';
import { unkey } from '../../libnetwork/ipam/runs.js';
import { Subnet } from '../../libnetwork/ipam/subnet.js';
import { type Db, migrate, openDb } from '../../libnetwork/store/db.js';
import { refuse } from './refuse.js';

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

const sub = (p: Pool) => p.subnet.toString();
const next = (poolId: string) => ipam.requestAddress(poolId).toString();

/**
 * The free space index (ipam_space) must be exactly the complement of the pools: per domain and
 * family, of the top-level pools in the whole address space; per parent, of its children in its
 * subnet. Checked after the operations of a test, from the raw tables.
 */
function checkSpace(): void {
  type Row = { id: string; domain: string; family: 4 | 6; subnet: string; parent: string | null; children_only: number };
  const pools = db.prepare('SELECT id, domain, family, subnet, parent, children_only FROM ipam_pools').all() as Row[];
  const universe = new Map<string, [bigint, bigint]>();
  for (const d of ['local', 'global']) {
    universe.set(`${d}/4`, [0n, (1n << 32n) - 1n]);
    universe.set(`${d}/6`, [0n, (1n << 128n) - 1n]);
  }
  for (const p of pools) {
    const s = Subnet.parse(p.subnet);
    if (p.children_only) universe.set(p.id, [s.network, s.network + s.size - 1n]);
  }
  const used = new Map<string, [bigint, bigint][]>([...universe.keys()].map((k) => [k, []]));
  for (const p of pools) {
    const s = Subnet.parse(p.subnet);
    used.get(p.parent ?? `${p.domain}/${p.family}`)!.push([s.network, s.network + s.size - 1n]);
  }
  const rows = db.prepare('SELECT scope, lo, hi FROM ipam_space ORDER BY scope, lo').all() as {
    scope: string;
    lo: Buffer;
    hi: Buffer;
  }[];
  expect(new Set(rows.map((r) => r.scope)).size).toBeLessThanOrEqual(universe.size);
  for (const [scope, [lo, hi]] of universe) {
    const taken = used.get(scope)!.sort((a, b) => (a[0] < b[0] ? -1 : 1));
    const want: string[] = [];
    let at = lo;
    for (const [a, b] of taken) {
      expect(a >= at, `pools of ${scope} overlap at ${a}`).toBe(true);
      if (a > at) want.push(`${at}-${a - 1n}`);
      at = b + 1n;
    }
    if (at <= hi) want.push(`${at}-${hi}`);
    const got = rows.filter((r) => r.scope === scope).map((r) => `${unkey(r.lo)}-${unkey(r.hi)}`);
    expect(got, `free space of ${scope}`).toEqual(want);
  }
}

describe('address domains', () => {
  it('addressDomain: the global spaces are one domain, everything else is local', () => {
    for (const s of ['global', 'tnet-global', 'docker:GlobalDefault']) expect(addressDomain(s)).toBe('global');
    for (const s of ['local', 'tnet-local', 'docker:LocalDefault', 'docker:unknown', 'LocalDefault', 'GlobalDefault']) {
      expect(addressDomain(s)).toBe('local');
    }
  });

  it("refuses overlaps across all of this host's local address spaces", () => {
    const lab = ipam.requestPool({ subnet: '10.0.0.0/16', owner: 'lab' });
    for (const addressSpace of ['local', 'tnet-local', 'docker:LocalDefault', 'docker:x']) {
      const e = refuse(() => ipam.requestPool({ subnet: '10.0.3.0/24', addressSpace }), 'conflict');
      expect(e.message).toContain(lab.id);
      if (addressSpace !== 'local') expect(e.message).toContain('address space "local"');
    }
    // A Docker mirror pool blocks lab networks, explicit and auto-chosen alike.
    ipam.requestPool({ subnet: '172.17.0.0/16', addressSpace: 'docker:LocalDefault', noGateway: true });
    expect(refuse(() => ipam.requestPool({ subnet: '172.17.1.0/24' }), 'conflict').message).toMatch(
      /overlaps 172\.17\.0\.0\/16 of pool .* address space "docker:LocalDefault"/,
    );
    expect(sub(ipam.requestPool({ addressSpace: 'tnet-local' }))).toBe('172.18.0.0/16');
    checkSpace();
  });

  it('keeps the global domain apart from the local one, but not from itself', () => {
    ipam.requestPool({ subnet: '10.0.0.0/16' });
    ipam.requestPool({ subnet: '172.17.0.0/16', addressSpace: 'docker:LocalDefault' });
    const g = ipam.requestPool({ subnet: '10.0.0.0/24', addressSpace: 'tnet-global', owner: 'overlay' });
    expect(sub(g)).toBe('10.0.0.0/24');
    for (const addressSpace of ['global', 'docker:GlobalDefault', 'tnet-global']) {
      expect(refuse(() => ipam.requestPool({ subnet: '10.0.0.128/25', addressSpace }), 'conflict').message).toContain(g.id);
    }
    // Auto-choice in the global domain sees only global pools.
    expect(sub(ipam.requestPool({ addressSpace: 'global' }))).toBe('172.17.0.0/16');
    expect(sub(ipam.requestPool({ addressSpace: 'docker:GlobalDefault' }))).toBe('172.18.0.0/16');
    expect(sub(ipam.requestPool({}))).toBe('172.18.0.0/16');
    // Releasing a global pool frees it in the global domain only.
    ipam.releasePool(g.id);
    expect(sub(ipam.requestPool({ subnet: '10.0.0.0/24', addressSpace: 'global' }))).toBe('10.0.0.0/24');
    refuse(() => ipam.requestPool({ subnet: '10.0.0.0/24' }), 'conflict');
    checkSpace();
  });

  it('IPv4 and IPv6 pools never block each other, even with equal numeric values', () => {
    const v4 = ipam.requestPool({ subnet: '10.0.0.0/24' });
    // ::a00:0/120 is the numbers of 10.0.0.0/24, and ::/0 covers them all: IPv6 is another index.
    const v6 = ipam.requestPool({ subnet: '::a00:0/120' });
    expect(v6.v6).toBe(true);
    ipam.requestPool({ subnet: '::1:0:0/96' });
    refuse(() => ipam.requestPool({ subnet: '::a00:80/121' }), 'conflict');
    refuse(() => ipam.requestPool({ subnet: '10.0.0.128/25' }), 'conflict');
    ipam.releasePool(v4.id);
    refuse(() => ipam.requestPool({ subnet: '::a00:0/120' }), 'conflict');
    expect(sub(ipam.requestPool({ subnet: '10.0.0.0/24' }))).toBe('10.0.0.0/24');
    checkSpace();
  });

  it('finds overlaps on either side: containing, contained, and a subnet over several pools', () => {
    const a = ipam.requestPool({ subnet: '10.1.0.0/16' });
    const b = ipam.requestPool({ subnet: '10.2.0.0/24' });
    ipam.requestPool({ subnet: '10.0.0.0/24' }); // adjacent pools are fine
    ipam.requestPool({ subnet: '10.3.0.0/31' });
    expect(refuse(() => ipam.requestPool({ subnet: '10.0.0.0/8' }), 'conflict').message).toContain('overlaps 10.0.0.0/24');
    expect(refuse(() => ipam.requestPool({ subnet: '10.1.200.0/24' }), 'conflict').message).toContain(a.id);
    expect(refuse(() => ipam.requestPool({ subnet: '10.1.255.255/32', noGateway: true }), 'conflict').message).toContain(a.id);
    expect(refuse(() => ipam.requestPool({ subnet: '10.2.0.0/23' }), 'conflict').message).toContain(b.id);
    // The default route is no network at all (ipam/usable.ts), whatever it overlaps.
    expect(refuse(() => ipam.requestPool({ subnet: '0.0.0.0/0' })).message).toContain('the default route');
    // Single addresses at either end of a request.
    const end = ipam.requestPool({ subnet: '10.5.0.255/32', noGateway: true });
    expect(refuse(() => ipam.requestPool({ subnet: '10.5.0.0/24' }), 'conflict').message).toContain(end.id);
    const start = ipam.requestPool({ subnet: '10.6.0.0/32', noGateway: true });
    expect(refuse(() => ipam.requestPool({ subnet: '10.6.0.0/24' }), 'conflict').message).toContain(start.id);
    const last6 = ipam.requestPool({ subnet: 'fd00:9::ffff/128', noGateway: true });
    expect(refuse(() => ipam.requestPool({ subnet: 'fd00:9::/112' }), 'conflict').message).toContain(last6.id);
    expect(sub(ipam.requestPool({ subnet: '10.2.1.0/24' }))).toBe('10.2.1.0/24');
    expect(sub(ipam.requestPool({ subnet: '10.0.1.0/24' }))).toBe('10.0.1.0/24');
    checkSpace();
  });

  it('auto-choice jumps over runs of pools and still honours avoided routes', () => {
    const small = new Ipam(db, { v4Pools: [{ base: '10.200.0.0/16', size: 24 }] });
    for (let i = 0; i < 10; i++) small.requestPool({});
    small.requestPool({ subnet: '10.200.11.0/24' });
    const avoid = [Subnet.parse('10.200.10.0/23'), Subnet.parse('10.200.12.0/24')];
    expect(sub(small.requestPool({ avoid }))).toBe('10.200.13.0/24');
    expect(sub(small.requestPool({}))).toBe('10.200.10.0/24');
    // A pool released in the middle is the next one chosen.
    const third = small.listPools().find((p) => sub(p) === '10.200.2.0/24')!;
    small.releasePool(third.id);
    expect(sub(small.requestPool({}))).toBe('10.200.2.0/24');
    checkSpace();
  });

  it('agrees with a brute-force model over a random mix of requests and releases', () => {
    // mulberry32: a small seeded generator, the same sequence on every run.
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
    };
    const pick = <T>(xs: readonly T[]) => xs[rand(xs.length)]!;
    // Explicit subnets fall in the first block of each family; auto-chosen ones too, while room lasts.
    const v4Pools = [{ base: '10.0.0.0/20', size: 26 }, { base: '10.0.0.0/16', size: 24 }];
    const v6Pools = [{ base: 'fd00::/116', size: 122 }, { base: 'fd00::/108', size: 120 }];
    const model = new Ipam(db, { v4Pools, v6Pools });
    const sources = { 4: parsePoolSpecs(v4Pools, 4), 6: parsePoolSpecs(v6Pools, 6) };
    type M = { id: string; domain: AddressDomain; subnet: Subnet; parent?: string; childrenOnly: boolean };
    const live = new Map<string, M>();
    const spaces = ['local', 'tnet-local', 'docker:LocalDefault', 'tnet-global', 'global'];
    const randomSubnet = (v6: boolean, within?: Subnet) => {
      const base = within ?? Subnet.parse(v6 ? 'fd00::/116' : '10.0.0.0/20');
      const prefix = base.prefix + 1 + rand(Math.min(12, (v6 ? 128 : 32) - base.prefix));
      const size = 1n << BigInt((v6 ? 128 : 32) - prefix);
      const n = base.size / size;
      return Subnet.of(v6 ? 6 : 4, base.network + BigInt(rand(Number(n))) * size, prefix);
    };
    let conflicts = 0;
    let created = 0;
    let autoOk = 0;
    let kidsOk = 0;
    let busyN = 0;
    for (let step = 0; step < 800; step++) {
      const op = rand(10);
      if (op < 3 && live.size) {
        const p = pick([...live.values()]);
        const kids = [...live.values()].filter((c) => c.parent === p.id).length;
        if (kids) {
          expect(refuse(() => model.releasePool(p.id), 'busy').message).toContain(`${kids} child pool`);
          busyN++;
        } else {
          expect(model.releasePool(p.id)).toBe(0);
          live.delete(p.id);
        }
        continue;
      }
      const parents = [...live.values()].filter((p) => p.childrenOnly);
      const child = op >= 8 && parents.length > 0;
      const parent = child ? pick(parents) : undefined;
      const addressSpace = parent ? undefined : pick(spaces);
      const domain = parent ? parent.domain : addressDomain(addressSpace!);
      const v6 = parent ? parent.subnet.family === 6 : rand(4) === 0;
      const family = v6 ? 6 : 4;
      const peers = [...live.values()].filter((p) =>
        parent ? p.parent === parent.id : !p.parent && p.domain === domain && p.subnet.family === family,
      );
      const explicit = rand(2) === 0;
      const childrenOnly = !parent && rand(5) === 0;
      let expected: Subnet | undefined;
      let req: Parameters<Ipam['requestPool']>[0];
      if (explicit) {
        const s = randomSubnet(v6, parent?.subnet);
        req = { subnet: s.toString(), addressSpace, parent: parent?.id, childrenOnly, noGateway: true };
        expected = peers.some((p) => p.subnet.overlaps(s)) ? undefined : s;
      } else {
        const avoid = rand(3) === 0 ? [randomSubnet(v6)] : [];
        const prefixLength = parent ? parent.subnet.prefix + 1 + rand(Math.min(6, (v6 ? 128 : 32) - parent.subnet.prefix)) : undefined;
        req = { v6, addressSpace, parent: parent?.id, prefixLength, avoid, childrenOnly, noGateway: true };
        const src = parent ? [{ base: parent.subnet, size: prefixLength! }] : sources[family];
        expected = firstFreeSubnet(src, [...peers.map((p) => p.subnet), ...avoid]);
      }
      if (expected) {
        const got = model.requestPool(req);
        expect(sub(got)).toBe(expected.toString());
        expect(got.parent).toBe(parent?.id);
        live.set(got.id, { id: got.id, domain, subnet: got.subnet, parent: parent?.id, childrenOnly });
        created++;
        if (!explicit) autoOk++;
        if (parent) kidsOk++;
      } else {
        refuse(() => model.requestPool(req), 'conflict');
        conflicts++;
      }
    }
    // Every path was taken many times (the counts of this seed: 423, 134, 304, 127, 33).
    expect(created).toBeGreaterThan(300);
    expect(conflicts).toBeGreaterThan(100);
    expect(autoOk).toBeGreaterThan(200);
    expect(kidsOk).toBeGreaterThan(100);
    expect(busyN).toBeGreaterThan(20);
    expect(new Set(model.listPools().map((p) => p.id))).toEqual(new Set(live.keys()));
    checkSpace();
  });
});

describe('child pools', () => {
  const parentOf = (subnet = '10.128.0.0/20', extra = {}) =>
    ipam.requestPool({ subnet, childrenOnly: true, owner: 'lab', ...extra });

  it('carves the lowest free block of the asked size', () => {
    const parent = parentOf();
    expect(parent.childrenOnly).toBe(true);
    expect(parent.gateway).toBeUndefined();
    expect(ipam.listAddresses(parent.id)).toEqual([]);
    const carve = (prefixLength: number) => ipam.requestPool({ parent: parent.id, prefixLength, noGateway: true });
    const a = carve(31);
    expect(sub(a)).toBe('10.128.0.0/31');
    expect(a.parent).toBe(parent.id);
    expect(a.childrenOnly).toBe(false);
    expect(a.addressSpace).toBe('local');
    expect(sub(carve(31))).toBe('10.128.0.2/31');
    expect(sub(carve(30))).toBe('10.128.0.4/30');
    expect(sub(ipam.requestPool({ parent: parent.id, subnet: '10.128.0.10/31' }))).toBe('10.128.0.10/31');
    expect(sub(carve(31))).toBe('10.128.0.8/31');
    expect(sub(carve(31))).toBe('10.128.0.12/31');
    expect(sub(carve(24))).toBe('10.128.1.0/24');
    expect(sub(carve(29))).toBe('10.128.0.16/29');
    expect(ipam.getPool(a.id)).toEqual(a);
    checkSpace();
  });

  it('a child is a normal pool for addresses: /31 and /127 give both, a gateway by default otherwise', () => {
    const v4 = parentOf();
    const link = ipam.requestPool({ parent: v4.id, prefixLength: 31, noGateway: true, owner: 'link-1' });
    expect([next(link.id), next(link.id)]).toEqual(['10.128.0.0', '10.128.0.1']);
    refuse(() => next(link.id), 'conflict');
    const v6 = parentOf('fd00:1::/64');
    const link6 = ipam.requestPool({ parent: v6.id, prefixLength: 127, noGateway: true });
    expect(sub(link6)).toBe('fd00:1::/127');
    expect([next(link6.id), next(link6.id)]).toEqual(['fd00:1::', 'fd00:1::1']);
    const net = ipam.requestPool({ parent: v4.id, prefixLength: 24, auxAddresses: {} });
    expect(net.gateway?.toString()).toBe('10.128.1.1');
    expect(next(net.id)).toBe('10.128.1.2');
    const explicit = ipam.requestPool({
      parent: v4.id, subnet: '10.128.2.0/24', ipRange: '10.128.2.128/25', gateway: '10.128.2.254', auxAddresses: { r: '10.128.2.5' },
    });
    expect(next(explicit.id)).toBe('10.128.2.128');
    ipam.holdAddress(explicit.id, '10.128.2.7', 'x');
    ipam.releaseAddress(explicit.id, '10.128.2.7');
    checkSpace();
  });

  it('refuses addresses in a childrenOnly pool, and bad child requests', () => {
    const parent = parentOf();
    const plain = ipam.requestPool({ subnet: '10.9.0.0/24' });
    expect(refuse(() => ipam.requestAddress(parent.id)).message).toMatch(/only carves child pools/);
    refuse(() => ipam.requestAddress(parent.id, { address: '10.128.0.5' }));
    refuse(() => ipam.holdAddress(parent.id, '10.128.0.5', 'x'));
    refuse(() => ipam.releaseAddress(parent.id, '10.128.0.5'), 'not-found');
    const cases: [object, RegExp][] = [
      [{ parent: plain.id, prefixLength: 31 }, /was not created with childrenOnly/],
      [{ parent: parent.id }, /needs a subnet or a prefixLength/],
      [{ prefixLength: 31 }, /needs a parent/],
      [{ parent: parent.id, prefixLength: 20 }, /prefix length between 21 and 32, not 20/],
      [{ parent: parent.id, prefixLength: 33 }, /not 33/],
      [{ parent: parent.id, prefixLength: 30.5 }, /not an integer/],
      [{ parent: parent.id, subnet: '10.128.0.0/20' }, /prefix length between 21 and 32, not 20/],
      [{ parent: parent.id, subnet: '10.129.0.0/31' }, /subnet 10\.129\.0\.0\/31 is not inside parent pool 10\.128\.0\.0\/20/],
      [{ parent: parent.id, subnet: '10.0.0.0/8' }, /not inside parent pool/],
      [{ parent: parent.id, subnet: 'fd00::/127' }, /not inside parent pool/],
      [{ parent: parent.id, subnet: '10.128.0.0/31', prefixLength: 30 }, /does not match subnet/],
      [{ parent: parent.id, prefixLength: 31, v6: true }, /is IPv4 but an IPv6 child/],
      [{ parent: parent.id, prefixLength: 31, addressSpace: 'tnet-local' }, /parent's address space "local"/],
      [{ parent: parent.id, prefixLength: 31, shared: true }, /cannot be shared/],
      [{ parent: parent.id, prefixLength: 31, gateway: '10.128.0.1' }, /needs an explicit subnet/],
      [{ subnet: '10.7.0.0/24', childrenOnly: true, gateway: '10.7.0.1' }, /not for a childrenOnly pool/],
      [{ subnet: '10.7.0.0/24', childrenOnly: true, ipRange: '10.7.0.0/25' }, /not for a childrenOnly pool/],
      [{ subnet: '10.7.0.0/24', childrenOnly: true, auxAddresses: { a: '10.7.0.9' } }, /not for a childrenOnly pool/],
      [{ subnet: '10.7.0.0/24', childrenOnly: true, shared: true }, /cannot be shared/],
    ];
    for (const [req, message] of cases) {
      expect(refuse(() => ipam.requestPool(req), 'invalid-argument').message, JSON.stringify(req)).toMatch(message);
    }
    expect(refuse(() => ipam.requestPool({ parent: 'nope', prefixLength: 31 }), 'not-found').message).toContain('"nope"');
    expect(ipam.listPools()).toHaveLength(2);
    checkSpace();
  });

  it('checks children against their siblings only; top-level pools against the parent', () => {
    const parent = parentOf();
    const a = ipam.requestPool({ parent: parent.id, subnet: '10.128.0.4/31', owner: 'link-a' });
    const e = refuse(() => ipam.requestPool({ parent: parent.id, subnet: '10.128.0.4/30' }), 'conflict');
    expect(e.message).toBe(
      `subnet 10.128.0.4/30 overlaps 10.128.0.4/31 of pool ${a.id} (owner "link-a"), another child of pool 10.128.0.0/20`,
    );
    refuse(() => ipam.requestPool({ parent: parent.id, subnet: '10.128.0.4/31' }), 'conflict');
    refuse(() => ipam.requestPool({ parent: parent.id, subnet: '10.128.0.0/29' }), 'conflict');
    expect(sub(ipam.requestPool({ parent: parent.id, subnet: '10.128.0.6/31' }))).toBe('10.128.0.6/31');
    // Nothing else may take space inside the parent, in any local address space.
    expect(refuse(() => ipam.requestPool({ subnet: '10.128.0.8/31' }), 'conflict').message).toContain(parent.id);
    refuse(() => ipam.requestPool({ subnet: '10.128.0.0/16', addressSpace: 'docker:LocalDefault' }), 'conflict');
    // Two parents' children are independent.
    const other = parentOf('10.129.0.0/24');
    expect(sub(ipam.requestPool({ parent: other.id, prefixLength: 30 }))).toBe('10.129.0.0/30');
    checkSpace();
  });

  it('a parent with children is busy; a released child frees its space for the next carve', () => {
    const parent = parentOf();
    const kids = Array.from({ length: 3 }, () => ipam.requestPool({ parent: parent.id, prefixLength: 31 }));
    expect(kids.map(sub)).toEqual(['10.128.0.0/31', '10.128.0.2/31', '10.128.0.4/31']);
    const e = refuse(() => ipam.releasePool(parent.id), 'busy');
    expect(e.message).toBe(`pool 10.128.0.0/20 (${parent.id}) has 3 child pools; release them first`);
    expect(e.object).toBe(`pool "${parent.id}"`);
    ipam.releasePool(kids[1]!.id);
    expect(sub(ipam.requestPool({ parent: parent.id, prefixLength: 31 }))).toBe('10.128.0.2/31');
    ipam.releasePool(kids[0]!.id);
    // Freed space merges with its free neighbours: a /30 fits where two /31s were.
    ipam.releasePool(ipam.listPools().find((p) => sub(p) === '10.128.0.2/31')!.id);
    expect(sub(ipam.requestPool({ parent: parent.id, prefixLength: 30 }))).toBe('10.128.0.0/30');
    checkSpace();
    for (const p of ipam.listPools()) if (p.parent) ipam.releasePool(p.id);
    expect(refuse(() => ipam.releasePool(ipam.requestPool({ parent: parent.id, prefixLength: 31 }).parent!), 'busy').message).toContain(
      'has 1 child pool; release it first',
    );
    for (const p of ipam.listPools()) if (p.parent) ipam.releasePool(p.id);
    expect(ipam.releasePool(parent.id)).toBe(0);
    expect(db.prepare('SELECT count(*) AS n FROM ipam_space WHERE scope = ?').get(parent.id)).toEqual({ n: 0 });
    // The parent's subnet is free for anyone again.
    expect(sub(ipam.requestPool({ subnet: '10.128.0.0/24' }))).toBe('10.128.0.0/24');
    checkSpace();
  });

  it('children can themselves carve (a lab block, then its links)', () => {
    const all = parentOf('10.128.0.0/16');
    const lab = ipam.requestPool({ parent: all.id, prefixLength: 24, childrenOnly: true });
    expect(sub(lab)).toBe('10.128.0.0/24');
    const l1 = ipam.requestPool({ parent: lab.id, prefixLength: 31, noGateway: true });
    expect(sub(l1)).toBe('10.128.0.0/31');
    expect(sub(ipam.requestPool({ parent: all.id, prefixLength: 24 }))).toBe('10.128.1.0/24');
    refuse(() => ipam.releasePool(lab.id), 'busy');
    refuse(() => ipam.releasePool(all.id), 'busy');
    ipam.releasePool(l1.id);
    ipam.releasePool(lab.id);
    expect(sub(ipam.requestPool({ parent: all.id, prefixLength: 24 }))).toBe('10.128.0.0/24');
    checkSpace();
  });

  it('2000 /31 links from a /20 are distinct, inside the parent, and quick; the /20 holds 2048', () => {
    const parent = parentOf();
    const t0 = performance.now();
    // One enclosing transaction: this measures the carving, not 2000 fsyncs of the disk.
    const links = db.transaction(() =>
      Array.from({ length: 2000 }, () => ipam.requestPool({ parent: parent.id, prefixLength: 31, noGateway: true })),
    )();
    const ms = performance.now() - t0;
    expect(ms).toBeLessThan(3000);
    const nets = links.map((l) => l.subnet.network);
    expect(new Set(nets).size).toBe(2000);
    nets.forEach((n, i) => expect(n).toBe(parent.subnet.network + 2n * BigInt(i)));
    expect(links.every((l) => parent.subnet.contains(l.subnet) && l.subnet.prefix === 31)).toBe(true);
    for (let i = 0; i < 48; i++) ipam.requestPool({ parent: parent.id, prefixLength: 31 });
    expect(refuse(() => ipam.requestPool({ parent: parent.id, prefixLength: 31 }), 'conflict').message).toBe(
      `no free /31 left in parent pool 10.128.0.0/20 (${parent.id})`,
    );
    // The free-space index stays small: the parent is full, nothing is left of it.
    expect(db.prepare('SELECT count(*) AS n FROM ipam_space WHERE scope = ?').get(parent.id)).toEqual({ n: 0 });
    ipam.releasePool(links[1234]!.id);
    expect(sub(ipam.requestPool({ parent: parent.id, prefixLength: 31 }))).toBe(links[1234]!.subnet.toString());
    checkSpace();
  });
});

describe('owners', () => {
  it('releaseOwned frees the static and dynamic addresses of an owner in every pool, nothing else', () => {
    const p1 = ipam.requestPool({ subnet: '10.0.0.0/24', auxAddresses: { ep: '10.0.0.200' }, owner: 'net1' });
    const p2 = ipam.requestPool({ subnet: 'fd00:1::/64', owner: 'net2' });
    ipam.requestAddress(p1.id, { owner: 'ep' }); // .2
    ipam.requestAddress(p1.id, { owner: 'other' }); // .3
    ipam.requestAddress(p2.id, { address: 'fd00:1::10', owner: 'ep' });
    ipam.holdAddress(p1.id, '10.0.0.50', 'ep');
    expect(ipam.releaseOwned('ep')).toBe(2);
    expect(ipam.listAddresses(p1.id).map((a) => [a.address.toString(), a.kind, a.owner])).toEqual([
      ['10.0.0.1', 'gateway', undefined],
      ['10.0.0.3', 'dynamic', 'other'],
      ['10.0.0.50', 'held', 'ep'], // held on purpose: released only by name
      ['10.0.0.200', 'aux', 'ep'], // an aux address's name is not an owner
    ]);
    expect(ipam.listAddresses(p2.id).map((a) => a.kind)).toEqual(['gateway']);
    expect(ipam.releaseOwned('ep')).toBe(0);
    expect(ipam.releaseOwned('nobody')).toBe(0);
    refuse(() => ipam.releaseOwned(''), 'invalid-argument');
    // The freed addresses are free again, lowest first.
    expect(next(p1.id)).toBe('10.0.0.2');
    expect(ipam.requestAddress(p2.id, { address: 'fd00:1::10' }).toString()).toBe('fd00:1::10');
  });

  it('listPools filters by owner, oldest first', () => {
    const a = ipam.requestPool({ subnet: '10.0.0.0/24', owner: 'n1' });
    ipam.requestPool({ subnet: '10.0.1.0/24', owner: 'n2' });
    ipam.requestPool({ subnet: '10.0.2.0/24' });
    const c = ipam.requestPool({ v6: true, owner: 'n1' });
    expect(ipam.listPools({ owner: 'n1' }).map((p) => p.id)).toEqual([a.id, c.id]);
    expect(ipam.listPools({ owner: 'none' })).toEqual([]);
    expect(ipam.listPools({})).toHaveLength(4);
    expect(ipam.listPools()).toHaveLength(4);
  });
});

describe("migration 'ipam-2'", () => {
  it('upgrades a database written with only ipam-1', () => {
    // A fresh database with the old schema, filled as the old code filled it.
    const oldDir = mkdtempSync(join(tmpdir(), 'tnet-ipam-old-'));
    try {
      let old = openDb(oldDir);
      migrate(old, [migrations[0]!]);
      expect(migrations[0]!.id).toBe('ipam-1');
      const k = (s: string) => {
        const v = s.includes(':') ? Subnet.parse(`${s}/128`).network : Subnet.parse(`${s}/32`).network;
        const b = Buffer.alloc(16);
        b.writeBigUInt64BE(v >> 64n, 0);
        b.writeBigUInt64BE(v & 0xffff_ffff_ffff_ffffn, 8);
        return b;
      };
      const pool = old.prepare(
        `INSERT INTO ipam_pools (id, address_space, family, subnet, range, gateway, aux, owner, shared, share_key, refs, options)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}')`,
      );
      const addr = old.prepare('INSERT INTO ipam_addresses (pool, addr, kind, owner) VALUES (?, ?, ?, ?)');
      const free = old.prepare('INSERT INTO ipam_free (pool, lo, hi) VALUES (?, ?, ?)');
      pool.run('A', 'local', 4, '10.0.0.0/24', '10.0.0.0/24', '10.0.0.1', '{"r":"10.0.0.9"}', 'net-a', 0, null, 1);
      addr.run('A', k('10.0.0.1'), 'gateway', null);
      addr.run('A', k('10.0.0.2'), 'dynamic', 'ep1');
      addr.run('A', k('10.0.0.9'), 'aux', 'r');
      addr.run('A', k('10.0.0.10'), 'static', 'ep1');
      addr.run('A', k('10.0.0.11'), 'held', 'ep2');
      free.run('A', k('10.0.0.3'), k('10.0.0.8'));
      free.run('A', k('10.0.0.12'), k('10.0.0.254'));
      pool.run('B', 'docker:LocalDefault', 4, '172.17.0.0/16', '172.17.0.0/16', null, '{}', 'docker network x', 0, null, 1);
      free.run('B', k('172.17.0.1'), k('172.17.255.254'));
      const shareKey = JSON.stringify(['tnet-local', '10.60.0.0/24', '10.60.0.128/25', null, []]);
      pool.run('S', 'tnet-local', 4, '10.60.0.0/24', '10.60.0.128/25', null, '{}', 'docker', 1, shareKey, 2);
      free.run('S', k('10.60.0.1'), k('10.60.0.254'));
      pool.run('G', 'tnet-global', 4, '10.99.0.0/24', '10.99.0.0/24', '10.99.0.1', '{}', 'overlay', 0, null, 1);
      addr.run('G', k('10.99.0.1'), 'gateway', null);
      free.run('G', k('10.99.0.2'), k('10.99.0.254'));
      pool.run('V', 'local', 6, 'fd00:1::/64', 'fd00:1::/64', 'fd00:1::1', '{}', 'net-a', 0, null, 1);
      addr.run('V', k('fd00:1::1'), 'gateway', null);
      addr.run('V', k('fd00:1::2'), 'dynamic', 'ep1');
      free.run('V', k('fd00:1::3'), k('fd00:1::ffff:ffff:ffff:ffff'));
      old.close();

      old = openDb(oldDir);
      const up = new Ipam(old, { ulaSeed: 'test-host' });
      const applied = old.prepare("SELECT id FROM migrations WHERE id LIKE 'ipam-%' ORDER BY id").all();
      expect(applied).toEqual([{ id: 'ipam-1' }, { id: 'ipam-2' }]);
      expect(old.prepare('SELECT count(*) AS n FROM ipam_pools WHERE first_addr IS NULL OR domain IS NULL').get()).toEqual({ n: 0 });
      expect(up.listPools().map((p) => [p.id, sub(p), p.addressSpace, p.childrenOnly, p.parent])).toEqual([
        ['A', '10.0.0.0/24', 'local', false, undefined],
        ['B', '172.17.0.0/16', 'docker:LocalDefault', false, undefined],
        ['S', '10.60.0.0/24', 'tnet-local', false, undefined],
        ['G', '10.99.0.0/24', 'tnet-global', false, undefined],
        ['V', 'fd00:1::/64', 'local', false, undefined],
      ]);
      // The index knows the old pools: overlaps are refused, auto-choice skips them.
      const swap = db;
      db = old; // checkSpace reads `db`
      try {
        checkSpace();
      } finally {
        db = swap;
      }
      expect(refuse(() => up.requestPool({ subnet: '10.0.0.128/25' }), 'conflict').message).toContain('pool A');
      expect(refuse(() => up.requestPool({ subnet: '172.17.5.0/24' }), 'conflict').message).toContain('pool B');
      expect(refuse(() => up.requestPool({ subnet: '10.99.0.0/25', addressSpace: 'global' }), 'conflict').message).toContain('pool G');
      expect(refuse(() => up.requestPool({ subnet: 'fd00:1::/48' }), 'conflict').message).toContain('pool V');
      expect(sub(up.requestPool({}))).toBe('172.18.0.0/16');
      expect(sub(up.requestPool({ subnet: '10.99.0.0/24', owner: 'lab' }))).toBe('10.99.0.0/24'); // other domain now
      // Shared pools are still joined by an identical request.
      const joined = up.requestPool({ addressSpace: 'tnet-local', subnet: '10.60.0.0/24', ipRange: '10.60.0.128/25', noGateway: true, shared: true });
      expect([joined.id, joined.refs]).toEqual(['S', 3]);
      // Addresses carry on where the old code left them.
      expect(up.requestAddress('A').toString()).toBe('10.0.0.3');
      refuse(() => up.requestAddress('A', { address: '10.0.0.11', owner: 'x' }), 'conflict');
      expect(up.requestAddress('A', { address: '10.0.0.11', owner: 'ep2' }).toString()).toBe('10.0.0.11');
      expect(up.releaseOwned('ep1')).toBe(3); // .2 and .10 in A, ::2 in V
      expect(up.requestAddress('A').toString()).toBe('10.0.0.2');
      // Releasing an old pool frees its subnet.
      expect(up.releasePool('A')).toBe(0);
      expect(sub(up.requestPool({ subnet: '10.0.0.0/23' }))).toBe('10.0.0.0/23');
      old.close();
      // Opening again changes nothing.
      old = openDb(oldDir);
      const before = old.prepare('SELECT scope, lo, hi FROM ipam_space ORDER BY scope, lo').all();
      new Ipam(old);
      expect(old.prepare('SELECT scope, lo, hi FROM ipam_space ORDER BY scope, lo').all()).toEqual(before);
      old.close();
    } finally {
      rmSync(oldDir, { recursive: true, force: true });
    }
  });
});

describe('LocalAllocator', () => {
  it('is the Ipam behind promises; errors are rejections with the same codes', async () => {
    const alloc: Allocator = new LocalAllocator(ipam);
    const parent = await alloc.requestPool({ subnet: '10.128.0.0/24', childrenOnly: true, owner: 'lab' });
    const link = await alloc.requestPool({ parent: parent.id, prefixLength: 31, noGateway: true, owner: 'lab' });
    expect(sub(link)).toBe('10.128.0.0/31');
    expect(await alloc.getPool(link.id)).toEqual(link);
    expect((await alloc.listPools({ owner: 'lab' })).map((p) => p.id)).toEqual([parent.id, link.id]);
    expect(await alloc.listPools()).toHaveLength(2);
    expect((await alloc.requestAddress(link.id, { owner: 'r1' })).toString()).toBe('10.128.0.0');
    expect((await alloc.requestAddress(link.id, { address: '10.128.0.1', owner: 'r2' })).toString()).toBe('10.128.0.1');
    await alloc.releaseAddress(link.id, '10.128.0.1');
    expect((await alloc.holdAddress(link.id, '10.128.0.1', 'r2')).toString()).toBe('10.128.0.1');
    expect((await alloc.listAddresses(link.id)).map((a) => a.kind)).toEqual(['dynamic', 'held']);
    expect(await alloc.releaseOwned('r1')).toBe(1);
    const codes = async (p: Promise<unknown>) =>
      p.then(
        () => 'resolved',
        (e: unknown) => (e instanceof TnetError ? e.code : String(e)),
      );
    expect(await codes(alloc.getPool('nope'))).toBe('not-found');
    expect(await codes(alloc.releasePool(parent.id))).toBe('busy');
    expect(await codes(alloc.requestAddress(parent.id))).toBe('invalid-argument');
    expect(await codes(alloc.requestPool({ subnet: '10.128.0.0/25' }))).toBe('conflict');
    expect(await alloc.releasePool(link.id)).toBe(0);
    expect(await alloc.releasePool(parent.id)).toBe(0);
    expect(await alloc.listPools()).toEqual([]);
  });
});
