/**
 * The control API refuses every body that is not exactly what its schema says, and every value the
 * core knows can never work, with a 4xx naming the field, and changes nothing: several hundred
 * generated inputs (wrong types, unknown and near-miss field names, oversize values, missing fields,
 * bodies that are not objects or not JSON, subnets and addresses from a table of never-working ones)
 * against a real controller with a recording driver (no root: no sandboxes here, see
 * test/integration/strict-input.test.ts for connect and publish).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlServer } from '../../libnetwork/api/server.js';
import { MAX_KEYS, MAX_TEXT, nearest } from '../../libnetwork/api/strict.js';
import { Controller } from '../../libnetwork/controller.js';
import { Subnet } from '../../libnetwork/ipam/subnet.js';
import { checkUsableSubnet, unusableReason } from '../../libnetwork/ipam/usable.js';
import type { PortRequest } from '../../libnetwork/model.js';
import { type DnsNames, dnsNameClash } from '../../libnetwork/names.js';
import { type PublishTarget, publishRequests } from '../../libnetwork/ports.js';
import { recordingDriver } from './recording-driver.js';

type Kind = 'name' | 'string' | 'boolean' | 'map' | 'strings' | 'ports';
interface Route {
  readonly url: string;
  readonly valid: Record<string, unknown>;
  readonly fields: Record<string, Kind>;
  readonly required: readonly string[];
}

const ROUTES: readonly Route[] = [
  {
    url: '/networks',
    valid: { name: 'fresh' },
    fields: {
      name: 'name', driver: 'string', subnet: 'string', gateway: 'string', ipRange: 'string', auxAddresses: 'map', ipv6: 'boolean',
      subnet6: 'string', gateway6: 'string', ipRange6: 'string', internal: 'boolean', options: 'map', labels: 'map',
    },
    required: ['name'],
  },
  { url: '/sandboxes', valid: { name: 'fresh' }, fields: { name: 'name' }, required: ['name'] },
  {
    url: '/connect',
    valid: { network: 'n0', sandbox: 'nosuch' },
    fields: { network: 'name', sandbox: 'name', ip: 'string', ip6: 'string', mac: 'string', aliases: 'strings', ports: 'ports' },
    required: ['network', 'sandbox'],
  },
  { url: '/disconnect', valid: { network: 'n0', sandbox: 'nosuch' }, fields: { network: 'name', sandbox: 'name' }, required: ['network', 'sandbox'] },
];

/** Values of every JSON type but the one `kind` wants (and wrong shapes inside maps, lists, ports). */
const WRONG: Record<Kind, readonly unknown[]> = {
  name: [123, 1.5, true, false, null, [], {}, ['a'], { a: 'b' }, ''],
  string: [123, 1.5, -1, true, false, null, [], {}, ['10.0.0.0/24'], { a: 'b' }],
  boolean: ['true', 'false', 1, 0, null, [], {}, 'yes', [true]],
  map: ['x', 1, true, null, [], ['a=b'], { a: 1 }, { a: true }, { a: null }, { a: {} }, { a: ['b'] }],
  strings: ['a', 1, true, null, {}, [1], [null], [{}], [['a']], [true]],
  ports: [
    'x', 80, {}, null, [80], ['80:80'], [null], [{}],
    [{ containerPort: 80 }], [{ proto: 'tcp' }], [{ proto: 'TCP', containerPort: 80 }], [{ proto: 'icmp', containerPort: 80 }],
    [{ proto: 'tcp', containerPort: '80' }], [{ proto: 'tcp', containerPort: 80.5 }], [{ proto: 'tcp', containerPort: 0 }],
    [{ proto: 'tcp', containerPort: 65536 }], [{ proto: 'tcp', containerPort: -80 }], [{ proto: 'tcp', containerPort: 80, hostPort: -1 }],
    [{ proto: 'tcp', containerPort: 80, hostPort: '8080' }], [{ proto: 'tcp', containerPort: 80, hostPort: 70000 }],
    [{ proto: 'tcp', containerPort: 80, hostPortEnd: true }], [{ proto: 'tcp', containerPort: 80, hostIp: 1 }],
    [{ proto: 'tcp', containerPort: 80, HostPort: 8080 }], [{ proto: 'tcp', containerport: 80 }], [{ proto: 'tcp', containerPort: 80, extra: 1 }],
  ],
};

