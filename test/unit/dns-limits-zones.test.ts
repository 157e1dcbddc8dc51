/**
 * Two shared resources of the DNS server: the upstream resolvers, which must never hear a name of
 * tnet's own zones (a network's name, the reverse zones of its subnets), whoever asks; and the TCP
 * connection limit, which one client (a sandbox, or one address on a gateway listener) must not
 * exhaust for the others. Real sockets on loopback, no root.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import * as dnsPacket from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DnsServer, type ListenerHandle } from '../../dns/index.js';
import { reverseName } from '../../dns/cidr.js';
import { type Msg, decode } from './dns-msg.js';

const HOST = '127.0.0.91';

function q(name: string, type = 'A'): Buffer {
  return dnsPacket.encode({ type: 'query', id: Math.floor(Math.random() * 65536), flags: dnsPacket.RECURSION_DESIRED, questions: [{ name, type: type as 'A' }] });
}

/** An upstream that answers everything (192.0.2.1) and records every name it is asked. */
async function recordingUpstream(): Promise<{ port: number; seen: string[]; close(): Promise<void> }> {
  const seen: string[] = [];
  const udp = dgram.createSocket('udp4');
  await new Promise<void>((r) => udp.bind(0, HOST, r));
  udp.on('message', (m, ri) => {
    const msg = decode(m);
    const name = msg.questions[0]!.name;
    seen.push(name);
    const out = dnsPacket.encode({ type: 'response', id: msg.id, flags: dnsPacket.RECURSION_AVAILABLE, questions: msg.questions, answers: [{ name, type: 'A', ttl: 60, data: '192.0.2.1' }] });
    udp.send(out, ri.port, ri.address);
  });
  const port = udp.address().port;
  return { port, seen, close: () => new Promise<void>((r) => udp.close(() => r())) };
}

const rand = (n: number) => Math.floor(Math.random() * n);
const label = () => Array.from({ length: 1 + rand(10) }, () => 'abcdefghijklmnopqrstuvwxyz0123456789-'[rand(36)]).join('').replace(/^-|-$/g, 'x');

