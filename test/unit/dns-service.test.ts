import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import dgram from 'node:dgram';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { readResolvConf } from '../../dns/resolvconf.js';
import { sandboxResolvConf } from '../../dns/service.js';
import { KernelError, sockaddr, socketBind, socketBindPair, socketClose } from '../../libnetwork/kernel/index.js';

// The pieces of the DNS service that need no namespace: the resolv.conf it writes, and the libc
// sockets it hands to Node (here in the test's own namespace, on loopback ephemeral ports).

const dir = mkdtempSync(join(tmpdir(), 'tnet-dns-service-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('sandbox resolv.conf', () => {
  it("takes the host's search domains (the last search/domain line wins, as in glibc)", () => {
    const f = join(dir, 'resolv.conf');
    writeFileSync(f, '# comment\nnameserver 10.0.0.53\ndomain old.example\nsearch a.example  b.example\noptions edns0\n');
    expect(readResolvConf(f).search).toEqual(['a.example', 'b.example']);
    expect(readResolvConf(f).nameservers).toEqual(['10.0.0.53']);
    writeFileSync(f, 'search a.example\ndomain only.example\n');
    expect(readResolvConf(f).search).toEqual(['only.example']);
    expect(readResolvConf(join(dir, 'missing')).search).toEqual([]);
  });

  it('points at 127.0.0.11 with ndots:0 and never names the host resolver', () => {
    const text = sandboxResolvConf(['lab.example']);
    const lines = text.split('\n').filter((l) => l && !l.startsWith('#'));
    expect(lines).toEqual(['nameserver 127.0.0.11', 'search lab.example', 'options ndots:0']);
    expect(sandboxResolvConf([])).not.toMatch(/^search/m);
  });
});

describe('kernel sockets for DNS listeners', () => {
  it('binds a UDP and a TCP socket on one address and port; Node adopts them by fd', async () => {
    // find a port free for both: let the kernel pick a UDP port, then try TCP on it
    let pair: { udp: number; tcp: number } | undefined;
    for (let i = 0; i < 20 && !pair; i++) {
      const probe = dgram.createSocket('udp4');
      await new Promise<void>((r) => probe.bind(0, '127.0.0.1', () => r()));
      const port = probe.address().port;
      await new Promise<void>((r) => probe.close(() => r()));
      try {
        pair = socketBindPair(undefined, '127.0.0.1', port);
      } catch (e) {
        if (!(e instanceof KernelError && e.errno === 'EADDRINUSE')) throw e;
      }
    }
    expect(pair).toBeDefined();
    const u = dgram.createSocket('udp4');
    await new Promise<void>((r) => u.bind({ fd: pair!.udp }, () => r()));
    const port = u.address().port;
    const s = net.createServer((c) => c.end('hi'));
    await new Promise<void>((r) => s.listen({ fd: pair!.tcp }, () => r()));
    expect((s.address() as net.AddressInfo).port).toBe(port);
    // the same port is taken now, for both protocols
    expect(() => socketBind(undefined, 'udp', '127.0.0.1', port)).toThrow(/^bind udp 127\.0\.0\.1:\d+: EADDRINUSE/);
    expect(() => socketBind(undefined, 'tcp', '127.0.0.1', port)).toThrow(KernelError);
    expect(() => socketBindPair(undefined, '127.0.0.1', port)).toThrow(/EADDRINUSE/);
    const got = await new Promise<string>((r) => net.connect(port, '127.0.0.1').on('data', (d) => r(String(d))));
    expect(got).toBe('hi');
    await new Promise<void>((r) => u.close(() => r()));
    await new Promise<void>((r) => s.close(() => r()));
    // closed by Node: the port is free again
    const again = socketBindPair(undefined, '127.0.0.1', port);
    socketClose(again.udp);
    socketClose(again.tcp);
  });

  it('names the problem with bad input', () => {
    expect(() => socketBind(undefined, 'udp', 'not-an-ip', 53)).toThrow(/sockaddr "not-an-ip": EINVAL/);
    expect(() => sockaddr('127.0.0.1', 70000)).toThrow(/port 70000/);
    const v6 = sockaddr('fd00::1', 53);
    expect(v6.length).toBe(28);
    expect(v6.readUInt16BE(2)).toBe(53);
    expect(sockaddr('10.1.2.3', 5353).subarray(2, 8)).toEqual(Buffer.from([0x14, 0xe9, 10, 1, 2, 3]));
  });
});