/** Field names one slip away from a real one: case, a missing or doubled letter, snake_case, swapped letters. */
function nearMisses(f: string): string[] {
  const out = new Set([
    f[0]!.toUpperCase() + f.slice(1), f.toUpperCase(), f.toLowerCase(), f.slice(0, -1), f + 's', f[1]! + f[0]! + f.slice(2),
    f.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), f.slice(0, 2) + f.slice(3),
  ]);
  out.delete(f);
  return [...out];
}

let dir: string;
let c: Controller;
let app: FastifyInstance;
let tried = 0;

/** Everything the store holds that a request could change. */
async function snapshot(): Promise<string> {
  const pools = (await c.pools()).map((p) => `${p.id} ${p.subnet}`);
  return JSON.stringify({ n: c.networks(), s: c.sandboxes(), e: c.endpoints(), pools }, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}

/** Sends a request that must be refused: a 4xx naming `mention`, and nothing changed in the store. */
async function refused(method: 'POST' | 'GET' | 'DELETE', url: string, payload: unknown, mention: RegExp, opts: { raw?: string; type?: string } = {}) {
  tried++;
  const before = await snapshot();
  const r = await app.inject({
    method, url,
    ...(opts.raw !== undefined ? { payload: opts.raw } : payload === undefined ? {} : { payload: JSON.stringify(payload) }),
    headers: payload === undefined && opts.raw === undefined ? {} : { 'content-type': opts.type ?? 'application/json' },
  });
  const what = `${method} ${url} ${opts.raw ?? JSON.stringify(payload)?.slice(0, 200)}`;
  expect(r.statusCode, `${what}: ${r.body}`).toBeGreaterThanOrEqual(400);
  expect(r.statusCode, `${what}: ${r.body}`).toBeLessThan(500);
  const body = r.json() as { error: { code: string; message: string } };
  expect(body.error.message, what).toMatch(mention);
  expect(await snapshot(), `${what} changed nothing`).toBe(before);
  return body.error;
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tnet-strict-'));
  c = await Controller.open({ stateDir: dir, drivers: [recordingDriver('bridge', () => [])] });
  await c.createNetwork({ name: 'n0', subnet: '10.200.0.0/24' });
  app = await controlServer(Promise.resolve(c));
});
afterAll(async () => {
  await app.close();
  c.close();
  rmSync(dir, { recursive: true, force: true });
  console.log(`strict-input: ${tried} refused inputs tried`);
});

