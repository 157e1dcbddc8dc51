import { execFile } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';
import { promisify } from 'node:util';
import * as dnsPacket from 'dns-packet';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type Msg, decode } from './dns-msg.js';
import { DnsServer, type ListenerHandle } from '../../dns/index.js';
import { writeSockaddr } from '../../dns/udp-batch.js';



// Real sockets on loopback (no root): tnet's server on 127.0.0.x with ephemeral ports, a fake
// upstream written with dns-packet standing in for the host's resolver, and dig where it adds
// realism. Both UDP paths (batched recvmmsg/sendmmsg and plain dgram) run the same tests.

const run = promisify(execFile);
const hasDig = await run('dig', ['-v']).then(
  () => true,
  () => false,
);

// ---------------------------------------------------------------- a fake upstream resolver

interface Seen {
  name: string;
  id: number;
  tcp: boolean;
  opt: boolean;
  udpSize: number | undefined;
}

interface Upstream {
  host: string;
  port: number;
  seen: Seen[];
  close(): Promise<void>;
}

type Behaviour = (name: string) => { rcode?: string; answers?: dnsPacket.Answer[]; delayMs?: number; drop?: boolean; spoofFirst?: boolean };

const normal: Behaviour = (name) => {
  if (name.startsWith('nx.')) return { rcode: 'NXDOMAIN' };
  if (name.startsWith('slow.')) return { delayMs: 1500, answers: [{ name, type: 'A', ttl: 300, data: '192.0.2.99' }] };
  if (name.startsWith('spoof.')) return { spoofFirst: true, answers: [{ name, type: 'A', ttl: 300, data: '192.0.2.7' }] };
  if (name.startsWith('many.')) {
    return {
      answers: Array.from({ length: 80 }, (_, i) => ({ name, type: 'A' as const, ttl: 300, data: `198.51.100.${i + 1}` })),
    };
  }
  return { answers: [{ name, type: 'A', ttl: 300, data: '192.0.2.1' }] };
};

async function fakeUpstream(host: string, behave: Behaviour = normal): Promise<Upstream> {
  const seen: Seen[] = [];
  const reply = (msg: Buffer, tcp: boolean, send: (b: Buffer) => void) => {
    let q: Msg;
    try {
      q = decode(msg);
    } catch {
      return;
    }
    const name = q.questions[0]!.name;
    const opt = q.additionals.find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
    seen.push({ name, id: q.id, tcp, opt: !!opt, udpSize: opt?.udpPayloadSize });
    const b = behave(name);
    if (b.drop) return;
    const rcode = { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3, REFUSED: 5 }[b.rcode ?? 'NOERROR'] ?? 0;
    const out = () =>
      dnsPacket.encode({
        type: 'response',
        id: q.id,
        flags: dnsPacket.RECURSION_AVAILABLE | (q.flags! & dnsPacket.RECURSION_DESIRED) | rcode,
        questions: q.questions,
        answers: b.answers ?? [],
      });
    const go = () => {
      if (b.spoofFirst) {
        const bad = out();
        bad.writeUInt16BE(q.id ^ 0xffff, 0); // wrong ID, then a wrong question, then the real one
        send(bad);
        const other = dnsPacket.encode({ type: 'response', id: q.id, questions: [{ name: 'evil.example', type: 'A' }], answers: [{ name: 'evil.example', type: 'A', data: '6.6.6.6' }] });
        send(other);
      }
      send(out());
    };
    if (b.delayMs) setTimeout(go, b.delayMs);
    else go();
  };
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, host, r));
  const port = udp.address().port;
  udp.on('message', (m, ri) => reply(m, false, (b) => udp.send(b, ri.port, ri.address)));
  const tcp = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('error', () => undefined);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        const m = buf.subarray(2, 2 + buf.readUInt16BE(0));
        buf = buf.subarray(2 + m.length);
        reply(Buffer.from(m), true, (b) => {
          const f = Buffer.alloc(2);
          f.writeUInt16BE(b.length);
          if (!s.destroyed) s.write(Buffer.concat([f, b]));
        });
      }
    });
  });
  await new Promise<void>((r) => tcp.listen(port, host, r));
  return {
    host,
    port,
    seen,
    close: async () => {
      await new Promise<void>((r) => udp.close(() => r()));
      await new Promise<void>((r) => tcp.close(() => r()));
    },
  };
}

