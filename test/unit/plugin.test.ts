/**
 * The Docker plugin face without root: the HTTP plumbing against a fake backend (schemas,
 * content types, error shapes, 404s, size limit), the socket (mode, answering before the
 * controller is ready), and the pure parsers.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { DockerUserChain, type NetworkDriverApi, addressOfCidr, parsePortMap } from '../../libnetwork/plugin/docker.js';
import { conflict, notFound } from '../../libnetwork/errors.js';
import { startPlugin } from '../../libnetwork/plugin/index.js';
import { pluginApp } from '../../libnetwork/plugin/server.js';
import type { Controller } from '../../libnetwork/controller.js';

const N = 'a'.repeat(64);
const E = 'b'.repeat(64);

function fakeNetwork(calls: { name: string; body: unknown }[]): NetworkDriverApi {
  const rec = (name: string) => async (body: unknown) => {
    calls.push({ name, body });
    return undefined as never;
  };
  return {
    capabilities: () => ({ Scope: 'local', ConnectivityScope: 'local' }),
    createNetwork: async (r) => {
      calls.push({ name: 'createNetwork', body: r });
      if (r.NetworkID === 'c'.repeat(64)) throw conflict('subnet 10.0.0.0/24 overlaps 10.0.0.0/16 of pool p');
    },
    deleteNetwork: rec('deleteNetwork'),
    createEndpoint: async (r) => {
      calls.push({ name: 'createEndpoint', body: r });
      return { Interface: { MacAddress: '02:42:0a:00:00:02' } };
    },
    endpointOperInfo: async () => ({ Value: { 'com.docker.network.endpoint.macaddress': '02:42:0a:00:00:02' } }),
    deleteEndpoint: rec('deleteEndpoint'),
    join: async (r) => {
      calls.push({ name: 'join', body: r });
      if (r.EndpointID === 'f'.repeat(64)) throw notFound(`endpoint ffffffffffff does not exist on network ${N.slice(0, 12)}`);
      return { InterfaceName: { SrcName: 'tnc0123', DstPrefix: 'eth' }, Gateway: '10.0.0.1' };
    },
    leave: rec('leave'),
    programExternalConnectivity: rec('program'),
    revokeExternalConnectivity: rec('revoke'),
  };
}

describe('plugin HTTP face (fake backend)', () => {
  let app: FastifyInstance;
  const calls: { name: string; body: unknown }[] = [];
  beforeAll(async () => {
    app = await pluginApp(
      {
        network: fakeNetwork(calls),
        ipam: {
          capabilities: () => ({ RequiresMACAddress: false, RequiresRequestReplay: false }),
          defaultAddressSpaces: () => ({ LocalDefaultAddressSpace: 'tnet-local', GlobalDefaultAddressSpace: 'tnet-global' }),
          requestPool: async () => {
            throw conflict('no free IPv4 default pool left');
          },
          releasePool: async () => undefined,
          requestAddress: async () => ({ Address: '10.0.0.2/24', Data: {} }),
          releaseAddress: async () => undefined,
        },
      },
      { bodyLimit: 4096 },
    );
  });
  afterAll(() => app.close());

  const post = (url: string, payload = '', headers: Record<string, string> = {}) => app.inject({ method: 'POST', url, payload, headers });

  it('activates as both a NetworkDriver and an IpamDriver, with an empty body', async () => {
    const r = await post('/Plugin.Activate');
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ Implements: ['NetworkDriver', 'IpamDriver'] });
  });

  it('answers the capability calls with empty bodies', async () => {
    expect((await post('/NetworkDriver.GetCapabilities')).json()).toEqual({ Scope: 'local', ConnectivityScope: 'local' });
    expect((await post('/IpamDriver.GetCapabilities')).json()).toEqual({ RequiresMACAddress: false, RequiresRequestReplay: false });
    expect((await post('/IpamDriver.GetDefaultAddressSpaces')).json()).toEqual({
      LocalDefaultAddressSpace: 'tnet-local', GlobalDefaultAddressSpace: 'tnet-global',
    });
  });

  it('parses JSON whatever the Content-Type says', async () => {
    const body = JSON.stringify({ NetworkID: N, EndpointID: E, SandboxKey: '/var/run/docker/netns/x', Options: {} });
    for (const ct of [undefined, 'text/plain', 'application/vnd.docker.plugins.v1.2+json', 'application/json']) {
      const r = await post('/NetworkDriver.Join', body, ct ? { 'content-type': ct } : {});
      expect(r.statusCode, `content-type ${ct}`).toBe(200);
      expect(r.json()).toEqual({ InterfaceName: { SrcName: 'tnc0123', DstPrefix: 'eth' }, Gateway: '10.0.0.1' });
    }
    expect(calls.filter((c) => c.name === 'join')).toHaveLength(4);
  });

  it('answers success with {} (a handler returning nothing)', async () => {
    const r = await post('/NetworkDriver.Leave', JSON.stringify({ NetworkID: N, EndpointID: E }));
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({});
  });

  it('refuses malformed JSON with 400 and {"Err"}, calling nothing', async () => {
    const before = calls.length;
    const r = await post('/NetworkDriver.CreateNetwork', '{"NetworkID": ');
    expect(r.statusCode).toBe(400);
    expect(r.json().Err).toMatch(/not valid JSON/);
    expect(calls.length).toBe(before);
  });

  it('refuses wrong types and missing fields, naming the field, never coercing', async () => {
    const before = calls.length;
    const cases: [string, unknown, RegExp][] = [
      ['/NetworkDriver.CreateNetwork', { NetworkID: 12 }, /NetworkID must be string/],
      ['/NetworkDriver.CreateNetwork', { NetworkID: 'net1' }, /NetworkID must match pattern/],
      ['/NetworkDriver.CreateNetwork', { NetworkID: N, IPv4Data: 'x' }, /IPv4Data must be array,null/],
      ['/NetworkDriver.CreateNetwork', {}, /must have required property 'NetworkID'/],
      ['/NetworkDriver.CreateEndpoint', { NetworkID: N, EndpointID: E, Interface: { Address: 5 } }, /Address must be string/],
      ['/NetworkDriver.Join', { NetworkID: N, EndpointID: E }, /SandboxKey/],
      ['/NetworkDriver.Leave', [N, E], /body must be object/],
      ['/NetworkDriver.Leave', 'null', /body must be object/],
    ];
    for (const [url, body, re] of cases) {
      const r = await post(url, typeof body === 'string' ? body : JSON.stringify(body));
      expect(r.statusCode, `${url} ${JSON.stringify(body)}`).toBe(400);
      expect(r.json().Err).toMatch(re);
    }
    expect(calls.length).toBe(before);
  });

  it('maps an operation error to HTTP 200 {"Err": message}', async () => {
    const r = await post('/NetworkDriver.CreateNetwork', JSON.stringify({ NetworkID: 'c'.repeat(64) }));
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ Err: 'subnet 10.0.0.0/24 overlaps 10.0.0.0/16 of pool p' });
    const j = await post('/NetworkDriver.Join', JSON.stringify({ NetworkID: N, EndpointID: 'f'.repeat(64), SandboxKey: '/x' }));
    expect(j.json().Err).toMatch(/does not exist/);
  });

  it('IPAM errors use the key "Error" on HTTP 200 (dockerd reads them only there)', async () => {
    const r = await post('/IpamDriver.RequestPool', JSON.stringify({ AddressSpace: 'tnet-local', Pool: '', V6: false }));
    expect(r.statusCode).toBe(200);
    expect(r.json()).toEqual({ Error: 'no free IPv4 default pool left' });
    const bad = await post('/IpamDriver.RequestAddress', JSON.stringify({ PoolID: 7 }));
    expect(bad.statusCode).toBe(200);
    expect(bad.json().Error).toMatch(/PoolID must be string/);
    expect(bad.json().Err).toBeUndefined();
    const junk = await post('/IpamDriver.ReleaseAddress', '{{');
    expect(junk.statusCode).toBe(200);
    expect(junk.json().Error).toMatch(/not valid JSON/);
  });

  it('404 for what is not implemented (AllocateNetwork is swarm-only), in the right shape', async () => {
    const r = await post('/NetworkDriver.AllocateNetwork', JSON.stringify({ NetworkID: N }));
    expect(r.statusCode).toBe(404);
    expect(r.json().Err).toMatch(/not implemented/);
    expect((await post('/VolumeDriver.Create', '{}')).statusCode).toBe(404);
    expect((await app.inject({ method: 'GET', url: '/NetworkDriver.Join' })).statusCode).toBe(404);
  });

  it('refuses a body over the limit with 413, calling nothing', async () => {
    const before = calls.length;
    const r = await post('/NetworkDriver.CreateNetwork', JSON.stringify({ NetworkID: N, Options: { x: 'y'.repeat(10_000) } }));
    expect(r.statusCode).toBe(413);
    expect(r.json().Err).toMatch(/too large/);
    expect(calls.length).toBe(before);
  });

  it('records handling times per call', async () => {
    const r = await app.inject({ method: 'GET', url: '/tnet/timings' });
    const t = r.json() as Record<string, number[]>;
    expect(t['NetworkDriver.Join']?.length).toBeGreaterThanOrEqual(4);
  });
});

describe('startPlugin: the socket', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tnet-plugin-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const call = (path: string, sock: string, body = '') =>
    new Promise<{ status: number; body: string }>((res, rej) => {
      // As dockerd sends it: no Content-Type.
      const req = request({ socketPath: sock, path, method: 'POST', headers: { 'Content-Length': Buffer.byteLength(body) } }, (resp) => {
        let text = '';
        resp.on('data', (c) => (text += c));
        resp.on('end', () => res({ status: resp.statusCode ?? 0, body: text }));
      });
      req.on('error', rej);
      req.end(body);
    });

  it('answers Activate before the controller is ready, from a 0660 socket; close removes it', async () => {
    const t0 = performance.now();
    const never = new Promise<Controller>(() => undefined);
    const h = await startPlugin(never, { dir });
    const sock = join(dir, 'tnet.sock');
    const r = await call('/Plugin.Activate', sock);
    const ms = performance.now() - t0;
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ Implements: ['NetworkDriver', 'IpamDriver'] });
    expect(ms).toBeLessThan(300);
    const st = statSync(sock);
    expect(st.isSocket()).toBe(true);
    expect(st.mode & 0o777).toBe(0o660);
    expect(st.uid).toBe(process.getuid?.());
    const caps = await call('/NetworkDriver.GetCapabilities', sock);
    expect(JSON.parse(caps.body)).toEqual({ Scope: 'local', ConnectivityScope: 'local' });
    const j = await call('/NetworkDriver.CreateNetwork', sock, `{"NetworkID": 1}`);
    expect(j.status).toBe(400);
    await expect(startPlugin(never, { dir })).rejects.toThrow(/another process is serving/);
    await h.close();
    expect(() => statSync(sock)).toThrow();
  });
});

describe('wire parsers', () => {
  it('reads dockerd portmaps (Proto numbers, ranges, every-address host IPs)', () => {
    expect(
      parsePortMap({
        'com.docker.network.portmap': [
          { Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: 18080, HostPortEnd: 18080 },
          { Proto: 17, IP: '', Port: 53, HostIP: '127.0.0.1', HostPort: 5353, HostPortEnd: 5360 },
          { Proto: 6, IP: '', Port: 443, HostIP: '0.0.0.0', HostPort: 0, HostPortEnd: 0 },
        ],
      }),
    ).toEqual([
      { proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 18080, hostPortEnd: 0 },
      { proto: 'udp', containerPort: 53, hostIp: '127.0.0.1', hostPort: 5353, hostPortEnd: 5360 },
      { proto: 'tcp', containerPort: 443, hostIp: '', hostPort: 0, hostPortEnd: 0 },
    ]);
    expect(parsePortMap({})).toEqual([]);
    expect(parsePortMap(null)).toEqual([]);
  });

  it('refuses bad portmaps clearly', () => {
    const pm = (b: unknown) => () => parsePortMap({ 'com.docker.network.portmap': b });
    expect(pm('x')).toThrow(/must be a list/);
    expect(pm([{ Proto: 1, Port: 80 }])).toThrow(/protocol 1 is not/);
    expect(pm([{ Proto: 6, Port: 0 }])).toThrow(/Port 0 is not a port number/);
    expect(pm([{ Proto: 6, Port: 80, HostPort: 70000 }])).toThrow(/HostPort 70000/);
    expect(pm([{ Proto: 6, Port: 80, HostPort: 90, HostPortEnd: 85 }])).toThrow(/range 90-85 is empty/);
    expect(pm([{ Proto: 6, Port: 80, HostIP: 'nope' }])).toThrow(/not a valid IP/);
  });

  it('splits dockerd CIDR addresses', () => {
    expect(addressOfCidr('10.99.0.1/24', 'gateway').address.toString()).toBe('10.99.0.1');
    expect(addressOfCidr('fd00:97::1/64', 'gateway').prefix).toBe(64);
    expect(() => addressOfCidr('10.99.0.1', 'gateway')).toThrow(/prefix length/);
    expect(() => addressOfCidr('10.99.0.1/40', 'gateway')).toThrow(/longer than the address/);
  });
});

describe('DOCKER-USER rules', () => {
  const TAG = 'tnet:abcd1234:';
  function fake(save: string) {
    const restores: string[] = [];
    const exec = async (file: string, _args: readonly string[], input?: string) => {
      if (file.endsWith('-save')) return file.startsWith('ip6') ? { code: 0, out: '*filter\nCOMMIT\n' } : { code: 0, out: save };
      restores.push(input ?? '');
      return { code: 0, out: '' };
    };
    return { chain: new DockerUserChain(TAG, exec), restores };
  }

  it('does nothing when dockerd made no DOCKER-USER chain', async () => {
    const f = fake('*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n');
    await f.chain.sync(['tn-1']);
    expect(f.restores).toEqual([]);
  });

  it("per bridge: dockerd's isolation first, then the accepts; keeps what is right, removes what is stale", async () => {
    const c = (b: string) => `-m comment --comment "${TAG}bridge:${b}"`;
    const f = fake(
      [
        '*filter',
        ':DOCKER-USER - [0:0]',
        ':DOCKER-ISOLATION-STAGE-2 - [0:0]',
        `-A DOCKER-USER -i tn-keep ! -o tn-keep -m conntrack ! --ctstate DNAT ${c('tn-keep')} -j DOCKER-ISOLATION-STAGE-2`,
        `-A DOCKER-USER -i tn-keep ${c('tn-keep')} -j ACCEPT`,
        `-A DOCKER-USER -o tn-keep ${c('tn-keep')} -j ACCEPT`,
        `-A DOCKER-USER -i tn-half ${c('tn-half')} -j ACCEPT`,
        `-A DOCKER-USER -i tn-old ${c('tn-old')} -j ACCEPT`,
        '-A DOCKER-USER -i eth9 -m comment --comment "admin rule" -j DROP',
        '-A DOCKER-USER -j RETURN',
        'COMMIT',
      ].join('\n'),
    );
    await f.chain.sync(['tn-keep', 'tn-half', 'tn-new']);
    expect(f.restores).toHaveLength(1);
    const lines = f.restores[0]!.split('\n').filter((l) => l.startsWith('-'));
    expect(lines).toEqual([
      `-D DOCKER-USER -i tn-half ${c('tn-half')} -j ACCEPT`,
      `-D DOCKER-USER -i tn-old ${c('tn-old')} -j ACCEPT`,
      `-I DOCKER-USER 1 -o tn-half ${c('tn-half')} -j ACCEPT`,
      `-I DOCKER-USER 1 -i tn-half ${c('tn-half')} -j ACCEPT`,
      `-I DOCKER-USER 1 -i tn-half ! -o tn-half -m conntrack ! --ctstate DNAT ${c('tn-half')} -j DOCKER-ISOLATION-STAGE-2`,
      `-I DOCKER-USER 1 -o tn-new ${c('tn-new')} -j ACCEPT`,
      `-I DOCKER-USER 1 -i tn-new ${c('tn-new')} -j ACCEPT`,
      `-I DOCKER-USER 1 -i tn-new ! -o tn-new -m conntrack ! --ctstate DNAT ${c('tn-new')} -j DOCKER-ISOLATION-STAGE-2`,
    ]);
  });

  it('without dockerd\'s isolation chain, only the accepts', async () => {
    const f = fake('*filter\n:DOCKER-USER - [0:0]\n-A DOCKER-USER -j RETURN\nCOMMIT\n');
    await f.chain.sync(['tn-1']);
    expect(f.restores[0]).not.toMatch(/ISOLATION/);
    expect(f.restores[0]!.split('\n').filter((l) => l.startsWith('-I'))).toHaveLength(2);
  });
});
