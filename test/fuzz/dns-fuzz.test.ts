import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsServer, type ListenerHandle } from '../../dns/index.js';

// Fuzz: >= 100 000 random and mutated packets at a running server over UDP (and a few thousand
// over TCP), then it must still answer correctly, hold no forwards or connections, and its heap
// (after a full GC; run with the config next to this file, which passes --expose-gc) must not
// have grown without bound. Seeded: DNS_FUZZ_SEED=n reproduces a run.
//   npx vitest run -c test/fuzz/dns-vitest.config.ts

const SEED = Number(process.env.DNS_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31));
const UDP_PACKETS = Number(process.env.DNS_FUZZ_PACKETS ?? 120_000);
const TCP_PACKETS = 4000;

function mulberry32(a: number) {
  return () => {
    a |= 0;
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rnd = mulberry32(SEED);
const int = (n: number) => Math.floor(rnd() * n);
const pick = <T>(a: readonly T[]): T => a[int(a.length)]!;
const bytes = (n: number) => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(256);
  return b;
};

const NAMES = ['web', 'WEB.front', 'www', 'www.front', 'db', 'nope.front', 'front', 'ext.example', '2.0.1.10.in-addr.arpa', 'x'.repeat(63)];
const TYPES = ['A', 'AAAA', 'PTR', 'ANY', 'MX', 'TXT', 'SOA', 'SRV', 'CNAME', 'NS'];

function validQuery(): Buffer {
  const edns = rnd() < 0.5;
  return dnsPacket.encode({
    type: 'query',
    id: int(65536),
    flags: rnd() < 0.9 ? dnsPacket.RECURSION_DESIRED : 0,
    questions: [{ name: pick(NAMES), type: pick(TYPES) as 'A' }],
    additionals: edns
      ? [
          {
            name: '.',
            type: 'OPT',
            udpPayloadSize: pick([0, 1, 512, 1232, 4096, 65535]),
            extendedRcode: 0,
            ednsVersion: rnd() < 0.9 ? 0 : int(256),
            flags: rnd() < 0.5 ? dnsPacket.DNSSEC_OK : 0,
            flag_do: false,
            options: rnd() < 0.3 ? [{ code: 12 as const, length: int(64) }] : [], // PADDING
          },
        ]
      : [],
  });
}

/** One hostile packet: random bytes, a mutated query, a truncation, a compression loop, an oversize. */
function hostile(): Buffer {
  const kind = int(100);
  if (kind < 15) return bytes(int(600));
  if (kind < 17) return bytes(12); // a bare header of noise
  if (kind < 19) return bytes(4096 + int(8000)); // oversized
  const q = validQuery();
  if (kind < 45) {
    // flip a few bytes, header included
    for (let i = 0, n = 1 + int(6); i < n; i++) q[int(q.length)] = int(256);
    return q;
  }
  if (kind < 60) return q.subarray(0, int(q.length)); // truncated
  if (kind < 70) {
    // absurd counts
    q.writeUInt16BE(int(65536), pick([4, 6, 8, 10]));
    return q;
  }
  if (kind < 80) {
    // compression pointers: in the question (to itself, forward, backward) or as extra records that loop
    const at = 12 + int(Math.max(1, q.length - 16));
    const p = Buffer.from([0xc0 | int(64), int(256)]);
    if (rnd() < 0.5) {
      p.copy(q, at);
      return q;
    }
    const loop = Buffer.from([0xc0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]);
    loop.writeUInt16BE(0xc000 | q.length, 0); // points at itself
    const out = Buffer.concat([q, loop, Buffer.from([0xc0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0])]);
    out.writeUInt16BE(0xc000 | q.length, q.length + 12); // the second points at the first
    out.writeUInt16BE(out.readUInt16BE(10) + 2, 10);
    return out;
  }
  if (kind < 88) return Buffer.concat([q, bytes(int(300))]); // trailing junk
  if (kind < 94) {
    // labels that claim more than is there, or the 0x40/0x80 label types
    q[12] = pick([63, 64, 0x40, 0x80, 0xff]);
    return q;
  }
  return Buffer.concat([q.subarray(0, 12), bytes(int(200))]); // a header, then noise
}

/** Wait until nothing is left to process: the counter stops moving. */
async function settle(read: () => number): Promise<void> {
  let last = -1;
  for (let i = 0; i < 200; i++) {
    await new Promise((r) => setTimeout(r, 20));
    const now = read();
    if (now === last) return;
    last = now;
  }
}

function heap(): number {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
    return process.memoryUsage().heapUsed;
  }
  return process.memoryUsage().rss; // looser, without --expose-gc
}

