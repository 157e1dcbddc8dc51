import * as dnsPacket from 'dns-packet';
import { beforeEach, describe, expect, it } from 'vitest';
import { type Msg, decode } from './dns-msg.js';
import { DnsServer } from '../../dns/index.js';



// Answer logic through DnsServer.query(): the same path as the sockets (parse, scope, cache,
// encode), no sockets. Upstreams point at TEST-NET-1 port 9 with a tiny timeout, so a query that
// is forwarded shows up in stats.forwarded and comes back SERVFAIL quickly.

type Q = { name: string; type?: string; id?: number; flags?: number; edns?: number | null; do?: boolean };

function query(q: Q): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: q.id ?? 0x1234,
    flags: q.flags ?? dnsPacket.RECURSION_DESIRED,
    questions: [{ name: q.name, type: (q.type ?? 'A') as 'A', class: 'IN' }],
    additionals:
      q.edns === undefined || q.edns === null
        ? []
        : [
            {
              name: '.',
              type: 'OPT',
              udpPayloadSize: q.edns,
              extendedRcode: 0,
              ednsVersion: 0,
              flags: q.do ? dnsPacket.DNSSEC_OK : 0,
              flag_do: !!q.do,
              options: [],
            },
          ],
  });
}

const SB1 = { sandboxId: 'sb1' };
const SB2 = { sandboxId: 'sb2' };
const SB3 = { sandboxId: 'sb3' };

let s: DnsServer;

async function ask(scope: { sandboxId: string } | { networkId: string }, q: Q, opts: { tcp?: boolean; clientAddress?: string } = {}) {
  const raw = await s.query(query(q), scope, opts);
  expect(raw).not.toBeNull();
  return { raw: raw!, msg: decode(raw!) };
}

const addrs = (m: Msg) => m.answers.map((a) => (a as { data: string }).data).sort();

beforeEach(() => {
  s = new DnsServer({ upstreams: ['192.0.2.1:9'], upstreamTimeoutMs: 50, forwardDeadlineMs: 100 });
  s.setNetwork({ networkId: 'n1', name: 'front', internal: false, subnets: ['10.1.0.0/24', 'fd01::/64'] });
  s.setNetwork({ networkId: 'n2', name: 'back', internal: false, subnets: ['10.2.0.0/24'] });
  s.setNetwork({ networkId: 'n3', name: 'vault', internal: true, subnets: ['10.3.0.0/24'] });
  s.setEndpoint({ endpointId: 'e1', networkId: 'n1', names: ['web', 'www'], ipv4: '10.1.0.2', ipv6: 'fd01::2', sandboxId: 'sb1' });
  s.setEndpoint({ endpointId: 'e2', networkId: 'n1', names: ['api', 'www'], ipv4: '10.1.0.3', sandboxId: 'sb2' });
  s.setEndpoint({ endpointId: 'e3', networkId: 'n2', names: ['db'], ipv4: '10.2.0.4', sandboxId: 'sb2' });
  s.setEndpoint({ endpointId: 'e4', networkId: 'n3', names: ['secret'], ipv4: '10.3.0.5', sandboxId: 'sb3' });
  s.setSandboxNetworks('sb1', ['n1']);
  s.setSandboxNetworks('sb2', ['n1', 'n2']);
  s.setSandboxNetworks('sb3', ['n3']);
});

