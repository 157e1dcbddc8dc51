import { describe, expect, it } from 'vitest';
import { IpAddr } from '../../libnetwork/ipam/address.js';
import {
  DEFAULT_V4_POOLS,
  firstFreeSubnet,
  parsePoolSpecs,
  ulaPrefix,
} from '../../libnetwork/ipam/defaults.js';
import { Subnet } from '../../libnetwork/ipam/subnet.js';
import { refuse } from './refuse.js';


describe('IpAddr', () => {
  it('parses and formats IPv4', () => {
    const a = IpAddr.parse('10.1.2.3');
    expect(a.family).toBe(4);
    expect(a.value).toBe(0x0a010203n);
    expect(a.toString()).toBe('10.1.2.3');
    expect(IpAddr.of(4, 0xffffffffn).toString()).toBe('255.255.255.255');
  });

  it('formats IPv6 in RFC 5952 form', () => {
    const cases: [string, string][] = [
      ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
      ['fd00:0:0:0:0:0:0:0', 'fd00::'],
      ['0:0:0:0:0:0:0:0', '::'],
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // tie: the first run is compressed
      ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longest run is compressed
      ['::ffff:10.0.0.1', '::ffff:10.0.0.1'], // IPv4-mapped keeps the dotted quad
    ];
    for (const [input, want] of cases) expect(IpAddr.parse(input).toString()).toBe(want);
  });

  it('refuses malformed addresses, naming the text', () => {
    for (const bad of ['', '10.0.0', '10.0.0.256', '010.0.0.1', '10.0.0.1 ', 'fd00::g', '1::2::3', 'fe80::1%eth0']) {
      const e = refuse(() => IpAddr.parse(bad));
      if (bad) expect(e.message).toContain(`"${bad}"`);
    }
    expect(refuse(() => IpAddr.parse('10.0.0.1/24')).message).toMatch(/prefix length/);
    refuse(() => IpAddr.of(4, 1n << 32n));
    refuse(() => IpAddr.of(6, -1n));
  });
});

describe('Subnet', () => {
  it('parses IPv4 and IPv6 and reports first, last and size', () => {
    const s = Subnet.parse('10.0.0.0/24');
    expect([s.family, s.network, s.prefix]).toEqual([4, 0x0a000000n, 24]);
    expect(s.first.toString()).toBe('10.0.0.0');
    expect(s.last.toString()).toBe('10.0.0.255');
    expect(s.size).toBe(256n);
    const v6 = Subnet.parse('2001:0db8:0000:0000::/64');
    expect(v6.toString()).toBe('2001:db8::/64');
    expect(v6.size).toBe(1n << 64n);
    expect(v6.last.toString()).toBe('2001:db8::ffff:ffff:ffff:ffff');
    expect(Subnet.parse('0.0.0.0/0').size).toBe(1n << 32n);
    expect(Subnet.parse('10.0.0.7/32').size).toBe(1n);
  });

  it('refuses host bits set and suggests the network', () => {
    const e = refuse(() => Subnet.parse('10.0.0.1/24'));
    expect(e.message).toBe('subnet "10.0.0.1/24" has host bits set; did you mean 10.0.0.0/24?');
    expect(refuse(() => Subnet.parse('fd00::1/64')).message).toContain('did you mean fd00::/64?');
    expect(refuse(() => Subnet.of(4, 0x0a000001n, 24)).message).toContain('did you mean 10.0.0.0/24?');
  });

  it('refuses malformed text and prefixes out of range, naming the text', () => {
    const bad = ['10.0.0.0', '10.0.0.0/', '10.0.0.0/33', '10.0.0.0/-1', '10.0.0.0/024', '10.0.0.0/8/8',
      '10.0.0.0/ 8', '10.0.0/8', 'fd00::/129', 'fd00::%eth0/64', 'x/8', '/8'];
    for (const text of bad) expect(refuse(() => Subnet.parse(text)).message).toContain(`"${text}"`);
    expect(refuse(() => Subnet.parse('10.0.0.0/33')).message).toMatch(/beyond 32/);
    expect(refuse(() => Subnet.parse('fd00::/129')).message).toMatch(/beyond 128/);
    expect(refuse(() => Subnet.parse('10.0.0.0')).message).toMatch(/no prefix length/);
    refuse(() => Subnet.of(4, 0n, 33));
  });

  it('contains and overlaps within one family only', () => {
    const s = Subnet.parse('10.0.0.0/16');
    expect(s.contains(IpAddr.parse('10.0.255.255'))).toBe(true);
    expect(s.contains(IpAddr.parse('10.1.0.0'))).toBe(false);
    expect(s.contains(Subnet.parse('10.0.4.0/24'))).toBe(true);
    expect(s.contains(Subnet.parse('10.0.0.0/8'))).toBe(false);
    expect(s.overlaps(Subnet.parse('10.0.0.0/8'))).toBe(true);
    expect(Subnet.parse('10.0.4.0/24').overlaps(s)).toBe(true);
    expect(s.overlaps(Subnet.parse('10.1.0.0/16'))).toBe(false);
    // ::a00:0/104 has the same integer values as 10.0.0.0/8 but is IPv6.
    expect(Subnet.parse('::a00:0/104').overlaps(Subnet.parse('10.0.0.0/8'))).toBe(false);
    expect(s.contains(IpAddr.of(6, s.network))).toBe(false);
  });
});

