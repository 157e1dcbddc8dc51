/**
 * The encrypted overlay's key ring in the global store (drivers/overlay/keys.ts) on the in-memory
 * cluster, several clients playing several hosts; and the pure parts of the IPsec plane
 * (drivers/overlay/encryption.ts, libnetwork/kernel/xfrm.ts): SPIs, the nft rules, the policy
 * listing parser.
 */
import { inspect } from 'node:util';
import { afterEach, describe, expect, it } from 'vitest';
import { ClusterKeys, ENCRYPTION_KEYS, EncryptionKey, KeyRing, RING_SIZE, decodeRing, encodeRing } from '../../drivers/overlay/keys.js';
import { IPSEC_MARK, buildSpi, ipsecRules, ipsecTableName, planRemotes } from '../../drivers/overlay/encryption.js';
import { parsePolicies } from '../../libnetwork/kernel/xfrm.js';
import { MemoryCluster, MemoryGlobalStore } from '../../libnetwork/store/memory-global.js';

const open: MemoryGlobalStore[] = [];
const clusters: MemoryCluster[] = [];
afterEach(async () => {
  for (const s of open.splice(0)) await s.close();
  for (const c of clusters.splice(0)) c.shutdown();
});

async function hosts(n: number): Promise<{ cluster: MemoryCluster; stores: MemoryGlobalStore[]; keys: ClusterKeys[] }> {
  const cluster = new MemoryCluster('memory://keys');
  clusters.push(cluster);
  const stores: MemoryGlobalStore[] = [];
  for (let i = 0; i < n; i++) stores.push(await MemoryGlobalStore.open(cluster, { ttl: 5 }));
  open.push(...stores);
  return { cluster, stores, keys: stores.map((s) => new ClusterKeys(s)) };
}

/** The material of a ring, comparable across hosts. */
const material = (r: KeyRing) => r.keys.map((k) => `${k.tag}:${k.aeadKey().toString('hex')}`);
const until = async (fn: () => boolean, ms = 2000) => {
  const end = Date.now() + ms;
  while (!fn() && Date.now() < end) await new Promise((r) => setTimeout(r, 5));
  return fn();
};

