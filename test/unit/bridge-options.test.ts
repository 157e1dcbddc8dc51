/**
 * The bridge's options as Docker's built-in bridge takes them (issue 13, item 5): libnetwork's
 * generic keys are honoured (container_iface_prefix), keys the bridge does not act on are
 * accepted and reported (a warning in the driver's log, `ignored_options` in inspect), never
 * refused; a bad value of a known key is still refused, before anything is made. No root: the
 * driver is handed a netlink socket that only reads links.
 */
import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import { bridgeDriver } from '../../drivers/bridge/bridge.js';
import { ALIASES, bridgeConfig } from '../../drivers/bridge/options.js';
import { CONTAINER_IFACE_PREFIX, DEFAULT_BRIDGE, INHIBIT_IPV4 } from '../../libnetwork/netlabel.js';
import { type DriverContext, expandOptions } from '../../libnetwork/driverapi.js';
import { Rtnl } from '../../libnetwork/kernel/index.js';
import type { Network } from '../../libnetwork/model.js';
import { BRIDGE_NAME, DRIVER_MTU, ENABLE_ICC, ENABLE_IP_MASQUERADE, ENABLE_IPV6, HOST_BINDING_IPV4 } from '../../libnetwork/netlabel.js';
import { refuse } from './refuse.js';

const ID = 'ab12'.repeat(16);

describe('generic libnetwork keys', () => {
  it('container_iface_prefix names the interface inside the sandbox; eth without it', () => {
    expect(bridgeConfig(ID, { [CONTAINER_IFACE_PREFIX]: 'ceth' })).toMatchObject({ ifacePrefix: 'ceth', ignored: [] });
    expect(bridgeConfig(ID, {}).ifacePrefix).toBe('eth');
    expect(bridgeConfig(ID, {}).ignored).toEqual([]);
  });

  it('every honoured key together, through the short forms', () => {
    const full = expandOptions(bridgeDriver, { name: 'br-x', icc: 'false', masquerade: 'F', mtu: '1400', 'host-binding-ipv4': '127.0.0.1', 'iface-prefix': 'ceth' });
    expect(full).toEqual({
      [BRIDGE_NAME]: 'br-x', [ENABLE_ICC]: 'false', [ENABLE_IP_MASQUERADE]: 'F', [DRIVER_MTU]: '1400', [HOST_BINDING_IPV4]: '127.0.0.1', [CONTAINER_IFACE_PREFIX]: 'ceth',
    });
    expect(bridgeConfig(ID, full)).toEqual({
      bridge: 'br-x', icc: false, masquerade: false, mtu: 1400, hostBindingIpv4: '127.0.0.1', ifacePrefix: 'ceth', ignored: [],
    });
    expect(ALIASES.bridge).toBe(BRIDGE_NAME);
  });
});

describe('keys the bridge does not act on: accepted and reported, never refused', () => {
  it('unknown keys (a compose driver_opts, a typo, another driver\'s key) are listed as ignored, sorted', () => {
    const c = bridgeConfig(ID, { 'foo.bar': '1', 'com.docker.network.bridge.nosuch': 'x', 'com.docker.network.macvlan.mode': '', [ENABLE_ICC]: 'true' });
    expect(c.icc).toBe(true);
    expect(c.ignored.map((i) => i.key)).toEqual(['com.docker.network.bridge.nosuch', 'com.docker.network.macvlan.mode', 'foo.bar']);
    expect(c.ignored[0]!.why).toMatch(/not a bridge option .*com\.docker\.network\.container_iface_prefix/);
  });

  it("an unknown short form passes through as an unknown key (Docker's bridge would ignore it too)", () => {
    const c = bridgeConfig(ID, expandOptions(bridgeDriver, { nme: 'br0' }));
    expect(c.bridge).toBe(`tn-${ID.slice(0, 12)}`);
    expect(c.ignored.map((i) => i.key)).toEqual(['nme']);
  });

  it("Docker's bridge keys tnet does not implement: value checked, then ignored with the reason", () => {
    const c = bridgeConfig(ID, { [INHIBIT_IPV4]: 'true', [DEFAULT_BRIDGE]: 'false', [ENABLE_IPV6]: '1' });
    expect(c.ignored).toEqual([
      { key: DEFAULT_BRIDGE, why: expect.stringMatching(/docker0/) },
      { key: INHIBIT_IPV4, why: expect.stringMatching(/gateway/) },
      { key: ENABLE_IPV6, why: 'IPv6 is chosen with --ipv6' },
    ]);
    expect(refuse(() => bridgeConfig(ID, { [INHIBIT_IPV4]: 'maybe' })).message).toBe(`option ${INHIBIT_IPV4}="maybe" is not a boolean (use true or false)`);
    refuse(() => bridgeConfig(ID, { [ENABLE_IPV6]: 'yes' }));
  });
});