/** A UDP port that swallows everything (an upstream that never answers). */
async function blackhole(host: string): Promise<{ port: number; close(): Promise<void> }> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, host, r));
  const t = net.createServer((c) => c.on('error', () => undefined).resume()); // reads, never answers
  await new Promise<void>((r) => t.listen(s.address().port, host, r));
  return {
    port: s.address().port,
    close: async () => {
      await new Promise<void>((r) => s.close(() => r()));
      await new Promise<void>((r) => t.close(() => r()));
    },
  };
}

// ---------------------------------------------------------------- clients

function q(name: string, type = 'A', opts: { id?: number; edns?: number } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: opts.id ?? Math.floor(Math.random() * 65536),
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ name, type: type as 'A' }],
    additionals: opts.edns
      ? [{ name: '.', type: 'OPT', udpPayloadSize: opts.edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }]
      : [],
  });
}

async function udpAsk(host: string, port: number, msg: Buffer, opts: { from?: string; timeoutMs?: number } = {}): Promise<Buffer | null> {
  const c = dgram.createSocket('udp4');
  await new Promise<void>((r) => c.bind(0, opts.from ?? '127.0.0.1', r));
  try {
    return await new Promise<Buffer | null>((resolve) => {
      const t = setTimeout(() => resolve(null), opts.timeoutMs ?? 3000);
      c.on('message', (m) => {
        clearTimeout(t);
        resolve(m);
      });
      c.send(msg, port, host);
    });
  } finally {
    c.close();
  }
}

async function tcpAsk(host: string, port: number, msg: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host);
    let buf = Buffer.alloc(0);
    s.on('error', reject);
    s.on('close', () => reject(new Error('connection closed without an answer')));
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        s.destroy();
        resolve(buf.subarray(2, 2 + buf.readUInt16BE(0)));
      }
    });
    const f = Buffer.alloc(2);
    f.writeUInt16BE(msg.length);
    s.write(Buffer.concat([f, msg]));
  });
}

const data = (m: Msg) => m.answers.map((a) => (a as { data: string }).data);

// ---------------------------------------------------------------- tests