describe('dns fuzz', () => {
  const H = '127.0.0.95';
  let s: DnsServer;
  let l: ListenerHandle;
  let gw: ListenerHandle;
  let upstream: dgram.Socket;

  beforeAll(async () => {
    // an upstream that answers whatever it can decode, at once
    upstream = dgram.createSocket('udp4');
    upstream.on('message', (m, ri) => {
      try {
        const d = dnsPacket.decode(m);
        upstream.send(dnsPacket.encode({ type: 'response', id: d.id, questions: d.questions, answers: [] }), ri.port, ri.address);
      } catch {
        // not ours to answer
      }
    });
    await new Promise<void>((r) => upstream.bind(0, '127.0.0.96', r));
    s = new DnsServer({ upstreams: [`127.0.0.96:${upstream.address().port}`], upstreamTimeoutMs: 200, tcpIdleTimeoutMs: 200, maxCacheEntries: 5000 });
    s.setNetwork({ networkId: 'n1', name: 'front', internal: false, subnets: ['127.0.0.0/8'] });
    s.setEndpoint({ endpointId: 'e1', networkId: 'n1', names: ['web', 'www'], ipv4: '10.1.0.2', ipv6: 'fd01::2', sandboxId: 'sb' });
    s.setEndpoint({ endpointId: 'e2', networkId: 'n1', names: ['db', 'www', 'x'.repeat(63)], ipv4: '10.1.0.3', sandboxId: 'sb' });
    s.setSandboxNetworks('sb', ['n1']);
    l = await s.addListener({ host: H, port: 0 }, { sandboxId: 'sb' });
    gw = await s.addListener({ host: '127.0.0.97', port: 0 }, { networkId: 'n1' });
  });
  afterAll(async () => {
    await s.close();
    await new Promise<void>((r) => upstream.close(() => r()));
  });

  async function check(): Promise<void> {
    const c = dgram.createSocket('udp4');
    await new Promise<void>((r) => c.bind(0, '127.0.0.1', r));
    const ask = (port: number, host: string, name: string, id: number) =>
      new Promise<dnsPacket.DecodedPacket & { rcode?: string }>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no answer for ${name}`)), 3000);
        const on = (m: Buffer) => {
          const d = dnsPacket.decode(m);
          if (d.id !== id) return;
          clearTimeout(t);
          c.off('message', on);
          resolve(d);
        };
        c.on('message', on);
        c.send(dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: 'A' }] }), port, host);
      });
    try {
      const a = await ask(l.udp!.port, H, 'web.front', 4001);
      expect(a.answers?.map((x) => (x as { data?: unknown }).data)).toEqual(['10.1.0.2']);
      const b = await ask(gw.udp!.port, '127.0.0.97', 'db', 4002);
      expect(b.answers?.map((x) => (x as { data?: unknown }).data)).toEqual(['10.1.0.3']);
      const e = await ask(l.udp!.port, H, 'ext.example', 4003);
      expect(e.rcode).toBe('NOERROR');
    } finally {
      c.close();
    }
    const t = await new Promise<Buffer>((resolve, reject) => {
      const sock = net.connect(l.tcp!.port, H);
      let buf = Buffer.alloc(0);
      sock.on('error', reject);
      sock.on('data', (d) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
          sock.destroy();
          resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
        }
      });
      const m = dnsPacket.encode({ type: 'query', id: 9, questions: [{ name: 'WWW', type: 'A' }] });
      const f = Buffer.alloc(2);
      f.writeUInt16BE(m.length);
      sock.write(Buffer.concat([f, m]));
    });
    expect(
      dnsPacket
        .decode(t)
        .answers?.map((x) => (x as { data?: unknown }).data)
        .sort(),
    ).toEqual(['10.1.0.2', '10.1.0.3']);
  }

  async function blastUdp(n: number): Promise<number> {
    const c = dgram.createSocket('udp4');
    c.on('message', () => undefined);
    c.on('error', () => undefined);
    await new Promise<void>((r) => c.bind(0, '127.0.0.1', r));
    let sent = 0;
    const targets = [
      [l.udp!.port, H],
      [gw.udp!.port, '127.0.0.97'],
    ] as const;
    for (let i = 0; i < n; i += 200) {
      for (let k = 0; k < 200 && i + k < n; k++) {
        const [port, host] = targets[int(8) === 0 ? 1 : 0];
        c.send(hostile(), port, host);
        sent++;
      }
      // let the server (same event loop) drain its socket
      await new Promise((r) => setImmediate(r));
      if (i % 5000 === 0) await new Promise((r) => setTimeout(r, 1));
    }
    await settle(() => s.stats.queries);
    c.close();
    return sent;
  }

  async function blastTcp(n: number): Promise<void> {
    const conns = 20;
    await Promise.all(
      Array.from({ length: conns }, async () => {
        const sock = net.connect(l.tcp!.port, H);
        const closed = new Promise((r) => sock.on('close', r)); // the server may close it any time
        sock.on('error', () => undefined);
        sock.on('data', () => undefined);
        await new Promise((r) => sock.on('connect', r));
        for (let i = 0; i < n / conns && !sock.destroyed; i++) {
          const m = hostile().subarray(0, 4000);
          const f = Buffer.alloc(2);
          // mostly honest length prefixes, sometimes lies (too long: the connection waits, then is closed)
          f.writeUInt16BE(rnd() < 0.97 ? m.length : int(65536));
          sock.write(Buffer.concat([f, m]));
          if (i % 50 === 0) await new Promise((r) => setImmediate(r));
        }
        if (rnd() < 0.5) sock.write(Buffer.from([int(256)])); // half a prefix, never finished
        await closed;
      }),
    );
  }

  it(`survives ${UDP_PACKETS} hostile UDP packets and ${TCP_PACKETS} over TCP (seed ${SEED})`, async () => {
    await check();
    // warm up (JIT, caches), then measure
    await blastUdp(5000);
    const before = heap();
    const q0 = s.stats.queries;
    const t0 = Date.now();
    const half = Math.floor(UDP_PACKETS / 2);
    const sent1 = await blastUdp(half);
    const mid = heap();
    await check();
    const sent2 = await blastUdp(UDP_PACKETS - half);
    await blastTcp(TCP_PACKETS);
    await settle(() => s.stats.queries + s.inflightForwards);
    const after = heap();
    const received = s.stats.queries - q0;
    const ms = Date.now() - t0;
    await check();
    const mb = (x: number) => (x / 2 ** 20).toFixed(1);
    console.log(
      `dns fuzz seed=${SEED}: sent ${sent1 + sent2} udp + ${TCP_PACKETS} tcp in ${ms} ms, server saw ${received}; ` +
        `heap ${mb(before)} -> ${mb(mid)} -> ${mb(after)} MB; stats ${JSON.stringify(s.stats)}`,
    );
    expect(sent1 + sent2).toBeGreaterThanOrEqual(100_000);
    // the kernel may drop a few datagrams under the burst; the server must have seen nearly all
    expect(received).toBeGreaterThan(0.9 * (sent1 + sent2));
    expect(s.stats.formerr).toBeGreaterThan(1000);
    expect(s.stats.dropped).toBeGreaterThan(1000);
    // nothing left behind: no forward in flight, no TCP connection open, cache within its bound
    await new Promise((r) => setTimeout(r, 500));
    expect(s.inflightForwards).toBe(0);
    expect(s.stats.tcpConnections).toBe(0);
    expect(s.cachedAnswers).toBeLessThanOrEqual(5000);
    // heap: the second half must not have grown the heap like the first (bounded, not leaking)
    const limit = (globalThis as { gc?: unknown }).gc ? 16 * 2 ** 20 : 128 * 2 ** 20;
    expect(after - before).toBeLessThan(limit);
    expect(after - mid).toBeLessThan(limit / 2);
  });
});