describe('the control API takes exactly what its schemas say', () => {
  it('the issue\'s example: a misspelt "Subnet" and "interal" are refused with the field they meant, not dropped', async () => {
    const e = await refused('POST', '/networks', { name: 'n', Subnet: '10.1.0.0/24', interal: true }, /unknown field "Subnet".*did you mean "subnet"/);
    expect(e.code).toBe('invalid-argument');
    await refused('POST', '/networks', { name: 'n', subnet: '10.1.0.0/24', interal: true }, /unknown field "interal".*did you mean "internal"/);
    await refused('POST', '/networks', { name: 'n', internal: 'true' }, /field "internal" must be boolean/);
    expect(c.networks().map((n) => n.name)).toEqual(['n0']);
  });

  it('a value of the wrong type in any field of any route', async () => {
    for (const r of ROUTES)
      for (const [f, kind] of Object.entries(r.fields))
        for (const v of WRONG[kind]) await refused('POST', r.url, { ...r.valid, [f]: v }, new RegExp(`"${esc(f)}`));
  });

  it('unknown fields and near-miss field names, at the top and inside a port', async () => {
    for (const r of ROUTES) {
      for (const f of Object.keys(r.fields)) {
        for (const miss of nearMisses(f)) {
          if (miss in r.fields) continue;
          const e = await refused('POST', r.url, { ...r.valid, [miss]: 'x' }, new RegExp(`unknown field "${esc(miss)}"`));
          const hint = nearest(miss, Object.keys(r.fields));
          if (hint) expect(e.message).toContain(`did you mean "${hint}"`);
        }
      }
      for (const extra of ['foo', 'id', 'owner', 'Name', 'x'.repeat(300)])
        if (!(extra in r.fields)) await refused('POST', r.url, { ...r.valid, [extra]: 1 }, /unknown field/);
    }
    await refused('POST', '/connect', { network: 'n0', sandbox: 's', ports: [{ proto: 'tcp', containerPort: 80, hostport: 8080 }] }, /unknown field "ports\[0\]\.hostport".*did you mean "hostPort"/);
  });

  it('oversize values: long strings, too many keys, too many aliases', async () => {
    for (const r of ROUTES) {
      for (const [f, kind] of Object.entries(r.fields)) {
        if (kind === 'name' || kind === 'string') await refused('POST', r.url, { ...r.valid, [f]: 'a'.repeat(kind === 'name' ? 256 : MAX_TEXT + 1) }, new RegExp(`"${f}" is longer than`));
        if (kind === 'map') {
          await refused('POST', r.url, { ...r.valid, [f]: Object.fromEntries(Array.from({ length: MAX_KEYS + 1 }, (_, i) => [`k${i}`, 'v'])) }, new RegExp(`"${f}" has more than ${MAX_KEYS} keys`));
          await refused('POST', r.url, { ...r.valid, [f]: { k: 'v'.repeat(MAX_TEXT + 1) } }, new RegExp(`"${f}\\.k" is longer than`));
          await refused('POST', r.url, { ...r.valid, [f]: { ['k'.repeat(256)]: 'v' } }, new RegExp(`"${f}"`));
        }
        if (kind === 'strings') {
          await refused('POST', r.url, { ...r.valid, [f]: Array.from({ length: 65 }, (_, i) => `a${i}`) }, new RegExp(`"${f}" has more than 64 items`));
          await refused('POST', r.url, { ...r.valid, [f]: ['a'.repeat(254)] }, new RegExp(`"${f}\\[0\\]" is longer than`));
        }
      }
    }
    // Larger than the body limit: 413, before any parsing.
    await refused('POST', '/networks', { name: 'n', labels: { big: 'x'.repeat(1 << 20) } }, /larger than \d+ bytes/);
  });

  it('a missing required field, a body that is not an object, a body that is not JSON', async () => {
    for (const r of ROUTES) {
      for (const f of r.required) {
        const body = { ...r.valid };
        delete body[f];
        await refused('POST', r.url, body, new RegExp(`field "${f}" is required`));
      }
      for (const v of [null, [], [r.valid], 'x', 1, true]) await refused('POST', r.url, v, /the request body must be object/);
      for (const raw of ['{', '{"name":', "{'name':'x'}", '{"name":"x",}', 'nul', '{"name":"x"}{}', '\u0000'])
        await refused('POST', r.url, undefined, /request|JSON|body/i, { raw });
      await refused('POST', r.url, undefined, /request|body/i, { raw: '' });
      await refused('POST', r.url, undefined, /media type|content-type|request/i, { raw: JSON.stringify(r.valid), type: 'text/plain' });
    }
  });

  it('references in paths: too long, unknown routes and methods', async () => {
    for (const base of ['/networks', '/sandboxes', '/ports'])
      await refused('GET', `${base}/${'a'.repeat(300)}`, undefined, /"ref" is longer than/);
    await refused('DELETE', `/networks/${'a'.repeat(300)}`, undefined, /"ref" is longer than/);
    await refused('GET', '/nosuch', undefined, /not part of the control API/);
    for (const q of ['force=1', 'name=x', 'Subnet=10.1.0.0/24']) {
      await refused('POST', `/networks?${q}`, { name: 'fresh' }, new RegExp(`unknown field "${q.split('=')[0]}" in the querystring`));
      await refused('DELETE', `/networks/n0?${q}`, undefined, /unknown field .* in the querystring/);
    }
    await refused('POST', '/networks/n0', {}, /not part of the control API/);
    await refused('GET', '/networks/nosuch', undefined, /nosuch/);
  });
});