describe('bad values of known keys are refused, with the reason', () => {
  const cases: [string, Record<string, string>, RegExp][] = [
    ['MTU not a number', { [DRIVER_MTU]: 'abc' }, /MTU "abc" must be a whole number from 68 to 65535/],
    ['MTU too small', { [DRIVER_MTU]: '67' }, /MTU "67"/],
    ['MTU too big', { [DRIVER_MTU]: '65536' }, /MTU "65536"/],
    ['MTU in exponent form', { [DRIVER_MTU]: '1e3' }, /MTU "1e3"/],
    ['ICC not a boolean', { [ENABLE_ICC]: 'yes' }, /enable_icc="yes" is not a boolean/],
    ['masquerade empty', { [ENABLE_IP_MASQUERADE]: '' }, /enable_ip_masquerade="" is not a boolean/],
    ['host binding not IPv4', { [HOST_BINDING_IPV4]: '::1' }, /host binding address "::1" is not an IPv4 address/],
    ['bridge name with %d', { [BRIDGE_NAME]: 'br%d' }, /bridge name "br%d" contains "%", which the kernel replaces with a number/],
    ['bridge name with a bare %', { [BRIDGE_NAME]: 'br%' }, /contains "%"/],
    ['bridge name too long', { [BRIDGE_NAME]: 'b'.repeat(16) }, /is 16 bytes long; the kernel allows at most 15/],
    ['bridge name with /', { [BRIDGE_NAME]: 'a/b' }, /may not contain "\/"/],
    ['bridge name empty', { [BRIDGE_NAME]: '' }, /bridge name "" is empty/],
    ['interface prefix empty', { [CONTAINER_IFACE_PREFIX]: '' }, /container interface prefix is empty/],
    ['interface prefix with %', { [CONTAINER_IFACE_PREFIX]: 'c%d' }, /prefix "c%d" makes no valid interface name: "c%d0" contains "%"/],
    ['interface prefix too long for PREFIX0', { [CONTAINER_IFACE_PREFIX]: 'p'.repeat(15) }, /"p{15}0" is 16 bytes long/],
    ['interface prefix with a space', { [CONTAINER_IFACE_PREFIX]: 'e th' }, /white space/],
  ];
  for (const [what, opts, re] of cases) {
    it(what, () => {
      const e = refuse(() => bridgeConfig(ID, { 'foo.bar': '1', ...opts }));
      expect(e.message).toMatch(re);
    });
  }

  it('a 14-byte prefix is fine (PREFIX0 is 15 bytes)', () => {
    expect(bridgeConfig(ID, { [CONTAINER_IFACE_PREFIX]: 'p'.repeat(14) }).ifacePrefix).toBe('p'.repeat(14));
  });
});

describe('the driver: warnings in its log, ignored keys in inspect', () => {
  const rtnl = Rtnl.open();
  afterAll(() => rtnl.close());
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l) as Record<string, unknown>);
      done();
    },
  });
  const ctx: DriverContext = {
    rtnl,
    nft: undefined as unknown as DriverContext['nft'], // checkNetwork and inspect touch no firewall
    tags: { prefix: 'tnet:ut:', of: (k, id) => `tnet:ut:${k}:${id}`, owner: (t) => t, mine: (t) => t?.startsWith('tnet:ut:') ?? false },
    scope: 'ut',
    store: { get: async () => undefined, put: async () => undefined, delete: async () => undefined, list: async () => [] },
    networks: () => [],
    log: pino({ level: 'debug' }, sink),
  };
  const d = bridgeDriver.create(ctx);
  const opts = { [CONTAINER_IFACE_PREFIX]: 'ceth', 'foo.bar': '1', [INHIBIT_IPV4]: 'false', [BRIDGE_NAME]: 'tnut-opts0' };

  it('checkNetwork accepts unknown keys, returns the options as given, and warns once per ignored key', async () => {
    lines.length = 0;
    expect(await d.checkNetwork({ id: ID, internal: false, options: opts })).toEqual(opts);
    const warns = lines.filter((l) => l.level === 40);
    expect(warns.map((w) => w.option)).toEqual(['com.docker.network.bridge.inhibit_ipv4', 'foo.bar']);
    expect(warns[1]).toMatchObject({ network: ID.slice(0, 12), msg: expect.stringMatching(/^bridge option "foo\.bar" ignored: not a bridge option/) });
  });

  it('checkNetwork refuses a bad value and warns about nothing', async () => {
    lines.length = 0;
    await expect(d.checkNetwork({ id: ID, internal: false, options: { ...opts, [DRIVER_MTU]: 'big' } })).rejects.toMatchObject({ code: 'invalid-argument' });
    await expect(d.checkNetwork({ id: ID, internal: false, options: { [BRIDGE_NAME]: 'br%d' } })).rejects.toMatchObject({ code: 'invalid-argument' });
    expect(lines.filter((l) => l.level === 40)).toEqual([]);
  });

  it('inspect shows the bridge, the interface prefix and the ignored keys', () => {
    const net = { id: ID, options: opts } as unknown as Network;
    expect(d.inspect!(net)).toEqual({ bridge: 'tnut-opts0', container_iface_prefix: 'ceth', ignored_options: 'com.docker.network.bridge.inhibit_ipv4,foo.bar' });
    expect(d.inspect!({ id: ID, options: {} } as unknown as Network)).toEqual({ bridge: `tn-${ID.slice(0, 12)}`, container_iface_prefix: 'eth' });
  });
});
