import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as dnsPacket from 'dns-packet';
import { afterAll, describe, expect, it } from 'vitest';
import { cidrContains, clientBytes, ipv6Bytes, parseCidr, reverseName } from '../../dns/cidr.js';
import { hostUpstreams, matches, parseUpstream } from '../../dns/forwarder.js';
import { writeSockaddr } from '../../dns/udp-batch.js';
import { nameToKey, ParsedQuery, parseQuery, QueryStatus, wireKey } from '../../dns/wire.js';

const enc = (name: string, type = 'A', extra: Partial<dnsPacket.Packet> = {}) =>
  dnsPacket.encode({ type: 'query', id: 1, questions: [{ name, type: type as 'A' }], ...extra });

describe('dns wire parser', () => {
  const q = new ParsedQuery();

  it('reads the question and the OPT record straight from the buffer', () => {
    const b = enc('Web.Example', 'AAAA', {
      additionals: [{ name: '.', type: 'OPT', udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: dnsPacket.DNSSEC_OK, flag_do: true, options: [] }],
    });
    expect(parseQuery(b, q)).toBe(QueryStatus.Ok);
    expect(q.qtype).toBe(28);
    expect(q.qclass).toBe(1);
    expect(q.nameEnd).toBe(12 + 13);
    expect(q.qEnd).toBe(12 + 13 + 4);
    expect(q.hasOpt).toBe(true);
    expect(q.udpSize).toBe(1232);
    expect(q.dnssecOk).toBe(true);
    expect(wireKey(b, 12, q.nameEnd)).toBe(nameToKey('web.example'));
  });

  it('classifies what is not a plain query', () => {
    expect(parseQuery(Buffer.alloc(11), q)).toBe(QueryStatus.Drop);
    const resp = enc('a');
    resp[2]! |= 0x80;
    expect(parseQuery(resp, q)).toBe(QueryStatus.Drop);
    const status = enc('a');
    status[2] = 2 << 3;
    expect(parseQuery(status, q)).toBe(QueryStatus.NotImp);
    expect(parseQuery(dnsPacket.encode({ type: 'query', questions: [] }), q)).toBe(QueryStatus.FormErr);
    // label longer than 63 / compression pointer / name running off the end / no type+class
    const long = Buffer.concat([enc('a').subarray(0, 12), Buffer.from([64]), Buffer.alloc(64, 0x61), Buffer.from([0, 0, 1, 0, 1])]);
    expect(parseQuery(long, q)).toBe(QueryStatus.FormErr);
    expect(parseQuery(Buffer.concat([enc('a').subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]), q)).toBe(QueryStatus.FormErr);
    expect(parseQuery(Buffer.concat([enc('a').subarray(0, 12), Buffer.from([5, 0x61])]), q)).toBe(QueryStatus.FormErr);
    expect(parseQuery(enc('abc').subarray(0, 19), q)).toBe(QueryStatus.FormErr);
    // a name of 255 bytes and more
    const labels = Array.from({ length: 5 }, () => 'x'.repeat(60)).join('.');
    expect(parseQuery(enc(labels), q)).toBe(QueryStatus.FormErr);
    // arcount says 3 records, there are none: refused before walking
    const lying = enc('a');
    lying.writeUInt16BE(3, 10);
    expect(parseQuery(lying, q)).toBe(QueryStatus.FormErr);
    // two OPT records
    const opt = { name: '.', type: 'OPT' as const, udpPayloadSize: 512, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] };
    expect(parseQuery(enc('a', 'A', { additionals: [opt, opt] }), q)).toBe(QueryStatus.FormErr);
    expect(parseQuery(enc('a', 'A', { additionals: [{ ...opt, ednsVersion: 1 }] }), q)).toBe(QueryStatus.BadVers);
  });

  it('folds only ASCII letters into the name key', () => {
    const b = Buffer.from([3, 0x41, 0xc0, 0x7a, 0]); // "A\xC0z"
    expect(wireKey(b, 0, 5)).toBe('\x03a\xc0z\x00');
  });
});