describe('default pools', () => {
  const sources = parsePoolSpecs(DEFAULT_V4_POOLS, 4);
  const p = (t: string) => Subnet.parse(t);

  it('go 172.17..172.31 as /16s, then 192.168.0.0/16 as /20s', () => {
    expect(firstFreeSubnet(sources, [])?.toString()).toBe('172.17.0.0/16');
    expect(firstFreeSubnet(sources, [p('172.17.0.0/16')])?.toString()).toBe('172.18.0.0/16');
    // A route covering all of 172.16.0.0/12 is jumped over in one step.
    expect(firstFreeSubnet(sources, [p('172.16.0.0/12')])?.toString()).toBe('192.168.0.0/20');
    expect(firstFreeSubnet(sources, [p('172.16.0.0/12'), p('192.168.0.0/24')])?.toString()).toBe(
      '192.168.16.0/20',
    );
    // Every /16 of 172.17-31 and every /20 of 192.168: 15 + 16 subnets, then none.
    const taken: Subnet[] = [];
    for (let i = 0; i < 31; i++) {
      const s = firstFreeSubnet(sources, taken);
      expect(s).toBeDefined();
      taken.push(s!);
    }
    expect(taken[14]!.toString()).toBe('172.31.0.0/16');
    expect(taken[30]!.toString()).toBe('192.168.240.0/20');
    expect(firstFreeSubnet(sources, taken)).toBeUndefined();
  });

  it('a small blocker skips only the subnet it falls in', () => {
    expect(firstFreeSubnet(sources, [p('172.17.5.0/24')])?.toString()).toBe('172.18.0.0/16');
  });

  it('configured specs are checked', () => {
    refuse(() => parsePoolSpecs([{ base: '10.0.0.0/8', size: 4 }], 4));
    refuse(() => parsePoolSpecs([{ base: '10.0.0.0/8', size: 33 }], 4));
    refuse(() => parsePoolSpecs([{ base: 'fd00::/8', size: 64 }], 4));
    refuse(() => parsePoolSpecs([{ base: '10.0.0.1/8', size: 24 }], 4));
    const custom = parsePoolSpecs([{ base: '10.10.0.0/16', size: 24 }], 4);
    expect(firstFreeSubnet(custom, [p('10.10.0.0/24')])?.toString()).toBe('10.10.1.0/24');
  });

  it('derive a stable ULA /48 from a seed', () => {
    const a = ulaPrefix('/var/lib/tnet');
    expect(a.prefix).toBe(48);
    expect(Subnet.parse('fd00::/8').contains(a)).toBe(true);
    expect(ulaPrefix('/var/lib/tnet').equals(a)).toBe(true);
    expect(ulaPrefix('/other').equals(a)).toBe(false);
  });
});