/** Subnets no network can use, and CIDR text that is not a subnet: each refused by the core, naming it. */
const BAD_V4 = [
  '0.0.0.0/0', '0.0.0.0/1', '0.0.0.0/8', '0.1.0.0/16', '127.0.0.0/8', '127.5.0.0/16', '127.0.0.1/32', '126.0.0.0/7', '169.254.0.0/16',
  '169.254.3.0/24', '224.0.0.0/4', '224.1.0.0/16', '239.255.255.0/24', '240.0.0.0/4', '250.0.0.0/8', '255.255.255.255/32',
  '255.255.255.0/24', '128.0.0.0/1', '10.9.0.0/32', '192.168.77.1/32',
  '10.0.0.1/24', '10.0.0.0/33', '10.0.0.0', '300.0.0.0/8', '10.0.0.0/-1', '10.0.0.0/08', ' 10.0.0.0/24', '10.0.0.0/24 ', 'abc',
  '10.0.0.0/24/24', '10.0.0/24', '10.0.0.0.0/24', '0x0a000000/8', '/24', '10.0.0.0/', '10.1.0.0/16\n',
];
const BAD_V6 = [
  '::/0', '::/1', '::/128', '::1/128', '::/96', '::ffff:0:0/96', '::ffff:10.0.0.0/120', 'fe80::/10', 'fe80::/64', 'febf:1::/64',
  'ff00::/8', 'ff02::/16', 'ff05::1:3/128', 'fd00:1::/128', 'fd00::1/64', 'fd00::/129', 'fd00::%eth0/64', 'fd00:::/64', 'gggg::/64',
];