for (const batchUdp of [true, false]) {
  describe(`dns over sockets (${batchUdp ? 'batched recvmmsg/sendmmsg' : 'plain dgram'} UDP)`, () => {
    const H = batchUdp ? '127.0.0.71' : '127.0.0.81';
    let up: Upstream;
    let up2: Upstream;
    let hole: { port: number; close(): Promise<void> };
    let s: DnsServer;
    let sb: ListenerHandle;
    const extra: (() => Promise<void>)[] = [];

    beforeAll(async () => {
      up = await fakeUpstream('127.0.0.72');
      up2 = await fakeUpstream('127.0.0.73', (name) =>
        name.startsWith('ext.') ? { rcode: 'SERVFAIL' } : name.startsWith('refused.') ? { rcode: 'REFUSED' } : normal(name),
      );
      hole = await blackhole('127.0.0.74');
      s = new DnsServer({ upstreams: [`${up.host}:${up.port}`], upstreamTimeoutMs: 400, forwardDeadlineMs: 1200, batchUdp, tcpIdleTimeoutMs: 300 });
      s.setNetwork({ networkId: 'n1', name: 'mynet', internal: false, subnets: ['127.0.0.64/29'] });
      s.setNetwork({ networkId: 'n2', name: 'hidden', internal: true });
      s.setEndpoint({ endpointId: 'e1', networkId: 'n1', names: ['web', 'www'], ipv4: '10.0.0.2', ipv6: 'fd00::2', sandboxId: 'sb1' });
      s.setEndpoint({ endpointId: 'e2', networkId: 'n1', names: ['db', 'www'], ipv4: '10.0.0.3', sandboxId: 'sb1' });
      for (let i = 0; i < 60; i++) s.setEndpoint({ endpointId: `b${i}`, networkId: 'n1', names: ['big'], ipv4: `10.0.1.${i + 1}` });
      s.setEndpoint({ endpointId: 'e3', networkId: 'n2', names: ['secret'], ipv4: '10.9.0.2', sandboxId: 'sb2' });
      s.setSandboxNetworks('sb1', ['n1']);
      s.setSandboxNetworks('sb2', ['n2']);
      sb = await s.addListener({ host: H, port: 0 }, { sandboxId: 'sb1' });
    });
    afterEach(async () => {
      for (const f of extra.splice(0)) await f();
    });
    afterAll(async () => {
      await s.close();
      await up.close();
      await up2.close();
      await hole.close();
    });

    it('listens on UDP and TCP on the same port', () => {
      expect(sb.udp?.port).toBeGreaterThan(0);
      expect(sb.tcp?.port).toBe(sb.udp?.port);
    });

    it('answers local names over UDP and TCP', async () => {
      const u = decode((await udpAsk(H, sb.udp!.port, q('web.mynet', 'A', { id: 4242 })))!);
      expect(u.id).toBe(4242);
      expect(data(u)).toEqual(['10.0.0.2']);
      const t = decode(await tcpAsk(H, sb.tcp!.port, q('WWW', 'A')));
      expect(data(t).sort()).toEqual(['10.0.0.2', '10.0.0.3']);
    });

    it('forwards unknown names over the client protocol, with a fresh ID and the client EDNS', async () => {
      up.seen.length = 0;
      const u = decode((await udpAsk(H, sb.udp!.port, q('ext.example', 'A', { id: 1, edns: 1400 })))!);
      expect(u.rcode).toBe('NOERROR');
      expect(u.id).toBe(1);
      expect(data(u)).toEqual(['192.0.2.1']);
      const t = decode(await tcpAsk(H, sb.tcp!.port, q('ext2.example', 'A', { id: 2 })));
      expect(data(t)).toEqual(['192.0.2.1']);
      expect(up.seen.map((x) => [x.name, x.tcp, x.opt, x.udpSize])).toEqual([
        ['ext.example', false, true, 1400],
        ['ext2.example', true, false, undefined],
      ]);
      expect(up.seen.map((x) => x.id)).not.toContain(1);
    });

    it('passes NXDOMAIN through', async () => {
      const r = decode((await udpAsk(H, sb.udp!.port, q('nx.example')))!);
      expect(r.rcode).toBe('NXDOMAIN');
    });

    it('ignores replies with the wrong ID or question (anti-spoofing)', async () => {
      const r = decode((await udpAsk(H, sb.udp!.port, q('spoof.example')))!);
      expect(data(r)).toEqual(['192.0.2.7']);
    });

    it('truncates a large forwarded answer for UDP and relays it whole over TCP', async () => {
      const u = decode((await udpAsk(H, sb.udp!.port, q('many.example')))!);
      expect(u.flag_tc).toBe(true);
      const t = decode(await tcpAsk(H, sb.tcp!.port, q('many.example')));
      expect(t.answers).toHaveLength(80);
    });

    it('answers SERVFAIL within the timeout when every upstream is dead', async () => {
      s.setUpstreams([`127.0.0.74:${hole.port}`]);
      try {
        const t0 = Date.now();
        const r = decode((await udpAsk(H, sb.udp!.port, q('dead.example')))!);
        const dt = Date.now() - t0;
        expect(r.rcode).toBe('SERVFAIL');
        expect(dt).toBeGreaterThanOrEqual(350);
        expect(dt).toBeLessThan(1000);
        const t1 = Date.now();
        const rt = decode(await tcpAsk(H, sb.tcp!.port, q('dead.example')));
        expect(rt.rcode).toBe('SERVFAIL');
        expect(Date.now() - t1).toBeLessThan(1000);
        // a port nobody listens on: ICMP unreachable fails the server at once
        s.setUpstreams(['127.0.0.75:9']);
        const t2 = Date.now();
        expect(decode((await udpAsk(H, sb.udp!.port, q('dead2.example')))!).rcode).toBe('SERVFAIL');
        expect(Date.now() - t2).toBeLessThan(300);
        // no upstream at all
        s.setUpstreams([]);
        expect(decode((await udpAsk(H, sb.udp!.port, q('dead3.example')))!).rcode).toBe('SERVFAIL');
      } finally {
        s.setUpstreams([`${up.host}:${up.port}`]);
      }
    });

    it('fails over to the next server on timeout, SERVFAIL and REFUSED', async () => {
      try {
        s.setUpstreams([`127.0.0.74:${hole.port}`, `${up.host}:${up.port}`]);
        const t0 = Date.now();
        const a = decode((await udpAsk(H, sb.udp!.port, q('fo1.example')))!);
        expect(data(a)).toEqual(['192.0.2.1']);
        expect(Date.now() - t0).toBeGreaterThanOrEqual(350);
        s.setUpstreams([`${up2.host}:${up2.port}`, `${up.host}:${up.port}`]);
        up.seen.length = 0;
        const b = decode((await udpAsk(H, sb.udp!.port, q('ext.example')))!); // up2: SERVFAIL
        expect(data(b)).toEqual(['192.0.2.1']);
        const c = decode(await tcpAsk(H, sb.tcp!.port, q('refused.example'))); // up2: REFUSED
        expect(data(c)).toEqual(['192.0.2.1']);
        expect(up.seen.map((x) => x.name)).toEqual(['ext.example', 'refused.example']);
        s.setUpstreams([`${up2.host}:${up2.port}`]);
        expect(decode((await udpAsk(H, sb.udp!.port, q('ext.example')))!).rcode).toBe('SERVFAIL');
      } finally {
        s.setUpstreams([`${up.host}:${up.port}`]);
      }
    });

    it('answers local names at once while a slow upstream holds forwards', async () => {
      const slow = Array.from({ length: 20 }, (_, i) => udpAsk(H, sb.udp!.port, q(`slow.${i}.example`), { timeoutMs: 5000 }));
      await new Promise((r) => setTimeout(r, 50));
      const t0 = performance.now();
      for (let i = 0; i < 50; i++) {
        const r = decode((await udpAsk(H, sb.udp!.port, q('web')))!);
        expect(data(r)).toEqual(['10.0.0.2']);
      }
      const t = decode(await tcpAsk(H, sb.tcp!.port, q('db')));
      expect(data(t)).toEqual(['10.0.0.3']);
      expect(performance.now() - t0).toBeLessThan(1000);
      // the slow ones hit the per-server timeout (400 ms) and come back SERVFAIL, never silence
      const res = await Promise.all(slow);
      for (const r of res) expect(decode(r!).rcode).toBe('SERVFAIL');
    });

    it('bounds the forwards in flight: over the bound is REFUSED at once', async () => {
      const small = new DnsServer({ upstreams: [`${up.host}:${up.port}`], upstreamTimeoutMs: 2000, maxInflightForwards: 3, batchUdp });
      small.setNetwork({ networkId: 'n1', name: 'mynet', internal: false });
      small.setSandboxNetworks('sb', ['n1']);
      const l = await small.addListener({ host: H, port: 0 }, { sandboxId: 'sb' });
      extra.push(() => small.close());
      const all = await Promise.all(Array.from({ length: 8 }, (_, i) => udpAsk(H, l.udp!.port, q(`slow.b${i}.example`))));
      const codes = all.map((r) => decode(r!).rcode);
      expect(codes.filter((c) => c === 'REFUSED')).toHaveLength(5);
      expect(codes.filter((c) => c === 'NOERROR')).toHaveLength(3);
    });

    it('never forwards from an internal-only scope', async () => {
      const l = await s.addListener({ host: H, port: 0 }, { sandboxId: 'sb2' });
      extra.push(() => l.close());
      up.seen.length = 0;
      expect(data(decode((await udpAsk(H, l.udp!.port, q('secret.hidden')))!))).toEqual(['10.9.0.2']);
      expect(decode((await udpAsk(H, l.udp!.port, q('example.com')))!).rcode).toBe('REFUSED');
      expect(decode(await tcpAsk(H, l.tcp!.port, q('example.com'))).rcode).toBe('REFUSED');
      expect(up.seen).toEqual([]);
    });

    it('gateway listener: answers clients inside the subnet, REFUSES the rest', async () => {
      const gw = await s.addListener({ host: '127.0.0.65', port: 0, udp: true, tcp: true }, { networkId: 'n1' });
      extra.push(() => gw.close());
      const inside = decode((await udpAsk('127.0.0.65', gw.udp!.port, q('web.mynet'), { from: '127.0.0.66' }))!);
      expect(data(inside)).toEqual(['10.0.0.2']);
      const outside = decode((await udpAsk('127.0.0.65', gw.udp!.port, q('web.mynet'), { from: '127.0.0.1' }))!);
      expect(outside.rcode).toBe('REFUSED');
      expect(outside.answers).toEqual([]);
      const openResolver = decode((await udpAsk('127.0.0.65', gw.udp!.port, q('ext.example'), { from: '127.0.0.99' }))!);
      expect(openResolver.rcode).toBe('REFUSED');
      const tcpOut = decode(await tcpAsk('127.0.0.65', gw.tcp!.port, q('web.mynet'))); // from 127.0.0.1
      expect(tcpOut.rcode).toBe('REFUSED');
    });

    it('keeps answering after TCP garbage, and closes idle and unfinished connections', async () => {
      const closed = (sock: net.Socket) => new Promise<number>((r) => {
        const t0 = Date.now();
        sock.on('close', () => r(Date.now() - t0));
      });
      const a = net.connect(sb.tcp!.port, H);
      a.on('error', () => undefined);
      await new Promise((r) => a.on('connect', r));
      a.write(Buffer.from([0x05])); // half a length prefix, forever
      const b = net.connect(sb.tcp!.port, H);
      b.on('error', () => undefined);
      await new Promise((r) => b.on('connect', r));
      b.write(Buffer.from([0x00, 0x40, 1, 2, 3])); // a length of 64, then 3 bytes
      const c = net.connect(sb.tcp!.port, H);
      c.on('error', () => undefined);
      await new Promise((r) => c.on('connect', r));
      c.write(Buffer.concat([Buffer.from([0x00, 0x08]), Buffer.from('garbage!')])); // a complete frame of junk
      const [ta, tb] = await Promise.all([closed(a), closed(b)]);
      expect(ta).toBeLessThan(1500);
      expect(tb).toBeLessThan(1500);
      expect(data(decode(await tcpAsk(H, sb.tcp!.port, q('web'))))).toEqual(['10.0.0.2']);
      expect(data(decode((await udpAsk(H, sb.udp!.port, q('web')))!))).toEqual(['10.0.0.2']);
      c.destroy();
    });

    it('answers pipelined TCP queries on one connection', async () => {
      const names = ['web', 'db', 'web.mynet', 'nope.mynet', 'ext.example'];
      const got = await new Promise<Msg[]>((resolve, reject) => {
        const c = net.connect(sb.tcp!.port, H);
        const out: Msg[] = [];
        let buf = Buffer.alloc(0);
        c.on('error', reject);
        c.on('data', (d) => {
          buf = Buffer.concat([buf, d]);
          while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
            out.push(decode(buf.subarray(2, 2 + buf.readUInt16BE(0))));
            buf = buf.subarray(2 + buf.readUInt16BE(0));
          }
          if (out.length === names.length) {
            c.destroy();
            resolve(out);
          }
        });
        c.write(Buffer.concat(names.map((n, i) => {
          const m = q(n, 'A', { id: i });
          const f = Buffer.alloc(2);
          f.writeUInt16BE(m.length);
          return Buffer.concat([f, m]);
        })));
      });
      const byId = new Map(got.map((m) => [m.id, m]));
      expect(data(byId.get(0)!)).toEqual(['10.0.0.2']);
      expect(data(byId.get(1)!)).toEqual(['10.0.0.3']);
      expect(byId.get(3)!.rcode).toBe('NXDOMAIN');
      expect(data(byId.get(4)!)).toEqual(['192.0.2.1']);
    });

    it.runIf(hasDig)('works with dig: A, AAAA, PTR, NXDOMAIN, TC then TCP retry', async () => {
      const dig = async (...args: string[]) => (await run('dig', [`@${H}`, '-p', String(sb.udp!.port), '+time=2', '+tries=1', ...args])).stdout;
      expect((await dig('+short', 'web.mynet')).trim()).toBe('10.0.0.2');
      expect((await dig('+short', 'WEB.MyNet', 'AAAA')).trim()).toBe('fd00::2');
      expect((await dig('+short', '-x', '10.0.0.2')).trim()).toBe('web.mynet.');
      expect((await dig('+short', '-x', 'fd00::2')).trim()).toBe('web.mynet.');
      expect(await dig('nope.mynet')).toMatch(/status: NXDOMAIN/);
      expect((await dig('+short', '+tcp', 'db')).trim()).toBe('10.0.0.3');
      // 60 addresses: dig's default EDNS size (1232) holds them, 512 does not
      const trunc = await dig('+noedns', '+ignore', 'big.mynet');
      expect(trunc).toMatch(/flags: qr aa tc rd/);
      const retried = await dig('+noedns', '+short', 'big.mynet'); // dig retries over TCP on TC
      expect(retried.trim().split('\n')).toHaveLength(60);
      const ext = await dig('+short', 'ext.example');
      expect(ext.trim()).toBe('192.0.2.1');
    });
  });
}