describe('names under tnet\'s own zones are answered here and never forwarded', () => {
  let up: Awaited<ReturnType<typeof recordingUpstream>>;
  let s: DnsServer;
  let bare: DnsServer;
  beforeAll(async () => {
    up = await recordingUpstream();
    const setup = (d: DnsServer) => {
      d.setNetwork({ networkId: 'n1', name: 'front', internal: false, subnets: ['10.1.0.0/24', 'fd00:1::/64'] });
      d.setNetwork({ networkId: 'n2', name: 'back', internal: false, subnets: ['172.20.0.0/16'] });
      d.setNetwork({ networkId: 'n3', name: 'vault.local', internal: true, subnets: ['10.3.0.0/28'] });
      d.setEndpoint({ endpointId: 'e1', networkId: 'n1', names: ['web'], ipv4: '10.1.0.2', ipv6: 'fd00:1::2', sandboxId: 'sa' });
      d.setEndpoint({ endpointId: 'e2', networkId: 'n2', names: ['db'], ipv4: '172.20.0.4', sandboxId: 'sb' });
      d.setEndpoint({ endpointId: 'e3', networkId: 'n3', names: ['secret'], ipv4: '10.3.0.5', sandboxId: 'sc' });
      d.setSandboxNetworks('sa', ['n1']);
      d.setSandboxNetworks('sb', ['n2']);
      d.setSandboxNetworks('sc', ['n3']);
    };
    s = new DnsServer({ upstreams: [`${HOST}:${up.port}`], upstreamTimeoutMs: 300, forwardDeadlineMs: 600 });
    setup(s);
    // No upstream at all: what is ours must still answer at once, not after a timeout.
    bare = new DnsServer({ upstreams: [`192.0.2.1:9`], upstreamTimeoutMs: 2000, forwardDeadlineMs: 3000 });
    setup(bare);
  });
  afterAll(async () => {
    await s.close();
    await bare.close();
    await up.close();
  });

  it('hundreds of generated names under every network\'s name and inside every subnet\'s reverse zone, from every scope: none reaches the upstream', async () => {
    const names: [string, string][] = [];
    for (const zone of ['front', 'back', 'vault.local', 'FRONT', 'Back']) {
      for (let i = 0; i < 20; i++) names.push([`${label()}.${zone}`, 'A'], [`${label()}.${label()}.${zone}`, 'AAAA']);
      names.push([`db.${zone}`, 'A'], [`web.${zone}`, 'TXT'], [`secret.${zone}`, 'A']);
    }
    const v4 = (a: number, b: number) => reverseName(Buffer.from([a, b, rand(256), rand(256)]));
    for (let i = 0; i < 30; i++) {
      names.push([reverseName(Buffer.from([10, 1, 0, rand(256)])), 'PTR'], [v4(172, 20), 'PTR'], [reverseName(Buffer.from([10, 3, 0, rand(16)])), 'PTR']);
      const six = Buffer.alloc(16);
      six.writeUInt32BE(0xfd000001, 0);
      for (let j = 8; j < 16; j++) six[j] = rand(256);
      names.push([reverseName(six), 'PTR']);
    }
    // Partial reverse names inside a subnet (a zone of tnet's), and junk below an address.
    names.push(['0.1.10.in-addr.arpa', 'PTR'], ['20.172.in-addr.arpa', 'SOA'], ['5.20.172.in-addr.arpa', 'NS'], ['x.7.0.1.10.in-addr.arpa', 'PTR']);
    const scopes = [{ sandboxId: 'sa' }, { sandboxId: 'sb' }, { sandboxId: 'sc' }];
    let tried = 0;
    const t0 = performance.now();
    for (const [name, type] of names)
      for (const scope of scopes) {
        tried++;
        const r = decode((await s.query(q(name, type), scope))!);
        expect(['NXDOMAIN', 'NOERROR'], `${name} ${type} from ${scope.sandboxId}: ${r.rcode}`).toContain(r.rcode);
      }
    expect(up.seen, 'nothing of tnet\'s zones reached the upstream').toEqual([]);
    // The same without any upstream: answered at once, no timeout.
    const t1 = performance.now();
    for (const [name, type] of names.slice(0, 60)) expect(['NXDOMAIN', 'NOERROR']).toContain(decode((await bare.query(q(name, type), { sandboxId: 'sa' }))!).rcode);
    expect(performance.now() - t1, 'answered without waiting for an upstream').toBeLessThan(1000);
    console.log(`dns zones: ${tried + 60} names under tnet's zones, ${Math.round(performance.now() - t0)} ms`);
  });

  it('names that are not tnet\'s are forwarded as before (the recording upstream hears them)', async () => {
    const before = up.seen.length;
    const others = ['example.com', 'frontx.example', 'front.example.com', 'back.', '1.0.0.10.in-addr.arpa', '10.in-addr.arpa', '172.in-addr.arpa', reverseName(Buffer.from([172, 21, 0, 1])), reverseName(Buffer.from(Array(16).fill(0xfd)))];
    for (const n of others) {
      const r = decode((await s.query(q(n, n.endsWith('arpa') ? 'PTR' : 'A'), { sandboxId: 'sa' }))!);
      expect(r.rcode, n).not.toBe('REFUSED');
    }
    // 'back.' is the network's apex from outside its scope (a single label): local, not forwarded.
    expect(up.seen.slice(before).sort()).toEqual(others.filter((n) => n !== 'back.').sort());
  });
});

// ---------------------------------------------------------------- TCP limits per client