describe('subnets and addresses that can never work are refused before anything is recorded', () => {
  it('the rule in one place (ipam/usable.ts): never-working blocks, a /32 or /128 with a gateway', () => {
    for (const s of BAD_V4.concat(BAD_V6)) {
      let subnet: Subnet;
      try {
        subnet = Subnet.parse(s);
      } catch {
        continue;
      }
      expect(() => checkUsableSubnet(subnet, true), s).toThrow(/cannot carry a network/);
    }
    for (const ok of ['10.0.0.0/8', '172.17.0.0/16', '192.168.0.0/16', '100.64.0.0/10', '10.1.0.0/31', 'fd00::/64', '2001:db8::/32', 'fd00::/127', '1.0.0.0/8', '223.255.255.0/24'])
      expect(() => checkUsableSubnet(Subnet.parse(ok), true), ok).not.toThrow();
    // Without a gateway a single address is one host.
    expect(() => checkUsableSubnet(Subnet.parse('10.9.0.0/32'), false)).not.toThrow();
    expect(unusableReason(Subnet.parse('126.0.0.0/7'))).toMatch(/overlaps loopback/);
  });

  it('through the control API: every bad subnet, subnet6, and a gateway, range or aux address outside its subnet', async () => {
    for (const s of BAD_V4) await refused('POST', '/networks', { name: 'bad', subnet: s }, new RegExp(`${esc(s.trim() || 'subnet')}|subnet`));
    for (const s of BAD_V6) await refused('POST', '/networks', { name: 'bad', ipv6: true, subnet6: s }, new RegExp(`${esc(s)}|subnet`));
    const outside: Record<string, unknown>[] = [
      { subnet: '10.50.0.0/24', gateway: '10.51.0.1' }, { subnet: '10.50.0.0/24', gateway: '10.50.0.0' }, { subnet: '10.50.0.0/24', gateway: '10.50.0.255' },
      { subnet: '10.50.0.0/24', gateway: '127.0.0.1' }, { subnet: '10.50.0.0/24', gateway: 'fd00::1' }, { subnet: '10.50.0.0/24', gateway: '10.50.0.1/24' },
      { subnet: '10.50.0.0/24', ipRange: '10.51.0.0/25' }, { subnet: '10.50.0.0/24', ipRange: '10.50.0.0/23' }, { subnet: '10.50.0.0/24', ipRange: '10.50.0.7/25' },
      { subnet: '10.50.0.0/24', auxAddresses: { r: '10.60.0.5' } }, { subnet: '10.50.0.0/24', auxAddresses: { r: '10.50.0.255' } },
      { subnet: '10.50.0.0/24', auxAddresses: { r: 'x' } }, { subnet: '10.50.0.0/24', auxAddresses: { r: '10.50.0.1' } },
      { subnet: '10.50.0.0/24', auxAddresses: { a: '10.50.0.9', b: '10.50.0.9' } }, { gateway: '10.50.0.1' }, { ipRange: '10.50.0.0/25' },
      { subnet: '10.200.0.0/25' }, { subnet: '10.200.0.0/16' }, { subnet: 'fd00:5::/64' },
      { ipv6: true, subnet6: 'fd00:5::/64', gateway6: 'fd00:6::1' }, { ipv6: true, subnet6: 'fd00:5::/64', ipRange6: 'fd00:6::/80' },
      { subnet6: 'fd00:5::/64' }, { ipv6: true, subnet6: '10.50.0.0/24' }, { driver: 'nosuch' }, { driver: '' },
    ];
    for (const o of outside) await refused('POST', '/networks', { name: 'bad', ...o }, /subnet|gateway|range|aux|address|IPv6|driver|overlap/i);
    for (const n of ['a b', '-x', '.x', 'x'.repeat(64), 'é', 'a/b', 'n0', '../x']) await refused('POST', '/networks', { name: n }, /name|exists/);
    // A network's name is a DNS zone: one that differs only in case from another is refused.
    for (const n of ['N0', 'n0'.toUpperCase()]) await refused('POST', '/networks', { name: n }, /network "N0" differs only in case from network "n0"/);
  });

  it("the control API touches only its own objects: a lab's network is refused for connect and disconnect, and for rm", async () => {
    await c.createNetwork({ name: 'labnet', subnet: '10.210.0.0/24', owner: 'lab:l1' });
    for (const url of ['/connect', '/disconnect'])
      await refused('POST', url, { network: 'labnet', sandbox: 'nosuch' }, /network "labnet" belongs to lab "l1"; use tnet destroy l1/);
    await refused('DELETE', '/networks/labnet', undefined, /belongs to lab "l1"/);
    await c.deleteNetwork('labnet', { owner: 'lab:l1' });
  });

  it('the valid bodies are accepted (so the refusals above are about the field, not the route)', async () => {
    const r = await app.inject({ method: 'POST', url: '/networks', payload: { name: 'fresh', subnet: '10.1.0.0/31', internal: false, labels: { a: 'b' } } });
    expect(r.statusCode, r.body).toBe(201);
    const r6 = await app.inject({ method: 'POST', url: '/networks', payload: { name: 'fresh6', ipv6: true, subnet6: 'fd00:77::/127' } });
    expect(r6.statusCode, r6.body).toBe(201);
    expect(c.networks().map((n) => n.name).sort()).toEqual(['fresh', 'fresh6', 'n0']);
    const d = await app.inject({ method: 'POST', url: '/disconnect', payload: { network: 'n0', sandbox: 'nosuch' } });
    expect(d.statusCode).toBe(404);
  });
});