describe('dns listener by file descriptor', () => {
  it('serves sockets handed over by fd (as the controller does inside namespaces)', async () => {
    // stand-ins for sockets the controller makes inside a namespace: libc socket() + bind(), then the fd
    const koffi = (await import('koffi')).default;
    const libc = koffi.load('libc.so.6');
    const socket = libc.func('int socket(int domain, int type, int protocol)');
    const bind = libc.func('int bind(int fd, const void *addr, uint32_t len)');
    const getsockname = libc.func('int getsockname(int fd, _Out_ uint8_t *addr, _Inout_ uint32_t *len)');
    const make = (type: number) => {
      const fd = socket(2, type | 0x800 | 0x80000, 0) as number;
      const sa = Buffer.alloc(16);
      expect(writeSockaddr(sa, 0, '127.0.0.91', 0)).toBe(16);
      expect(bind(fd, sa, 16)).toBe(0);
      const out = Buffer.alloc(16);
      getsockname(fd, out, [16]);
      return { fd, port: out.readUInt16BE(2) };
    };
    const u = make(2); // SOCK_DGRAM
    const t = make(1); // SOCK_STREAM (bound; Node listens on it)
    const s = new DnsServer({ upstreams: [] });
    s.setNetwork({ networkId: 'n', name: 'lab', internal: true });
    s.setEndpoint({ endpointId: 'e', networkId: 'n', names: ['r1'], ipv4: '10.5.0.1' });
    s.setSandboxNetworks('sb', ['n']);
    const l = await s.addListener({ udpFd: u.fd, tcpFd: t.fd }, { sandboxId: 'sb' });
    expect(l.udp?.port).toBe(u.port);
    expect(data(decode((await udpAsk('127.0.0.91', u.port, q('r1.lab')))!))).toEqual(['10.5.0.1']);
    expect(data(decode(await tcpAsk('127.0.0.91', t.port, q('r1'))))).toEqual(['10.5.0.1']);
    await l.close();
    await s.close();
  });
});

