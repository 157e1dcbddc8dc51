/**
 * DockerNetworks (the NetworkDriver calls) without root: a real Controller (its State and IPAM
 * on a temporary SQLite database) with a recording driver registered in place of the bridge (no
 * kernel objects). What is checked is what the calls do through the controller: pools (mirror vs
 * tnet's IpamDriver), idempotent retries, only-empty fields in CreateEndpoint, Join's answer,
 * ports, stale endpoints, and that addresses owned by the IPAM are never released behind
 * dockerd's back.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Controller } from '../../libnetwork/controller.js';
import { DockerIpam, DockerNetworks } from '../../libnetwork/plugin/docker.js';
import { recordingDriver } from './recording-driver.js';

const N = (c: string) => c.repeat(64);
const NET = N('a');
const NET2 = N('c');
const EP = N('b');
const EP2 = N('d');

let dir: string;
let c: Controller;
let calls: string[];
let nets: DockerNetworks;
let dipam: DockerIpam;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tnet-docker-'));
  calls = [];
  c = await Controller.open({ stateDir: dir, drivers: [recordingDriver('bridge', () => calls)] });
  nets = new DockerNetworks(c, { dockerUser: false });
  dipam = new DockerIpam(c);
});
afterEach(() => {
  nets.close();
  c.close();
  rmSync(dir, { recursive: true, force: true });
});

const subnets = async () => (await c.pools()).map((p) => p.subnet.toString());

const v4 = (pool: string, gw: string, space = 'LocalDefault') => ({ AddressSpace: space, Pool: pool, Gateway: gw });

describe('networks', () => {
  it("dockerd's IPAM: a mirror pool reserves the subnet; a retried CreateNetwork is not an error; DeleteNetwork releases it", async () => {
    const req = { NetworkID: NET, Options: { 'com.docker.network.generic': { 'com.docker.network.bridge.name': 'br9' } }, IPv4Data: [v4('10.99.0.0/24', '10.99.0.1/24')], IPv6Data: [] };
    await nets.createNetwork(req);
    await nets.createNetwork(req);
    const n = c.findNetwork(NET)!;
    expect(n).toMatchObject({ owner: 'docker', state: 'ready', internal: false, options: { 'com.docker.network.bridge.name': 'br9' } });
    expect(n.ipv4?.subnet.toString()).toBe('10.99.0.0/24');
    expect(n.ipv4?.gateway?.toString()).toBe('10.99.0.1');
    expect(await subnets()).toEqual(['10.99.0.0/24']);
    expect(calls).toEqual([`createNetwork ${NET.slice(0, 4)}`]);
    // A lab network cannot take the same subnet, nor another Docker network.
    await expect(c.requestPool({ subnet: '10.99.0.0/16' })).rejects.toThrow(/overlaps/);
    await expect(nets.createNetwork({ NetworkID: NET2, IPv4Data: [v4('10.99.0.0/25', '10.99.0.1/25')] })).rejects.toThrow(/overlaps/);
    expect(c.findNetwork(NET2)).toBeUndefined();
    await nets.deleteNetwork({ NetworkID: NET });
    expect(c.findNetwork(NET)).toBeUndefined();
    expect(await c.pools()).toEqual([]);
    await expect(nets.deleteNetwork({ NetworkID: NET })).rejects.toThrow(/unknown NetworkID/);
  });

  it("tnet's IpamDriver pool: the network takes its own reference; dockerd's ReleasePool then frees it", async () => {
    const pool = await dipam.requestPool({ AddressSpace: 'tnet-local', Pool: '10.98.0.0/24' });
    const gw = await dipam.requestAddress({ PoolID: pool.PoolID, Options: { RequestAddressType: 'com.docker.network.gateway' } });
    expect(gw.Address).toBe('10.98.0.1/24');
    await nets.createNetwork({ NetworkID: NET, IPv4Data: [v4('10.98.0.0/24', gw.Address, 'tnet-local')] });
    expect((await c.pool(pool.PoolID)).refs).toBe(2);
    expect(c.findNetwork(NET)!.ipv4!.poolId).toBe(pool.PoolID);
    await nets.deleteNetwork({ NetworkID: NET });
    expect((await c.pool(pool.PoolID)).refs).toBe(1);
    await dipam.releaseAddress({ PoolID: pool.PoolID, Address: '10.98.0.1' });
    await dipam.releasePool({ PoolID: pool.PoolID });
    expect(await c.pools()).toEqual([]);
  });

  it('refuses what a tnet network cannot be, recording nothing', async () => {
    await expect(nets.createNetwork({ NetworkID: NET, IPv4Data: [v4('10.1.0.0/24', '10.1.0.1/24'), v4('10.2.0.0/24', '10.2.0.1/24')] }))
      .rejects.toThrow(/at most one IPv4/);
    await expect(nets.createNetwork({ NetworkID: NET, IPv4Data: [v4('10.1.0.0/24', '10.2.0.1/24')] })).rejects.toThrow(/not in subnet/);
    await expect(nets.createNetwork({ NetworkID: NET, IPv4Data: [v4('fd00::/64', 'fd00::1/64')] })).rejects.toThrow(/not IPv4/);
    await expect(nets.createNetwork({ NetworkID: NET, Options: { 'com.docker.network.generic': { a: { b: 1 } } } })).rejects.toThrow(/must be a string/);
    await expect(nets.createNetwork({ NetworkID: 'x' })).rejects.toThrow(/not a Docker ID/);
    expect(c.networks()).toEqual([]);
    expect(await c.pools()).toEqual([]);
  });
});

describe('endpoints', () => {
  beforeEach(async () => {
    await nets.createNetwork({
      NetworkID: NET, Options: { 'com.docker.network.enable_ipv6': true },
      IPv4Data: [v4('10.99.0.0/24', '10.99.0.1/24')], IPv6Data: [v4('fd00:99::/64', 'fd00:99::1/64')],
    });
  });

  it('CreateEndpoint answers only the fields left empty; Join gives the interface and bare gateways', async () => {
    const r = await nets.createEndpoint({ NetworkID: NET, EndpointID: EP, Interface: { Address: '10.99.0.2/24', AddressIPv6: 'fd00:99::2/64', MacAddress: '' }, Options: {} });
    expect(r).toEqual({ Interface: { MacAddress: '02:42:0a:63:00:02' } });
    expect(await nets.createEndpoint({ NetworkID: NET, EndpointID: EP, Interface: { Address: '10.99.0.2/24', AddressIPv6: 'fd00:99::2/64', MacAddress: '' } }))
      .toEqual({ Interface: { MacAddress: '02:42:0a:63:00:02' } }); // a retry: same answer
    const given = await nets.createEndpoint({
      NetworkID: NET, EndpointID: EP2, Interface: { Address: '10.99.0.50/24', MacAddress: '02:42:0a:63:00:32' },
      Options: { 'com.docker.network.endpoint.macaddress': 'AkIKYwAy' },
    });
    expect(given).toEqual({});
    expect(c.findEndpoint(EP2)!.mac).toBe('02:42:0a:63:00:32');
    const j = await nets.join({ NetworkID: NET, EndpointID: EP, SandboxKey: '/var/run/docker/netns/93df11acaeb1' });
    expect(j).toEqual({
      InterfaceName: { SrcName: `tnc${EP.slice(0, 11)}`, DstPrefix: 'eth' }, Gateway: '10.99.0.1', GatewayIPv6: 'fd00:99::1',
      StaticRoutes: [], DisableGatewayService: false,
    });
    expect(c.findEndpoint(EP)).toMatchObject({ state: 'ready', sandboxId: undefined });
  });

  it('refuses bad endpoints clearly', async () => {
    await expect(nets.createEndpoint({ NetworkID: NET, EndpointID: EP, Interface: { Address: '10.1.0.2/24' } })).rejects.toThrow(/not in the network's subnet/);
    await expect(nets.createEndpoint({ NetworkID: NET, EndpointID: EP, Interface: { Address: '10.99.0.2' } })).rejects.toThrow(/prefix length/);
    await expect(nets.createEndpoint({ NetworkID: NET, EndpointID: EP, Interface: { MacAddress: '03:00:00:00:00:01' } })).rejects.toThrow(/multicast/);
    await expect(nets.createEndpoint({ NetworkID: NET, EndpointID: EP, Options: { 'com.docker.network.portmap': [{ Proto: 99, Port: 1 }] } }))
      .rejects.toThrow(/protocol 99/);
    await expect(nets.createEndpoint({ NetworkID: NET2, EndpointID: EP })).rejects.toThrow(/unknown NetworkID/);
    await expect(nets.join({ NetworkID: NET, EndpointID: EP, SandboxKey: '/x' })).rejects.toThrow(/unknown EndpointID/);
    expect(c.endpoints()).toEqual([]);
    expect(calls.filter((c) => c.startsWith('join'))).toEqual([]);
  });

  it('ports: chosen at ProgramExternalConnectivity, a taken one refused, a range moves on, Revoke frees them', async () => {
    for (const [ep, ip] of [[EP, '10.99.0.2/24'], [EP2, '10.99.0.3/24']] as const) {
      await nets.createEndpoint({ NetworkID: NET, EndpointID: ep, Interface: { Address: ip } });
    }
    const pm = (port: number, end = port) => ({ 'com.docker.network.portmap': [{ Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: port, HostPortEnd: end }] });
    await nets.programExternalConnectivity({ NetworkID: NET, EndpointID: EP, Options: pm(28080) });
    await expect(nets.programExternalConnectivity({ NetworkID: NET, EndpointID: EP2, Options: pm(28080) })).rejects.toThrow(/28080\/tcp is already allocated/);
    expect(c.findEndpoint(EP2)!.ports).toEqual([]);
    await nets.programExternalConnectivity({ NetworkID: NET, EndpointID: EP2, Options: pm(28080, 28085) });
    expect(c.findEndpoint(EP2)!.ports.map((p) => p.hostPort)).toEqual([28081]);
    const info = await nets.endpointOperInfo({ NetworkID: NET, EndpointID: EP2 });
    expect(info.Value['com.docker.network.portmap']).toEqual([{ Proto: 6, IP: '10.99.0.3', Port: 80, HostIP: '', HostPort: 28081, HostPortEnd: 28081 }]);
    await nets.revokeExternalConnectivity({ NetworkID: NET, EndpointID: EP });
    expect(c.findEndpoint(EP)!.ports).toEqual([]);
    expect(calls).toContain(`revoke ${EP.slice(0, 4)} 28080`);
  });

  it('DeleteEndpoint never releases an address of the IPAM (dockerd does, with ReleaseAddress)', async () => {
    const pool = await dipam.requestPool({ AddressSpace: 'tnet-local', Pool: '10.97.0.0/24' });
    const gw = await dipam.requestAddress({ PoolID: pool.PoolID, Options: { RequestAddressType: 'com.docker.network.gateway' } });
    const addr = await dipam.requestAddress({ PoolID: pool.PoolID });
    await nets.createNetwork({ NetworkID: NET2, IPv4Data: [v4('10.97.0.0/24', gw.Address, 'tnet-local')] });
    await nets.createEndpoint({ NetworkID: NET2, EndpointID: EP, Interface: { Address: addr.Address } });
    await nets.deleteEndpoint({ NetworkID: NET2, EndpointID: EP });
    expect((await c.addressesOf(pool.PoolID)).map((a) => a.address.toString())).toContain('10.97.0.2');
    expect((await dipam.requestAddress({ PoolID: pool.PoolID })).Address).toBe('10.97.0.3/24');
  });

  it('DeleteNetwork takes stale endpoints (a DeleteEndpoint lost while the plugin was down) with it', async () => {
    await nets.createEndpoint({ NetworkID: NET, EndpointID: EP, Interface: { Address: '10.99.0.2/24' } });
    await nets.deleteNetwork({ NetworkID: NET });
    expect(c.endpoints()).toEqual([]);
    expect(c.networks()).toEqual([]);
    expect(calls).toContain(`leave ${EP.slice(0, 4)}`);
  });

  it('an internal network gives no gateway (and dockerd adds no docker_gwbridge for it)', async () => {
    await nets.createNetwork({ NetworkID: NET2, Options: { 'com.docker.network.internal': true }, IPv4Data: [v4('10.96.0.0/24', '10.96.0.1/24')] });
    await nets.createEndpoint({ NetworkID: NET2, EndpointID: EP, Interface: { Address: '10.96.0.2/24' } });
    const j = await nets.join({ NetworkID: NET2, EndpointID: EP, SandboxKey: '/var/run/docker/netns/x' });
    expect(j.Gateway).toBeUndefined();
    expect(c.findNetwork(NET2)!.internal).toBe(true);
  });
});

describe('endpoints dockerd let go while tnet was down (issue 13, item 1)', () => {
  let keys: string;
  /** A sandbox a process lives in: this test's own network namespace. */
  const LIVE = '/proc/self/ns/net';
  beforeEach(async () => {
    keys = mkdtempSync(join(tmpdir(), 'tnet-netns-'));
    // No grace: every endpoint here counts as old enough to be stale.
    nets.close();
    c.close();
    c = await Controller.open({ stateDir: dir, drivers: [recordingDriver('bridge', () => calls)], staleGraceMs: 0 });
    nets = new DockerNetworks(c, { dockerUser: false });
    dipam = new DockerIpam(c);
  });
  afterEach(() => rmSync(keys, { recursive: true, force: true }));
  const goneSandbox = () => {
    const path = join(keys, 'gone');
    writeFileSync(path, '');
    return path;
  };
  const pm = (port: number) => ({ 'com.docker.network.portmap': [{ Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: port, HostPortEnd: 0 }] });

  it("a gone container's host port and static address are released when another container asks for them", async () => {
    const pool = await dipam.requestPool({ AddressSpace: 'tnet-local', Pool: '10.95.0.0/24' });
    const gw = await dipam.requestAddress({ PoolID: pool.PoolID, Options: { RequestAddressType: 'com.docker.network.gateway' } });
    await nets.createNetwork({ NetworkID: NET, IPv4Data: [v4('10.95.0.0/24', gw.Address, 'tnet-local')] });
    const a = await dipam.requestAddress({ PoolID: pool.PoolID, Address: '10.95.0.10' });
    const b = await dipam.requestAddress({ PoolID: pool.PoolID });
    await nets.createEndpoint({ NetworkID: NET, EndpointID: EP, Interface: { Address: a.Address } });
    await nets.createEndpoint({ NetworkID: NET, EndpointID: EP2, Interface: { Address: b.Address } });
    const gone = goneSandbox();
    await nets.join({ NetworkID: NET, EndpointID: EP, SandboxKey: gone });
    await nets.join({ NetworkID: NET, EndpointID: EP2, SandboxKey: LIVE });
    await nets.programExternalConnectivity({ NetworkID: NET, EndpointID: EP, Options: pm(28090) });
    expect(c.findEndpoint(EP)!.sandboxKey).toBe(gone);

    // The container goes while tnet is down: dockerd's Leave, DeleteEndpoint, ReleaseAddress never arrive.
    rmSync(gone);
    // A new container asks for the same static address: the stale holder is released first.
    expect((await dipam.requestAddress({ PoolID: pool.PoolID, Address: '10.95.0.10' })).Address).toBe('10.95.0.10/24');
    expect(c.findEndpoint(EP)).toBeUndefined();
    expect(calls).toContain(`revoke ${EP.slice(0, 4)} 28090`);
    expect(c.findEndpoint(EP2)).toMatchObject({ state: 'ready' }); // a process lives in its sandbox: kept
    // ... and its host port is free again.
    await nets.programExternalConnectivity({ NetworkID: NET, EndpointID: EP2, Options: pm(28090) });
    expect(c.findEndpoint(EP2)!.ports.map((p) => p.hostPort)).toEqual([28090]);
  });

  it('on activation: a left container and a never-joined endpoint are released, a running one kept; nothing within the grace', async () => {
    await nets.createNetwork({ NetworkID: NET, IPv4Data: [v4('10.94.0.0/24', '10.94.0.1/24')] });
    const EP3 = N('f');
    for (const [ep, ip] of [[EP, '10.94.0.2/24'], [EP2, '10.94.0.3/24'], [EP3, '10.94.0.4/24']] as const) {
      await nets.createEndpoint({ NetworkID: NET, EndpointID: ep, Interface: { Address: ip } });
    }
    const gone = goneSandbox();
    await nets.join({ NetworkID: NET, EndpointID: EP, SandboxKey: gone }); // its namespace has no process: a file
    await nets.join({ NetworkID: NET, EndpointID: EP3, SandboxKey: LIVE });
    expect(await c.releaseStale('docker', { graceMs: 60_000 })).toEqual([]); // all just created: a container may be starting
    await nets.activated();
    expect(c.endpoints().map((e) => e.id)).toEqual([EP3]); // EP2 never joined: released too
    expect(await c.pools()).toHaveLength(1); // dockerd's IPAM holds the addresses: the reserved subnet stays with the network
  });
});