describe('publishes that can never match are refused before anything changes (ports.ts publishRequests)', () => {
  const target = (o: Partial<PublishTarget> = {}): PublishTarget => ({
    network: 'web', ipv4: true, ipv6: false, defaultHostIp: '', localAddresses: async () => new Set(['127.0.0.1', '10.0.2.15', '::1', 'fd00:9::1']), ...o,
  });
  const req = (hostIp: string, hostPort = 8080, containerPort = 80, proto: 'tcp' | 'udp' = 'tcp'): PortRequest => ({ proto, containerPort, hostIp, hostPort, hostPortEnd: 0 });
  it('an IPv4 host address on an IPv6-only network; an IPv6 one on an IPv4-only network goes through the proxy', async () => {
    for (const ip of ['::ffff:10.0.2.15', '2001:db8::1']) {
      tried++;
      await expect(publishRequests([req(ip)], target())).rejects.toThrow(/is not an address of this host/);
    }
    for (const ip of ['::1', 'fd00:9::1']) expect(await publishRequests([req(ip)], target())).toEqual([req(ip)]);
    tried++;
    await expect(publishRequests([req('10.0.2.15')], target({ ipv4: false, ipv6: true }))).rejects.toThrow(/is IPv4 but network "web" has no IPv4 subnet/);
    expect(await publishRequests([req('::1')], target({ ipv6: true }))).toEqual([req('::1')]);
  });
  it('a host address that is not the host\'s own, given or from the network\'s host_binding_ipv4', async () => {
    for (const ip of ['10.0.2.16', '192.0.2.1', '224.0.0.1', '255.255.255.255', '0.0.0.1', '127.0.0.2']) {
      tried++;
      await expect(publishRequests([req(ip)], target())).rejects.toThrow(new RegExp(`host address ${ip.replace(/\./g, '\\.')} is not an address of this host`));
    }
    tried++;
    await expect(publishRequests([req('')], target({ defaultHostIp: '192.0.2.9' }))).rejects.toThrow(/192\.0\.2\.9 \(the host_binding_ipv4 of network "web"\) is not an address of this host/);
    expect(await publishRequests([req('')], target({ defaultHostIp: '10.0.2.15' }))).toEqual([req('10.0.2.15')]);
  });
  it('one host port twice in one request: the whole message, both specs; the same mapping twice is one', async () => {
    const clashes: PortRequest[][] = [
      [req(''), req('', 8080, 81)], [req('10.0.2.15'), req('', 8080, 81)], [req(''), req('127.0.0.1', 8080, 81)], [req('127.0.0.1'), req('127.0.0.1', 8080, 443)],
      [req('', 9000, 1, 'udp'), req('', 9000, 2, 'udp')],
    ];
    for (const c2 of clashes) {
      tried++;
      const e = await publishRequests(c2, target()).then(() => undefined, (x: Error) => x);
      expect(e?.message, JSON.stringify(c2)).toMatch(/^-p \S+ and -p \S+ both ask for host port \S+:\d+\/(tcp|udp); a host port can be published once$/);
    }
    expect(await publishRequests([req(''), req('')], target())).toEqual([req('')]);
    expect(await publishRequests([req(''), req('', 8080, 80, 'udp')], target())).toHaveLength(2);
    expect(await publishRequests([req('127.0.0.1'), req('10.0.2.15', 8080, 81)], target())).toHaveLength(2);
  });
});

describe('names that would answer ambiguously in DNS are refused (names.ts dnsNameClash)', () => {
  const on = (network: string, sandboxId: string, ...names: string[]): DnsNames => ({ names, network, sandboxId });
  it('case-only differences and NAME.NETWORK look-alikes, from both sides', () => {
    const others = [on('web', 's1', 'w', 'svc'), on('db', 's2', 'pg.web'), on('web', 's3', 'Api')];
    const refusedNames: [string[], string, RegExp][] = [
      [['W'], 'web', /differs only in case from "w"/], [['SVC'], 'other', /differs only in case from "svc"/], [['api'], 'web', /differs only in case from "Api"/],
      [['w.web'], 'web', /is the DNS name of "w" on network "web"/], [['W.WEB'], 'db', /is the DNS name of "w" on network "web"/],
      [['x', 'svc.web'], 'web', /"svc\.web" is the DNS name of "svc"/], [['pg'], 'web', /"pg\.web" \(on network "db"\) is already the name "pg" would get/],
    ];
    for (const [names, net, re] of refusedNames) {
      tried++;
      expect(dnsNameClash(names, net, 'new', others), `${names} on ${net}`).toMatch(re);
    }
    // Clear: the same spelling shared on purpose, a name of its own sandbox, unrelated dotted names.
    for (const [names, net] of [[['svc'], 'web'], [['w2'], 'web'], [['w.db'], 'web'], [['pg'], 'db'], [['w.webx'], 'web'], [['a.b.c'], 'web']] as [string[], string][])
      expect(dnsNameClash(names, net, 'new', others), `${names} on ${net}`).toBeUndefined();
    expect(dnsNameClash(['w.web'], 'db', 's1', others)).toBeUndefined(); // s1's own name
  });
});