const hasV6 = await new Promise<boolean>((r) => {
  const u = dgram.createSocket('udp6');
  u.on('error', () => r(false));
  u.bind(0, '::1', () => u.close(() => r(true)));
});

describe.runIf(hasV6)('dns over IPv6 loopback', () => {
  it('answers on ::1 over UDP (both paths) and TCP, and scopes IPv6 clients by subnet', async () => {
    for (const batchUdp of [true, false]) {
      const s = new DnsServer({ upstreams: [], batchUdp });
      s.setNetwork({ networkId: 'n', name: 'six', internal: true, subnets: ['::1/128'] });
      s.setEndpoint({ endpointId: 'e', networkId: 'n', names: ['h'], ipv4: '10.6.0.2', ipv6: 'fd06::2' });
      const l = await s.addListener({ host: '::1', port: 0 }, { networkId: 'n' });
      const ask6 = (msg: Buffer) =>
        new Promise<Buffer>((resolve, reject) => {
          const c = dgram.createSocket('udp6');
          const t = setTimeout(() => reject(new Error('no answer over IPv6')), 3000);
          c.on('message', (m) => {
            clearTimeout(t);
            c.close();
            resolve(m);
          });
          c.send(msg, l.udp!.port, '::1');
        });
      expect(data(decode(await ask6(q('h.six', 'AAAA'))))).toEqual(['fd06::2']);
      expect(data(decode(await tcpAsk('::1', l.tcp!.port, q('h'))))).toEqual(['10.6.0.2']);
      await s.close();
    }
  });
});