function tcpAsk(port: number, msg: Buffer, from?: string): Promise<Msg> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: HOST, ...(from ? { localAddress: from } : {}) });
    let buf = Buffer.alloc(0);
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error('no TCP answer within 2 s'));
    }, 2000);
    sock.on('error', reject);
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        clearTimeout(t);
        sock.destroy();
        resolve(decode(buf.subarray(2, 2 + buf.readUInt16BE(0))));
      }
    });
    const f = Buffer.alloc(2);
    f.writeUInt16BE(msg.length);
    sock.write(Buffer.concat([f, msg]));
  });
}

/** Opens `n` TCP connections and keeps them (idle); resolves when each is open or closed by the server. */
async function hog(port: number, n: number, from?: string): Promise<{ open: () => number; close(): void }> {
  const socks = await Promise.all(
    Array.from({ length: n }, () => new Promise<net.Socket>((resolve) => {
      const sock = net.connect({ port, host: HOST, ...(from ? { localAddress: from } : {}) });
      sock.on('error', () => undefined);
      sock.once('connect', () => resolve(sock));
      sock.once('close', () => resolve(sock));
    })),
  );
  await new Promise((r) => setTimeout(r, 200)); // the server closes the ones over its limits
  return { open: () => socks.filter((x) => !x.destroyed && x.readyState === 'open').length, close: () => socks.forEach((x) => x.destroy()) };
}

describe('one client cannot exhaust the TCP connection limit of the others', () => {
  let s: DnsServer;
  let a: ListenerHandle;
  let b: ListenerHandle;
  let gw: ListenerHandle;
  beforeAll(async () => {
    s = new DnsServer({ upstreams: [], maxTcpConnections: 40, maxTcpPerClient: 8, tcpIdleTimeoutMs: 30_000 });
    s.setNetwork({ networkId: 'n1', name: 'front', internal: true, subnets: ['127.0.0.0/8'] });
    s.setEndpoint({ endpointId: 'e1', networkId: 'n1', names: ['web'], ipv4: '10.1.0.2', sandboxId: 'sa' });
    s.setSandboxNetworks('sa', ['n1']);
    s.setSandboxNetworks('sb', ['n1']);
    a = await s.addListener({ host: HOST, port: 0 }, { sandboxId: 'sa' });
    b = await s.addListener({ host: HOST, port: 0 }, { sandboxId: 'sb' });
    gw = await s.addListener({ host: HOST, port: 0 }, { networkId: 'n1' });
  });
  afterAll(async () => {
    await s.close();
  });

  it('sandbox a opens 100 connections: it keeps 8, and sandbox b still gets its TCP answer', async () => {
    const h = await hog(a.tcp!.port, 100);
    try {
      expect(h.open()).toBe(8);
      expect(s.stats.tcpRefused).toBeGreaterThanOrEqual(92);
      const r = await tcpAsk(b.tcp!.port, q('web'));
      expect(r.answers.map((x) => (x as { data: string }).data)).toEqual(['10.1.0.2']);
      // a itself gets its answer again once it lets a connection go
      h.close();
      await new Promise((r2) => setTimeout(r2, 100));
      expect((await tcpAsk(a.tcp!.port, q('web'))).rcode).toBe('NOERROR');
    } finally {
      h.close();
    }
  });

  it('on a gateway listener the limit is per source address: 127.0.0.92 hogs, 127.0.0.93 is answered', async () => {
    const h = await hog(gw.tcp!.port, 60, '127.0.0.92');
    try {
      expect(h.open()).toBe(8);
      const r = await tcpAsk(gw.tcp!.port, q('web'), '127.0.0.93');
      expect(r.answers.map((x) => (x as { data: string }).data)).toEqual(['10.1.0.2']);
    } finally {
      h.close();
    }
  });

  it('the global limit still holds over many clients', async () => {
    const hogs = await Promise.all(Array.from({ length: 6 }, (_, i) => hog(gw.tcp!.port, 8, `127.0.1.${i + 1}`)));
    try {
      const open = hogs.reduce((n, h) => n + h.open(), 0);
      expect(open).toBe(40);
      expect(s.stats.tcpConnections).toBe(40);
    } finally {
      hogs.forEach((h) => h.close());
    }
  });
});