describe('dns forwarder helpers', () => {
  it('accepts only a reply with our ID, QR and our question (any case)', () => {
    const query = enc('Ext.Example');
    const question = query.subarray(12);
    const reply = dnsPacket.encode({ type: 'response', id: 77, questions: [{ name: 'ext.example', type: 'A' }] });
    expect(matches(reply, 77, question)).toBe(true);
    expect(matches(reply, 78, question)).toBe(false);
    const notResp = Buffer.from(reply);
    notResp[2]! &= 0x7f;
    expect(matches(notResp, 77, question)).toBe(false);
    const other = dnsPacket.encode({ type: 'response', id: 77, questions: [{ name: 'ext.example', type: 'AAAA' }] });
    expect(matches(other, 77, question)).toBe(false);
    expect(matches(reply.subarray(0, 20), 77, question)).toBe(false);
  });

  it('parses upstream addresses', () => {
    expect(parseUpstream('1.2.3.4')).toEqual({ host: '1.2.3.4', port: 53 });
    expect(parseUpstream('1.2.3.4:5353')).toEqual({ host: '1.2.3.4', port: 5353 });
    expect(parseUpstream('[fd00::1]:54')).toEqual({ host: 'fd00::1', port: 54 });
    expect(parseUpstream('fd00::1')).toEqual({ host: 'fd00::1', port: 53 });
    expect(() => parseUpstream('dns.example')).toThrow(/not an address/);
    expect(() => parseUpstream('1.2.3.4:99999')).toThrow(/"1\.2\.3\.4:99999" has no valid port \(99999\)/);
    expect(() => parseUpstream('1.2.3.4:')).toThrow(/no valid port/);
    expect(() => parseUpstream('1.2.3.4:0')).toThrow(/no valid port/);
    expect(() => parseUpstream('[fd00::1]:dns')).toThrow(/no valid port \(dns\)/);
    expect(() => parseUpstream('[1.2.3.4]:53')).toThrow(/not an IPv6 address in brackets/);
    expect(parseUpstream('[::1]')).toEqual({ host: '::1', port: 53 });
  });

  const dir = mkdtempSync(join(tmpdir(), 'tnet-dns-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('reads the host resolvers from resolv.conf, skipping loopback (at most 3)', () => {
    const rc = join(dir, 'resolv.conf');
    writeFileSync(rc, '# comment\nsearch corp.example\nnameserver 127.0.0.11\nnameserver 10.0.0.53\nnameserver ::1\nnameserver fd00::53\nnameserver 10.0.0.54\nnameserver 10.0.0.55\noptions ndots:0\n');
    expect(hostUpstreams(rc)).toEqual([
      { host: '10.0.0.53', port: 53 },
      { host: 'fd00::53', port: 53 },
      { host: '10.0.0.54', port: 53 },
    ]);
    // systemd-resolved stub only: its real upstreams are in the other file
    const stub = join(dir, 'stub.conf');
    const real = join(dir, 'real.conf');
    writeFileSync(stub, 'nameserver 127.0.0.53\noptions edns0\n');
    writeFileSync(real, 'nameserver 192.0.2.53\n');
    expect(hostUpstreams(stub, real)).toEqual([{ host: '192.0.2.53', port: 53 }]);
    expect(hostUpstreams(join(dir, 'missing'))).toEqual([]);
  });
});

describe('dns addresses', () => {
  it('parses subnets and matches clients', () => {
    const c = parseCidr('10.1.0.0/20');
    expect(cidrContains(c, clientBytes('10.1.15.255')!)).toBe(true);
    expect(cidrContains(c, clientBytes('10.1.16.0')!)).toBe(false);
    expect(cidrContains(c, clientBytes('::ffff:10.1.0.1')!)).toBe(true);
    expect(cidrContains(c, clientBytes('0:0:0:0:0:ffff:a01:5')!)).toBe(true); // mapped, as the batch path writes it
    const v6 = parseCidr('fd00:1::/63');
    expect(cidrContains(v6, clientBytes('fd00:1:0:1::9')!)).toBe(true);
    expect(cidrContains(v6, clientBytes('fd00:1:0:2::9')!)).toBe(false);
    expect(cidrContains(parseCidr('0.0.0.0/0'), clientBytes('8.8.8.8')!)).toBe(true);
    expect(() => parseCidr('10.0.0.0/33')).toThrow(/prefix/);
    expect(() => parseCidr('nope/8')).toThrow(/not a subnet/);
  });

  it('writes reverse names and socket addresses', () => {
    expect(reverseName(Buffer.from([10, 1, 2, 3]))).toBe('3.2.1.10.in-addr.arpa');
    expect(reverseName(ipv6Bytes('2001:db8::1')!)).toBe(`1.${'0.'.repeat(23)}8.b.d.0.1.0.0.2.ip6.arpa`);
    const sa = Buffer.alloc(32);
    expect(writeSockaddr(sa, 0, '127.0.0.9', 5353)).toBe(16);
    expect([...sa.subarray(0, 8)]).toEqual([2, 0, 0x14, 0xe9, 127, 0, 0, 9]);
    expect(writeSockaddr(sa, 0, 'fd00::1', 53)).toBe(28);
    expect(sa.readUInt16LE(0)).toBe(10);
    expect(writeSockaddr(sa, 0, '300.1.1.1', 53)).toBe(0);
    expect(writeSockaddr(sa, 0, 'fe80::1%eth0', 53)).toBe(0);
  });
});
