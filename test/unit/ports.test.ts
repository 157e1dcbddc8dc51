/**
 * Published ports a Docker user can find (issue 13, item 6): a port without a host port comes
 * from the kernel's ephemeral range, as dockerd's; the control API's GET /ports/REF and `tnet
 * port` show the mappings dockerd cannot (moby/libnetwork#2451). No root: a real Controller on a
 * temporary state directory with a recording driver in place of the bridge (no kernel objects);
 * Docker's endpoints are made through the plugin face, as dockerd makes them.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ApiFailure, type Client } from '../../cli/client.js';
import { type PortLine, type PortsAnswer, formatPorts, parsePrivatePort, portsOf } from '../../cli/port.js';
import { controlServer } from '../../libnetwork/api/server.js';
import { Controller } from '../../libnetwork/controller.js';
import { DockerNetworks } from '../../libnetwork/plugin/docker.js';
import { FALLBACK_PORT_RANGE, PORT_RANGE_FILE, ephemeralPortRange } from '../../libnetwork/ports.js';
import { recordingDriver } from './recording-driver.js';

let dir: string;

describe('the ephemeral range', () => {
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tnet-ports-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const file = (text: string) => {
    const f = join(dir, 'range');
    writeFileSync(f, text);
    return f;
  };

  it("is the kernel's net.ipv4.ip_local_port_range (32768-60999 by default), as dockerd reads it", () => {
    const [first, last] = readFileSync(PORT_RANGE_FILE, 'utf8').trim().split(/\s+/).map(Number);
    expect(ephemeralPortRange()).toEqual([first, last]);
  });

  it('reads the tab-separated text the kernel writes, and other white space', () => {
    expect(ephemeralPortRange(file('32768\t60999\n'))).toEqual([32768, 60999]);
    expect(ephemeralPortRange(file(' 1024   65000 '))).toEqual([1024, 65000]);
    expect(ephemeralPortRange(file('40000 40000\n'))).toEqual([40000, 40000]);
  });

  it("falls back to dockerd's 49153-65535 when the file is missing or makes no range", () => {
    expect(FALLBACK_PORT_RANGE).toEqual([49153, 65535]);
    for (const text of ['', 'banana', '60999 32768', '0 100', '1000 70000', '1000']) expect(ephemeralPortRange(file(text))).toEqual([49153, 65535]);
    expect(ephemeralPortRange(join(dir, 'nosuch'))).toEqual([49153, 65535]);
  });
});

const N = (c: string) => c.repeat(64);
const NET = N('a');
const EP = N('b');
const EP2 = `bd${N('0').slice(2)}`;
const EP3 = N('c');
const v4 = (pool: string, gw: string) => ({ AddressSpace: 'LocalDefault', Pool: pool, Gateway: gw, AuxAddresses: {} });
const pm = (...b: { port: number; host?: number; ip?: string; proto?: number }[]) => ({
  'com.docker.network.portmap': b.map((x) => ({ Proto: x.proto ?? 6, IP: '', Port: x.port, HostIP: x.ip ?? '', HostPort: x.host ?? 0, HostPortEnd: x.host ?? 0 })),
});

describe('published ports of Docker endpoints', () => {
  let c: Controller;
  let nets: DockerNetworks;
  let api: FastifyInstance;
  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'tnet-ports-'));
    c = await Controller.open({ stateDir: dir, drivers: [recordingDriver('bridge', () => [])] });
    nets = new DockerNetworks(c, { dockerUser: false });
    api = await controlServer(Promise.resolve(c));
    await nets.createNetwork({ NetworkID: NET, IPv4Data: [v4('10.99.0.0/24', '10.99.0.1/24')], IPv6Data: [] });
    for (const [ep, ip] of [[EP, '10.99.0.2/24'], [EP2, '10.99.0.3/24'], [EP3, '10.99.0.4/24']] as const) {
      await nets.createEndpoint({ NetworkID: NET, EndpointID: ep, Interface: { Address: ip } });
      await nets.join({ NetworkID: NET, EndpointID: ep, SandboxKey: '/var/run/docker/netns/x' });
    }
  });
  afterEach(async () => {
    await api.close();
    nets.close();
    c.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const get = async (ref: string) => {
    const r = await api.inject({ method: 'GET', url: `/ports/${encodeURIComponent(ref)}` });
    return { status: r.statusCode, json: r.json() as PortsAnswer & { error?: { code: string; message: string } } };
  };

  it('-p 80 and -P get a host port in the ephemeral range; a given one stays', async () => {
    const [first, last] = ephemeralPortRange();
    await nets.programExternalConnectivity({ NetworkID: NET, EndpointID: EP, Options: pm({ port: 80 }, { port: 53, proto: 17 }, { port: 81, host: 18081, ip: '127.0.0.1' }) });
    const ports = c.findEndpoint(EP)!.ports;
    expect(ports).toHaveLength(3);
    for (const p of ports.filter((x) => x.containerPort !== 81)) {
      expect(p.hostPort).toBeGreaterThanOrEqual(first);
      expect(p.hostPort).toBeLessThanOrEqual(last);
    }
    expect(ports.find((p) => p.containerPort === 81)).toEqual({ proto: 'tcp', containerPort: 81, hostIp: '127.0.0.1', hostPort: 18081 });
  });

  it('GET /ports/ID and /ports/PREFIX list them as docker port prints them; network inspect shows them too', async () => {
    await nets.programExternalConnectivity({ NetworkID: NET, EndpointID: EP, Options: pm({ port: 80, host: 28080 }, { port: 53, host: 28053, proto: 17 }, { port: 81, host: 18081, ip: '127.0.0.1' }) });
    const full = await get(EP);
    expect(full.status).toBe(200);
    expect(full.json.what).toBe(`endpoint ${EP.slice(0, 12)}`);
    expect(full.json.mappings.map((m) => [m.containerPort, m.proto, m.hosts])).toEqual([
      [53, 'udp', ['0.0.0.0:28053']],
      [80, 'tcp', ['0.0.0.0:28080']],
      [81, 'tcp', ['127.0.0.1:18081']],
    ]);
    expect(full.json.mappings[0]).toMatchObject({ endpoint: EP, networkId: NET, network: `docker-${NET.slice(0, 12)}`, hostIp: '', hostPort: 28053 });
    expect((await get(EP.slice(0, 12))).json).toEqual({ ...full.json, ref: EP.slice(0, 12) });
    expect(formatPorts(full.json.mappings)).toEqual(['53/udp -> 0.0.0.0:28053', '80/tcp -> 0.0.0.0:28080', '81/tcp -> 127.0.0.1:18081']);
    // An endpoint without ports: an empty list, as docker port prints nothing.
    expect((await get(EP3)).json.mappings).toEqual([]);
    // network inspect (the same API) shows the ports of Docker's endpoints.
    const view = (await api.inject({ method: 'GET', url: `/networks/${NET.slice(0, 12)}` })).json() as { endpoints: { id: string; ports: unknown[] }[] };
    expect(view.endpoints.find((e) => e.id === EP)!.ports).toEqual([
      { proto: 'tcp', containerPort: 81, hostIp: '127.0.0.1', hostPort: 18081 },
      { proto: 'tcp', containerPort: 80, hostIp: '', hostPort: 28080 },
      { proto: 'udp', containerPort: 53, hostIp: '', hostPort: 28053 },
    ].sort((a, b) => a.proto.localeCompare(b.proto) || a.hostPort - b.hostPort));
  });

  it('an ambiguous prefix is refused with what it matches; an unknown ref is not found', async () => {
    const amb = await get('b');
    expect(amb.status).toBe(400);
    expect(amb.json.error).toEqual({ code: 'invalid-argument', message: `"b" is the start of 2 ids (endpoint ${EP.slice(0, 12)}, endpoint ${EP2.slice(0, 12)}); give more digits`, object: '"b"' });
    expect((await get('bb')).json.what).toBe(`endpoint ${EP.slice(0, 12)}`);
    const none = await get('nosuch');
    expect(none.status).toBe(404);
    expect(none.json.error?.message).toMatch(/no sandbox or endpoint "nosuch"/);
    expect((await get('f00d')).status).toBe(404);
  });
});

describe('tnet port: the lines, the private-port filter, containers through the docker command', () => {
  const line = (containerPort: number, proto: 'tcp' | 'udp', hosts: string[], endpoint = EP): PortLine => ({
    endpoint, networkId: NET, proto, containerPort, hostIp: '', hostPort: 0, hosts,
  });
  const maps = [line(53, 'udp', ['0.0.0.0:32769']), line(80, 'tcp', ['0.0.0.0:32768', '[::]:32768'])];

  it("prints docker port's lines; with a private port only the host sides", () => {
    expect(formatPorts(maps)).toEqual(['53/udp -> 0.0.0.0:32769', '80/tcp -> 0.0.0.0:32768', '80/tcp -> [::]:32768']);
    expect(formatPorts(maps, parsePrivatePort('80'))).toEqual(['0.0.0.0:32768', '[::]:32768']);
    expect(formatPorts(maps, parsePrivatePort('53/UDP'))).toEqual(['0.0.0.0:32769']);
    expect(formatPorts(maps, parsePrivatePort('53'))).toBeUndefined(); // 53/tcp is not published
    expect(formatPorts([])).toEqual([]);
  });

  it('refuses a private port that is not PORT or PORT/PROTO', () => {
    for (const bad of ['0', '65536', '80/icmp', 'http', '80/', '-1']) expect(() => parsePrivatePort(bad)).toThrow(/is not PORT or PORT\/PROTO/);
    expect(parsePrivatePort('8080/sctp')).toEqual({ port: 8080, proto: 'sctp' });
  });

  /** A client whose API knows endpoints EP (port 80) and EP3 (port 53) only. */
  const fake = (asked: string[]): Client =>
    ({
      call: async (_m: string, path: string) => {
        const ref = decodeURIComponent(path.slice('/ports/'.length));
        asked.push(ref);
        if (ref === EP) return { ref, what: 'endpoint', mappings: [maps[1]] };
        if (ref === EP3) return { ref, what: 'endpoint', mappings: [{ ...maps[0]!, endpoint: EP3 }] };
        throw new ApiFailure(404, { code: 'not-found', message: `no sandbox or endpoint "${ref}"` });
      },
    }) as unknown as Client;

  it('a ref tnet does not know is looked up as a Docker container: the mappings of its tnet endpoints', async () => {
    const asked: string[] = [];
    const a = await portsOf(fake(asked), 'web1', (name) => (name === 'web1' ? [EP, N('9'), EP3] : undefined));
    expect(asked).toEqual(['web1', EP, N('9'), EP3]); // N('9'): an endpoint on one of dockerd's own networks
    expect(a.what).toBe('container "web1"');
    expect(formatPorts(a.mappings)).toEqual(['53/udp -> 0.0.0.0:32769', '80/tcp -> 0.0.0.0:32768', '80/tcp -> [::]:32768']);
  });

  it('no such container, or none of its endpoints on tnet: not found', async () => {
    await expect(portsOf(fake([]), 'ghost', () => undefined)).rejects.toMatchObject({ error: { code: 'not-found', message: 'no sandbox or endpoint "ghost"' } });
    await expect(portsOf(fake([]), 'plain', () => [N('9')])).rejects.toMatchObject({ error: { code: 'not-found', message: 'container "plain" has no endpoint on a tnet network' } });
    const asked: string[] = [];
    expect((await portsOf(fake(asked), EP, () => { throw new Error('not asked'); })).mappings).toEqual([maps[1]]);
  });
});