describe('key ring', () => {
  it('two hosts making the ring at once end with one ring of three 16+4-byte keys; the primary is the middle one', async () => {
    const { keys, stores } = await hosts(2);
    const [a, b] = await Promise.all([keys[0]!.ensure(), keys[1]!.ensure()]);
    expect(material(a)).toEqual(material(b));
    expect(a.keys).toHaveLength(RING_SIZE);
    expect(a.tags).toEqual([1, 2, 3]);
    expect(a.primary.tag).toBe(2);
    for (const k of a.keys) expect(k.aeadKey()).toHaveLength(20);
    expect(new Set(a.keys.map((k) => k.aeadKey().toString('hex'))).size).toBe(3);
    const stored = await stores[1]!.get(ENCRYPTION_KEYS);
    expect(material(decodeRing(stored!))).toEqual(material(a));
    expect(a.revision).toBe(stored!.modRevision);
  });

  it('a rotation drops the oldest key and adds one; the new primary was already in the old ring, never the newest', async () => {
    const { keys } = await hosts(1);
    let ring = await keys[0]!.ensure();
    for (let i = 0; i < 4; i++) {
      const { ring: next, rotated } = await keys[0]!.rotate(ring);
      expect(rotated).toBe(true);
      expect(next.tags).toEqual([...ring.tags.slice(1), ring.tags.at(-1)! + 1]);
      expect(ring.tags).toContain(next.primary.tag);
      expect(next.primary.tag).not.toBe(next.tags.at(-1));
      // the kept keys are the same bytes; the new one is new
      expect(material(next).slice(0, 2)).toEqual(material(ring).slice(1));
      expect(material(ring).map((m) => m.split(':')[1])).not.toContain(material(next)[2]!.split(':')[1]);
      ring = next;
    }
    expect((await keys[0]!.get())!.revision).toBe(ring.revision);
  });

  it('concurrent rotations from the same ring: one wins, the other re-reads and returns the winner\'s ring', async () => {
    const { keys } = await hosts(3);
    const start = await keys[0]!.ensure();
    const results = await Promise.all(keys.map((k) => k.rotate(start)));
    expect(results.filter((r) => r.rotated)).toHaveLength(1);
    const winner = results.find((r) => r.rotated)!.ring;
    for (const r of results) expect(material(r.ring)).toEqual(material(winner));
    expect(winner.tags).toEqual([2, 3, 4]);
    expect(material((await keys[2]!.get())!)).toEqual(material(winner));
  });

  it('rotateIfOlder rotates only a ring past its age, once across hosts', async () => {
    let now = 1_000_000;
    const { stores } = await hosts(2);
    const [a, b] = stores.map((s) => new ClusterKeys(s, { now: () => now }));
    const first = await a!.ensure();
    expect(first.rotatedAt).toBe(now);
    now += 1000;
    expect((await b!.rotateIfOlder(5000)).rotated).toBe(false);
    now += 5000;
    const both = await Promise.all([a!.rotateIfOlder(5000), b!.rotateIfOlder(5000)]);
    expect(both.filter((r) => r.rotated)).toHaveLength(1);
    expect((await a!.get())!.tags).toEqual([2, 3, 4]);
  });

  it('a watch delivers the ring, every rotation by another host once, a resync after compaction without repeats, and remakes a deleted ring', async () => {
    const { cluster, keys, stores } = await hosts(2);
    const first = await keys[0]!.ensure();
    const seen: KeyRing[] = [];
    const w = keys[1]!.watch((r) => seen.push(r));
    expect(await until(() => seen.length === 1)).toBe(true);
    expect(material(seen[0]!)).toEqual(material(first));
    const { ring: second } = await keys[0]!.rotate();
    expect(await until(() => seen.length === 2)).toBe(true);
    expect(material(seen[1]!)).toEqual(material(second));
    // A change the watch has not caught up with is compacted away: it resyncs and gets the ring once.
    const third = new KeyRing([...second.keys.slice(1), new EncryptionKey(5, Buffer.alloc(16, 5), Buffer.alloc(4, 5))], 0, 0);
    cluster.commit([], [{ put: ENCRYPTION_KEYS, value: encodeRing(third.keys, 0) }], '0');
    cluster.compact();
    expect(await until(() => seen.length === 3)).toBe(true);
    expect(seen[2]!.tags).toEqual([3, 4, 5]);
    // Another resync with the ring unchanged delivers nothing new.
    cluster.commit([], [{ put: '/tnet/v1/other', value: 'x' }], '0');
    cluster.compact();
    cluster.commit([], [{ put: ENCRYPTION_KEYS + '-not-the-ring', value: 'x' }], '0');
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toHaveLength(3);
    // Deleted (someone cleared the store): the watching host makes a new ring, and hears of it.
    await stores[0]!.delete(ENCRYPTION_KEYS);
    expect(await until(() => seen.length === 4)).toBe(true);
    expect(seen[3]!.tags).toEqual([1, 2, 3]);
    expect(material((await keys[0]!.get())!)).toEqual(material(seen[3]!));
    await w.close();
  });

  it('key material never shows in JSON, inspect or String; a malformed ring is named without its content', async () => {
    const { keys, stores } = await hosts(1);
    const ring = await keys[0]!.ensure();
    const raw = (await stores[0]!.get(ENCRYPTION_KEYS))!.value;
    const secrets = (JSON.parse(raw) as { keys: { key: string; salt: string }[] }).keys.flatMap((k) => [k.key, k.salt, Buffer.from(k.key, 'base64').toString('hex')]);
    expect(secrets).toHaveLength(9);
    for (const text of [JSON.stringify(ring), JSON.stringify({ ring, keys: ring.keys }), inspect(ring, { depth: 9 }), inspect(ring.keys, { depth: 9 }), String(ring.primary)]) {
      for (const s of secrets) expect(text).not.toContain(s);
    }
    expect(JSON.parse(JSON.stringify(ring))).toEqual({ tags: [1, 2, 3], primary: 2, revision: ring.revision });
    const broken = JSON.stringify({ version: 1, rotatedAt: 0, keys: [{ tag: 1, key: 'c2VjcmV0LXNob3J0', salt: 'AAAA' }] });
    await stores[0]!.put(ENCRYPTION_KEYS, broken);
    const err = await keys[0]!.get().then(() => undefined, (e: unknown) => e as Error);
    expect(err?.message).toMatch(/encryption key ring at \/tnet\/v1\/encryption\/keys .* malformed: key 1 is not 16 bytes/);
    expect(err?.message).not.toContain('c2VjcmV0LXNob3J0');
    await stores[0]!.put(ENCRYPTION_KEYS, 'not json');
    await expect(keys[0]!.get()).rejects.toThrow(/malformed: not JSON/);
  });
});