describe('dns answers', () => {
  it('answers A for a name, name.network and any case, keeping the client spelling and ID', async () => {
    for (const name of ['web', 'web.front', 'WeB.FrOnT', 'WEB']) {
      const { msg } = await ask(SB1, { name, id: 777 });
      expect(msg.rcode).toBe('NOERROR');
      expect(msg.id).toBe(777);
      expect(msg.flag_aa).toBe(true);
      expect(msg.flag_rd).toBe(true);
      expect(msg.questions[0]!.name).toBe(name);
      expect(addrs(msg)).toEqual(['10.1.0.2']);
      expect(msg.answers[0]!.name).toBe(name); // owner points at the question
      expect(msg.answers[0]!.ttl).toBe(5);
    }
  });

  it('answers AAAA, and a known name without that family with an empty NOERROR (not forwarded)', async () => {
    expect(addrs((await ask(SB1, { name: 'web', type: 'AAAA' })).msg)).toEqual(['fd01::2']);
    const before = s.stats.forwarded;
    const { msg } = await ask(SB1, { name: 'api.front', type: 'AAAA' });
    expect(msg.rcode).toBe('NOERROR');
    expect(msg.answers).toEqual([]);
    const mx = await ask(SB1, { name: 'api', type: 'MX' });
    expect(mx.msg.rcode).toBe('NOERROR');
    expect(mx.msg.answers).toEqual([]);
    expect(s.stats.forwarded).toBe(before);
  });

  it('answers PTR for IPv4 and IPv6 addresses with name.network', async () => {
    const v4 = await ask(SB1, { name: '2.0.1.10.in-addr.arpa', type: 'PTR' });
    expect(v4.msg.answers.map((a) => a.data)).toEqual(['web.front']);
    const v6name = `2.0.${'0.'.repeat(26)}1.0.d.f.ip6.arpa`; // fd01::2
    const v6 = await ask(SB1, { name: v6name, type: 'PTR' });
    expect(v6.msg.answers.map((a) => a.data)).toEqual(['web.front']);
    // the PTR name exists: A for it is NODATA, not forwarded
    const a = await ask(SB1, { name: '2.0.1.10.in-addr.arpa', type: 'A' });
    expect(a.msg.rcode).toBe('NOERROR');
    expect(a.msg.answers).toEqual([]);
  });

  it('gives every endpoint sharing an alias, shuffled across answers', async () => {
    const firsts = new Set<string>();
    for (let i = 0; i < 200; i++) {
      const { msg } = await ask(SB1, { name: 'www', id: i });
      expect(addrs(msg)).toEqual(['10.1.0.2', '10.1.0.3']);
      firsts.add((msg.answers[0] as { data: string }).data);
    }
    expect(firsts).toEqual(new Set(['10.1.0.2', '10.1.0.3']));
    expect(s.stats.cacheHits).toBeGreaterThanOrEqual(199); // shuffled from the cache, not re-encoded
  });

  it('shuffles many records fairly enough (every address comes first sometimes)', async () => {
    for (let i = 0; i < 8; i++) s.setEndpoint({ endpointId: `m${i}`, networkId: 'n1', names: ['many'], ipv4: `10.1.0.${100 + i}` });
    const firsts = new Map<string, number>();
    for (let i = 0; i < 800; i++) {
      const { msg } = await ask(SB1, { name: 'many' });
      expect(msg.answers).toHaveLength(8);
      const f = (msg.answers[0] as { data: string }).data;
      firsts.set(f, (firsts.get(f) ?? 0) + 1);
    }
    expect(firsts.size).toBe(8);
    for (const n of firsts.values()) expect(n).toBeGreaterThan(40); // expected 100 each
  });

  it('scopes answers to the networks of the asking sandbox', async () => {
    // sb2 is on n1 and n2; sb1 only on n1
    expect(addrs((await ask(SB2, { name: 'db' })).msg)).toEqual(['10.2.0.4']);
    expect(addrs((await ask(SB2, { name: 'web.front' })).msg)).toEqual(['10.1.0.2']);
    const before = s.stats.forwarded;
    const { msg } = await ask(SB1, { name: 'db' });
    expect(msg.answers).toEqual([]);
    // a single-label name that is no peer here: NXDOMAIN at once, never forwarded (the upstream
    // would only learn the names of other networks' containers)
    expect(msg.rcode).toBe('NXDOMAIN');
    expect((await ask(SB1, { name: 'DB', type: 'AAAA' })).msg.rcode).toBe('NXDOMAIN');
    expect(s.stats.forwarded).toBe(before);
    // `back` is not sb1's network, but it is tnet's zone: NXDOMAIN as for any name that does not
    // exist, and never forwarded (the upstream would learn the name of another network's container)
    const other = await ask(SB1, { name: 'db.back' });
    expect(other.msg.rcode).toBe('NXDOMAIN');
    expect(other.msg.authorities).toEqual([]); // nothing about `back` shows
    expect(s.stats.forwarded).toBe(before);
    // other types of a single label (a TLD's SOA, NS, DS) are forwarded as usual
    expect((await ask(SB1, { name: 'com', type: 'SOA' })).msg.rcode).toBe('SERVFAIL');
    expect(s.stats.forwarded).toBe(before + 1);
    // sb3 (internal network only) never sees n1: the same NXDOMAIN, under n1's zone too (tnet's own);
    // another dotted name is REFUSED (never forwarded from internal networks)
    expect((await ask(SB3, { name: 'web' })).msg.rcode).toBe('NXDOMAIN');
    expect((await ask(SB3, { name: 'web.front' })).msg.rcode).toBe('NXDOMAIN');
    expect((await ask(SB3, { name: 'web.example' })).msg.rcode).toBe('REFUSED');
  });

  it('answers NXDOMAIN for unknown names under a network of the scope, NODATA at the apex', async () => {
    const before = s.stats.forwarded;
    const nx = await ask(SB1, { name: 'nope.front' });
    expect(nx.msg.rcode).toBe('NXDOMAIN');
    expect(nx.msg.authorities[0]).toMatchObject({ type: 'SOA', name: 'front', ttl: 0 });
    const apex = await ask(SB1, { name: 'front' });
    expect(apex.msg.rcode).toBe('NOERROR');
    expect(apex.msg.answers).toEqual([]);
    expect(s.stats.forwarded).toBe(before);
  });

  it('never forwards from a scope whose networks are all internal', async () => {
    expect(addrs((await ask(SB3, { name: 'secret' })).msg)).toEqual(['10.3.0.5']);
    const before = s.stats.forwarded;
    const { msg } = await ask(SB3, { name: 'example.com' });
    expect(msg.rcode).toBe('REFUSED');
    expect(msg.flag_ra).toBe(false);
    expect(s.stats.forwarded).toBe(before);
    // a network the controller has not registered yet counts as internal (fail closed)
    s.setEndpoint({ endpointId: 'e9', networkId: 'n9', networkName: 'later', names: ['x'], ipv4: '10.9.0.2' });
    s.setSandboxNetworks('sb9', ['n9']);
    expect(addrs((await ask({ sandboxId: 'sb9' }, { name: 'x.later' })).msg)).toEqual(['10.9.0.2']);
    expect((await ask({ sandboxId: 'sb9' }, { name: 'example.com' })).msg.rcode).toBe('REFUSED');
  });

  it('shows joins, leaves, renames and removals in the very next answer', async () => {
    expect(addrs((await ask(SB1, { name: 'web' })).msg)).toEqual(['10.1.0.2']);
    expect(addrs((await ask(SB1, { name: 'web' })).msg)).toEqual(['10.1.0.2']); // cached
    // rename the endpoint
    s.setEndpoint({ endpointId: 'e1', networkId: 'n1', names: ['frontend'], ipv4: '10.1.0.2', sandboxId: 'sb1' });
    expect(addrs((await ask(SB1, { name: 'frontend.front' })).msg)).toEqual(['10.1.0.2']);
    expect((await ask(SB1, { name: 'web.front' })).msg.rcode).toBe('NXDOMAIN');
    // new address
    s.setEndpoint({ endpointId: 'e1', networkId: 'n1', names: ['frontend'], ipv4: '10.1.0.9', sandboxId: 'sb1' });
    expect(addrs((await ask(SB1, { name: 'frontend' })).msg)).toEqual(['10.1.0.9']);
    // rename the network
    s.setNetwork({ networkId: 'n1', name: 'edge', internal: false, subnets: ['10.1.0.0/24'] });
    expect(addrs((await ask(SB1, { name: 'frontend.edge' })).msg)).toEqual(['10.1.0.9']);
    expect((await ask(SB1, { name: 'frontend.front' })).msg.rcode).toBe('SERVFAIL'); // no longer a zone of ours: forwarded
    expect((await ask(SB1, { name: '9.0.1.10.in-addr.arpa', type: 'PTR' })).msg.answers[0]!.data).toBe('frontend.edge');
    // leave
    s.removeEndpoint('e1');
    expect((await ask(SB1, { name: 'frontend.edge' })).msg.rcode).toBe('NXDOMAIN');
    // a sandbox's networks change
    s.setSandboxNetworks('sb1', ['n1', 'n2']);
    expect(addrs((await ask(SB1, { name: 'db' })).msg)).toEqual(['10.2.0.4']);
    // a deleted sandbox's names are gone
    s.removeSandbox('sb2');
    expect((await ask(SB1, { name: 'api.edge' })).msg.rcode).toBe('NXDOMAIN');
    expect((await ask(SB1, { name: 'db.back' })).msg.rcode).toBe('NXDOMAIN');
    // a removed network takes its names with it
    s.removeNetwork('n3');
    s.setSandboxNetworks('sb3', ['n3']);
    expect((await ask(SB3, { name: 'secret' })).msg.rcode).toBe('NXDOMAIN'); // a single label: not forwarded either way
    expect((await ask(SB3, { name: 'secret.priv' })).msg.rcode).toBe('REFUSED');
  });

  it('serves a repeated question from the cache: same answer, the client ID', async () => {
    const a = (await ask(SB1, { name: 'web.front', id: 1 })).raw;
    const hits = s.stats.cacheHits;
    const b = (await ask(SB1, { name: 'web.front', id: 2 })).raw;
    expect(s.stats.cacheHits).toBe(hits + 1);
    expect(b.readUInt16BE(0)).toBe(2);
    expect(b.subarray(2)).toEqual(a.subarray(2));
    // RD and CD come from each client, not from the cached answer
    const noRd = await ask(SB1, { name: 'web.front', flags: dnsPacket.CHECKING_DISABLED });
    expect(noRd.msg.flag_rd).toBe(false);
    expect(noRd.msg.flag_cd).toBe(true);
  });

  it('honours the EDNS UDP size and truncates with TC; TCP gets everything', async () => {
    for (let i = 0; i < 60; i++) s.setEndpoint({ endpointId: `big${i}`, networkId: 'n1', names: ['big'], ipv4: `10.1.1.${i + 1}` });
    const plain = await ask(SB1, { name: 'big.front' });
    expect(plain.raw.length).toBeLessThanOrEqual(512);
    expect(plain.msg.flag_tc).toBe(true);
    expect(plain.msg.answers.length).toBeGreaterThan(20);
    expect(plain.msg.answers.length).toBeLessThan(60);
    expect(plain.msg.additionals).toEqual([]);
    const edns = await ask(SB1, { name: 'big.front', edns: 1232 });
    expect(edns.msg.flag_tc).toBe(false);
    expect(edns.msg.answers).toHaveLength(60);
    expect(edns.msg.additionals[0]).toMatchObject({ type: 'OPT', udpPayloadSize: 4096 });
    const small = await ask(SB1, { name: 'big.front', edns: 600 });
    expect(small.raw.length).toBeLessThanOrEqual(600);
    expect(small.msg.flag_tc).toBe(true);
    expect(small.msg.additionals[0]).toMatchObject({ type: 'OPT' }); // OPT kept when truncating
    const tooSmall = await ask(SB1, { name: 'big.front', edns: 100 }); // below 512 counts as 512
    expect(tooSmall.raw.length).toBeLessThanOrEqual(512);
    expect(tooSmall.raw.length).toBeGreaterThan(400);
    const tcp = await ask(SB1, { name: 'big.front' }, { tcp: true });
    expect(tcp.msg.flag_tc).toBe(false);
    expect(tcp.msg.answers).toHaveLength(60);
    expect(new Set(addrs(tcp.msg)).size).toBe(60);
  });

  it('echoes EDNS: OPT only when the client sent one, with its DO bit', async () => {
    expect((await ask(SB1, { name: 'web' })).msg.additionals).toEqual([]);
    const o = await ask(SB1, { name: 'web', edns: 1232, do: true });
    expect(o.msg.additionals[0]).toMatchObject({ type: 'OPT', flag_do: true });
    const p = await ask(SB1, { name: 'web', edns: 1232 });
    expect(p.msg.additionals[0]).toMatchObject({ type: 'OPT', flag_do: false });
  });

  it('answers odd messages like a resolver: FORMERR, NOTIMP, BADVERS; ignores responses and scraps', async () => {
    const two = dnsPacket.encode({
      type: 'query',
      id: 9,
      questions: [
        { name: 'web', type: 'A' },
        { name: 'api', type: 'A' },
      ],
    });
    const r1 = decode((await s.query(two, SB1))!);
    expect(r1.rcode).toBe('FORMERR');
    expect(r1.id).toBe(9);
    const none = dnsPacket.encode({ type: 'query', id: 10, questions: [] });
    expect(decode((await s.query(none, SB1))!).rcode).toBe('FORMERR');
    const notify = query({ name: 'web' });
    notify[2] = (notify[2]! & 0x87) | (4 << 3); // opcode NOTIFY
    const r2 = decode((await s.query(notify, SB1))!);
    expect(r2.rcode).toBe('NOTIMP');
    expect(r2.opcode).toBe('NOTIFY');
    const axfr = decode((await s.query(query({ name: 'front', type: 'AXFR' }), SB1))!);
    expect(axfr.rcode).toBe('NOTIMP');
    const v1 = query({ name: 'web', edns: 1232 });
    v1[v1.length - 5] = 1; // EDNS version 1 (OPT: ... ext-rcode, version, flags(2), rdlen(2))
    const r3 = await s.query(v1, SB1);
    const d3 = decode(r3!);
    expect(d3.rcode).toBe('NOERROR'); // low bits 0; the extended rcode (BADVERS = 16) is in the OPT
    expect((d3.additionals[0] as { extendedRcode: number }).extendedRcode).toBe(1);
    const resp = query({ name: 'web' });
    resp[2]! |= 0x80;
    expect(await s.query(resp, SB1)).toBeNull();
    expect(await s.query(Buffer.from([1, 2, 3]), SB1)).toBeNull();
    const cut = query({ name: 'web.front' }).subarray(0, 20);
    expect(decode((await s.query(cut, SB1))!).rcode).toBe('FORMERR');
    const ptrLoop = Buffer.concat([query({ name: 'a' }).subarray(0, 12), Buffer.from([0xc0, 12, 0, 1, 0, 1])]);
    expect(decode((await s.query(ptrLoop, SB1))!).rcode).toBe('FORMERR');
  });

  it('gateway scope: answers clients inside the network subnets, REFUSES everyone else', async () => {
    const N1 = { networkId: 'n1' };
    const stranger = await ask(N1, { name: 'web' }, { clientAddress: '192.168.1.1' });
    expect(stranger.msg.rcode).toBe('REFUSED');
    expect(stranger.msg.answers).toEqual([]);
    const outside = await ask(N1, { name: 'example.com' }, { clientAddress: '10.2.0.4' }); // on n2, not n1
    expect(outside.msg.rcode).toBe('REFUSED');
    // a client in the subnet that is not a known endpoint: n1's names only
    const anon = await ask(N1, { name: 'web' }, { clientAddress: '10.1.0.200' });
    expect(addrs(anon.msg)).toEqual(['10.1.0.2']);
    expect((await ask(N1, { name: 'db' }, { clientAddress: '10.1.0.200' })).msg.rcode).toBe('NXDOMAIN');
    expect((await ask(N1, { name: 'db.back' }, { clientAddress: '10.1.0.200' })).msg.rcode).toBe('NXDOMAIN'); // tnet's zone: never forwarded
    // a known endpoint of sb2 (on n1 and n2) sees what its sandbox sees
    expect(addrs((await ask(N1, { name: 'db' }, { clientAddress: '10.1.0.3' })).msg)).toEqual(['10.2.0.4']);
    // IPv6 and IPv4-mapped sources
    expect(addrs((await ask(N1, { name: 'web' }, { clientAddress: 'fd01::77' })).msg)).toEqual(['10.1.0.2']);
    expect(addrs((await ask(N1, { name: 'web' }, { clientAddress: '::ffff:10.1.0.200' })).msg)).toEqual(['10.1.0.2']);
    // the subnet list is the controller's to change
    s.setNetwork({ networkId: 'n1', name: 'front', internal: false, subnets: ['10.1.0.0/28'] });
    expect((await ask(N1, { name: 'web' }, { clientAddress: '10.1.0.200' })).msg.rcode).toBe('REFUSED');
  });

  it('rejects names that are not DNS names and addresses of the wrong family', async () => {
    expect(() => s.setEndpoint({ endpointId: 'x', networkId: 'n1', names: ['bad name'] })).toThrow(/not a valid DNS name/);
    expect(() => s.setEndpoint({ endpointId: 'x', networkId: 'n1', names: ['a'.repeat(64)] })).toThrow(/not a valid DNS name/);
    expect(() => s.setEndpoint({ endpointId: 'x', networkId: 'n1', names: ['ok'], ipv4: 'fd00::1' })).toThrow(/IPv4/);
    expect(() => s.setNetwork({ networkId: 'n5', name: 'x', internal: false, subnets: ['10.0.0.0/40'] })).toThrow(/prefix/);
    await expect(s.query(query({ name: 'web' }), {} as never)).rejects.toThrow(/scope/);
  });
});