describe('IPsec plane, the pure parts', () => {
  it('SPIs are FNV-1a-32 over src, tag (4 bytes BE) and dst in Go\'s 16-byte form, as libnetwork buildSPI', () => {
    // Vectors computed independently (Python: fnv1a32(ip16(src) + pack(">I", tag) + ip16(dst))).
    expect(buildSpi('10.0.0.1', '10.0.0.2', 2)).toBe(0x16f2646a);
    expect(buildSpi('10.0.0.2', '10.0.0.1', 2)).toBe(0x6a7fc98a);
    expect(buildSpi('fd00::1', 'fd00:0:0:1::2', 7)).toBe(0x6b20e09a);
    expect(buildSpi('10.0.0.1', '10.0.0.2', 3)).not.toBe(buildSpi('10.0.0.1', '10.0.0.2', 2));
  });

  it('the nft rules mark, send-drop and receive-drop each encrypted VNI, replacing the table in one transaction', () => {
    const table = ipsecTableName('ab12');
    expect(table).toBe('tnet-ab12.ipsec');
    expect(ipsecTableName('')).toBe('tnet.ipsec');
    const cmds = ipsecRules(table, [300, 256]);
    expect(cmds.slice(0, 3).map((c) => Object.keys(c)[0])).toEqual(['add', 'delete', 'add']);
    const rules = cmds.filter((c) => (c.add as { rule?: unknown } | undefined)?.rule).map((c) => (c.add as { rule: { chain: string; comment: string; expr: unknown[] } }).rule);
    expect(rules.map((r) => `${r.chain} ${r.comment}`)).toEqual(['output vni 256', 'postrouting vni 256', 'input vni 256', 'output vni 300', 'postrouting vni 300', 'input vni 300']);
    const text = (chain: string, vni: number) => JSON.stringify(rules.find((r) => r.chain === chain && r.comment === `vni ${vni}`)!.expr);
    expect(text('output', 300)).toContain('{"payload":{"base":"th","offset":96,"len":24}},"right":300}');
    expect(text('output', 300)).toContain(`"value":${IPSEC_MARK}`);
    expect(text('input', 256)).toContain('{"meta":{"key":"ipsec"}},"right":false}},{"drop":null}');
    expect(text('postrouting', 256)).toContain('{"rt":{"key":"ipsec"}},"right":false}},{"drop":null}');
    const chains = cmds.filter((c) => (c.add as { chain?: unknown } | undefined)?.chain).map((c) => (c.add as { chain: { name: string; type: string; hook: string } }).chain);
    expect(chains.find((c) => c.name === 'output')).toMatchObject({ type: 'route', hook: 'output' });
  });

  it('a rotation, as batches for a kernel with ESP: receive first, then send, the policy swapped in place, removals last', () => {
    const L = '192.0.2.1';
    const [A, B] = ['192.0.2.2', '192.0.2.3'];
    const key = (tag: number) => new EncryptionKey(tag, Buffer.alloc(16, tag), Buffer.alloc(4, 0x40 + tag));
    const spi = (s: string, d: string, tag: number) => `0x${buildSpi(s, d, tag).toString(16)}`;
    const ring1 = new KeyRing([key(1), key(2), key(3)], 1, 0);
    const first = planRemotes(L, new Map(), [A, B], ring1, true);
    const steps = (p: { cmds: { line: string }[] }) => p.cmds.map((c) => c.line.replace(/^xfrm (\w+ \w+) src (\S+) dst (\S+).* spi (0x[0-9a-f]+).*$/, '$1 $2>$3 $4'));
    const rx = (r: string, tag: number) => `state add ${r}>${L} ${spi(r, L, tag)}`;
    const tx = (r: string, tag: number) => `state add ${L}>${r} ${spi(L, r, tag)}`;
    const pol = (r: string, tag: number) => `policy update ${L}/32>${r}/32 ${spi(L, r, tag)}`;
    expect(steps(first)).toEqual([rx(A, 1), rx(A, 2), rx(A, 3), tx(A, 2), pol(A, 2), rx(B, 1), rx(B, 2), rx(B, 3), tx(B, 2), pol(B, 2)]);
    // The SA carries key + salt of its tag, with the AEAD and ICV libnetwork uses; only SA adds carry key material.
    const add = first.cmds[3]!.line;
    expect(add).toContain(`aead 'rfc4106(gcm(aes))' 0x${'02'.repeat(16)}${'42'.repeat(4)} 64`);
    expect(add).toContain('reqid 0xd0c4e3 mode transport');
    expect(first.cmds.filter((c) => /02020202/.test(c.line)).every((c) => c.line.startsWith('xfrm state add'))).toBe(true);
    for (const c of first.cmds) expect(c.what).not.toMatch(/0202020202/);

    const ring2 = new KeyRing([key(2), key(3), key(4)], 2, 0);
    const second = planRemotes(L, first.next, [A], ring2, true);
    const del = (s: string, d: string, tag: number) => `state delete ${s}>${d} ${spi(s, d, tag)}`;
    expect(steps(second)).toEqual([
      rx(A, 4), tx(A, 3), pol(A, 3), del(L, A, 2), del(A, L, 1),
      // B left: its policy first, then its SAs
      `xfrm policy delete src ${L}/32 dst ${B}/32 proto udp dport 4789 dir out mark 0xd0c4e3 mask 0xffffffff`,
      del(L, B, 2), del(B, L, 1), del(B, L, 2), del(B, L, 3),
    ]);
    expect([...second.next]).toEqual([[A, { primary: 3, rx: new Set([2, 3, 4]) }]]);
    // Policies only (a kernel without ESP): the same policy steps, no SA.
    expect(steps(planRemotes(L, new Map(), [A], ring1, false))).toEqual([pol(A, 2)]);
  });

  it('parses iproute2\'s policy listing', () => {
    const text = [
      'src 192.0.2.1/32 dst 192.0.2.2/32 proto udp dport 4789 ',
      '\tdir out priority 0 ptype main ',
      '\tmark 0xd0c4e3/0xffffffff ',
      '\ttmpl src 192.0.2.1 dst 192.0.2.2',
      '\t\tproto esp spi 0x00001235 reqid 13681891 mode transport',
      'src fd00::1/128 dst fd00::2/128 ',
      '\tdir in priority 5 ptype main ',
      '',
    ].join('\n');
    expect(parsePolicies(text)).toEqual([
      {
        src: '192.0.2.1',
        dst: '192.0.2.2',
        proto: 'udp',
        dport: 4789,
        dir: 'out',
        mark: { value: 0xd0c4e3, mask: 0xffffffff },
        tmpls: [{ src: '192.0.2.1', dst: '192.0.2.2', proto: 'esp', spi: 0x1235, reqid: 13681891, mode: 'transport' }],
      },
      { src: 'fd00::1', dst: 'fd00::2', proto: undefined, dport: undefined, dir: 'in', mark: undefined, tmpls: [] },
    ]);
  });
});
