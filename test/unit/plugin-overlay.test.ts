/**
 * The Docker face of tnet overlays (libnetwork/plugin/overlay.ts) without root: two controllers
 * ("hosts") on temporary state directories joined to one in-memory global store, a recording
 * driver of global scope standing in for the overlay, and the plugin's HTTP handlers (inject) as
 * dockerd calls them (docker-plugin.md). The kernel side is the e2e test's
 * (test/e2e/overlay-docker.test.ts).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Controller } from '../../libnetwork/controller.js';
import type { DriverFactory } from '../../libnetwork/driverapi.js';
import { IpAddr } from '../../libnetwork/ipam/address.js';
import { MemoryCluster, MemoryGlobalStore } from '../../libnetwork/store/memory-global.js';
import { DockerIpam } from '../../libnetwork/plugin/docker.js';
import { DockerOverlay } from '../../libnetwork/plugin/overlay.js';
import { pluginApp } from '../../libnetwork/plugin/server.js';
import { recordingDriver } from './recording-driver.js';

interface Host {
  dir: string;
  c: Controller;
  store: MemoryGlobalStore;
  app: FastifyInstance;
}

const log: string[] = [];
/** The overlay as the core sees it: global scope; the recording driver makes nothing. */
const overlay = (): DriverFactory => ({ ...recordingDriver('overlay', () => log), scope: 'global' });

let cluster: MemoryCluster;
let hosts: Host[] = [];

async function host(n: number): Promise<Host> {
  const dir = mkdtempSync(join(tmpdir(), `tnet-ovplugin-${n}-`));
  const c = await Controller.open({ stateDir: dir, drivers: [recordingDriver('bridge', () => log), overlay()], vtep: IpAddr.parse(`10.77.0.${n}`) });
  const store = await MemoryGlobalStore.open(cluster, { ttl: 5 });
  await c.joinCluster(store);
  const app = await pluginApp({ network: new DockerOverlay(c), ipam: new DockerIpam(c) });
  return { dir, c, store, app };
}

async function call(h: Host, method: string, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await h.app.inject({ method: 'POST', url: `/${method}`, payload: body === undefined ? '' : JSON.stringify(body) });
  return { status: r.statusCode, json: r.json() };
}

/** The pool's addresses held for containers (the overlay's reserved DNS address aside). */
async function containerAddresses(h: Host, net: string, poolId: string) {
  return (await h.c.globalAddressesOf(net, poolId)).filter((x) => x.kind !== 'aux');
}

async function ok(h: Host, method: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await call(h, method, body);
  expect(r.json.Err ?? r.json.Error ?? '', `${method}`).toBe('');
  expect(r.status).toBe(200);
  return r.json;
}

const id = (c: string) => c.repeat(64);
const until = async (fn: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!fn() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  return fn();
};

beforeEach(async () => {
  cluster = new MemoryCluster('memory://plugin-overlay');
  hosts = [await host(2), await host(3)];
});
afterEach(async () => {
  for (const h of hosts) {
    await h.app.close();
    await h.c.leaveCluster();
    h.c.close();
    await h.store.close();
    rmSync(h.dir, { recursive: true, force: true });
  }
  cluster.shutdown();
});

describe('tnet-overlay and the tnet IpamDriver on a tnet overlay', () => {
  it('the pool is the overlay\'s on every host, with no gateway; addresses are unique across hosts; the endpoint finds its overlay by address', async () => {
    const [a, b] = hosts as [Host, Host];
    await a.c.createNetwork({ name: 'web', driver: 'overlay', subnet: '10.93.0.0/24' });
    expect(await until(() => b.c.findNetwork('web', '')?.state === 'ready')).toBe(true);

    const pa = await ok(a, 'IpamDriver.RequestPool', { AddressSpace: 'tnet-local', Pool: '', Options: { 'tnet.network': 'web' }, V6: false });
    const pb = await ok(b, 'IpamDriver.RequestPool', { AddressSpace: 'tnet-local', Pool: '10.93.0.0/24', Options: { 'tnet.network': 'web' }, V6: false });
    expect(pa).toEqual({ PoolID: a.c.network('web').ipv4!.poolId, Pool: '10.93.0.0/24', Data: { 'com.docker.network.gateway': '0.0.0.0/0' } });
    expect(pb).toEqual(pa);

    const net = { Options: { 'com.docker.network.generic': { 'tnet.network': 'web' } }, IPv4Data: [{ AddressSpace: 'tnet-local', Pool: '10.93.0.0/24', Gateway: '0.0.0.0/0' }], IPv6Data: [] };
    await ok(a, 'NetworkDriver.CreateNetwork', { NetworkID: id('a'), ...net });
    await ok(b, 'NetworkDriver.CreateNetwork', { NetworkID: id('b'), ...net });

    const addrs: string[] = [];
    for (const h of [a, b, a, b]) addrs.push((await ok(h, 'IpamDriver.RequestAddress', { PoolID: pa.PoolID, Address: '', Options: null })).Address as string);
    expect(new Set(addrs).size).toBe(4);
    const taken = await call(b, 'IpamDriver.RequestAddress', { PoolID: pa.PoolID, Address: addrs[0]!.split('/')[0], Options: null });
    expect(taken.json.Error).toMatch(/already taken by docker@/);

    const created = await ok(b, 'NetworkDriver.CreateEndpoint', { NetworkID: id('b'), EndpointID: id('e'), Interface: { Address: addrs[1], AddressIPv6: '', MacAddress: '' }, Options: {} });
    expect(created).toEqual({ Interface: { MacAddress: '02:42:0a:5d:00:02' } });
    expect(b.c.findEndpoint(id('e'))?.networkId).toBe(b.c.network('web').id);
    const joined = await ok(b, 'NetworkDriver.Join', { NetworkID: id('b'), EndpointID: id('e'), SandboxKey: '/var/run/docker/netns/x', Options: {} });
    expect(joined).toMatchObject({ InterfaceName: { DstPrefix: 'eth' }, DisableGatewayService: true });
    expect(joined.Gateway).toBeUndefined();
    // Host a learns b's endpoint from the peer table.
    expect(await until(() => (a.c.cluster?.remotePeers('web') ?? []).some((p) => p.endpointId === id('e')))).toBe(true);
    const info = await ok(b, 'NetworkDriver.EndpointOperInfo', { NetworkID: id('b'), EndpointID: id('e') });
    expect((info.Value as Record<string, string>)['tnet.network']).toBe('web');

    // The overlay cannot go while host b has a container on it.
    await expect(a.c.deleteNetwork('web')).rejects.toThrow();
    await ok(b, 'NetworkDriver.Leave', { NetworkID: id('b'), EndpointID: id('e') });
    await ok(b, 'NetworkDriver.DeleteEndpoint', { NetworkID: id('b'), EndpointID: id('e') });
    expect(await until(() => !(a.c.cluster?.remotePeers('web') ?? []).some((p) => p.endpointId === id('e')))).toBe(true);
    // The address stays dockerd's after the endpoint's delete, until its ReleaseAddress (as on
    // Docker's local networks): nobody else can take it in between.
    let held = await containerAddresses(a, 'web', pa.PoolID as string);
    expect(held.map((x) => `${x.address}/24`).sort()).toEqual([addrs[0], addrs[1], addrs[2], addrs[3]].sort());
    expect(held.find((x) => `${x.address}/24` === addrs[1])?.owner).toMatch(/^docker@.*\//);
    await ok(b, 'IpamDriver.ReleaseAddress', { PoolID: pa.PoolID, Address: addrs[1]!.split('/')[0] });
    held = await containerAddresses(a, 'web', pa.PoolID as string);
    expect(held.map((x) => `${x.address}/24`).sort()).toEqual([addrs[0], addrs[2], addrs[3]].sort());
    // A second ReleaseAddress (dockerd retries) changes nothing; the next container may take it.
    await ok(b, 'IpamDriver.ReleaseAddress', { PoolID: pa.PoolID, Address: addrs[1]!.split('/')[0] });
    const again = await ok(b, 'IpamDriver.RequestAddress', { PoolID: pa.PoolID, Address: addrs[1]!.split('/')[0], Options: null });
    expect(again.Address).toBe(addrs[1]);

    // A release of another host's address is refused quietly (left alone); this host's goes.
    await ok(b, 'IpamDriver.ReleaseAddress', { PoolID: pa.PoolID, Address: addrs[0]!.split('/')[0] });
    await ok(b, 'IpamDriver.ReleaseAddress', { PoolID: pa.PoolID, Address: addrs[3]!.split('/')[0] });
    const left = (await containerAddresses(a, 'web', pa.PoolID as string)).map((x) => `${x.address}/24`).sort();
    expect(left).toEqual([addrs[0], addrs[1], addrs[2]].sort());

    await ok(b, 'NetworkDriver.DeleteNetwork', { NetworkID: id('b') });
    await ok(b, 'IpamDriver.ReleasePool', { PoolID: pa.PoolID });
    expect(b.c.findNetwork('web', '')?.state).toBe('ready'); // the overlay outlives Docker's network
  });

  it('refusals name what to type: no such overlay, dockerd\'s own IPAM, another subnet, --ip-range, no IPv6, a gateway', async () => {
    const [a] = hosts as [Host, Host];
    const none = await call(a, 'IpamDriver.RequestPool', { Pool: '', Options: { 'tnet.network': 'nope' }, V6: false });
    expect(none.json.Error).toMatch(/no tnet overlay network "nope".*tnet network create -d overlay nope/);
    await a.c.createNetwork({ name: 'web', driver: 'overlay', subnet: '10.93.0.0/24' });
    await a.c.createNetwork({ name: 'lan', driver: 'bridge', subnet: '10.94.0.0/24' });
    expect((await call(a, 'IpamDriver.RequestPool', { Pool: '', Options: { 'tnet.network': 'lan' }, V6: false })).json.Error).toMatch(/"lan" is a bridge network, not an overlay/);
    expect((await call(a, 'IpamDriver.RequestPool', { Pool: '10.95.0.0/24', Options: { 'tnet.network': 'web' }, V6: false })).json.Error).toMatch(/not the subnet of tnet overlay network "web" \(10\.93\.0\.0\/24\)/);
    expect((await call(a, 'IpamDriver.RequestPool', { Pool: '10.93.0.0/24', SubPool: '10.93.0.128/25', Options: { 'tnet.network': 'web' }, V6: false })).json.Error).toMatch(/--ip-range/);
    expect((await call(a, 'IpamDriver.RequestPool', { Pool: '', Options: { 'tnet.network': 'web' }, V6: true })).json.Error).toMatch(/no IPv6 subnet.*--ipv6/);
    const pool = await ok(a, 'IpamDriver.RequestPool', { Pool: '', Options: { 'tnet.network': 'web' }, V6: false });
    expect((await call(a, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '10.93.0.1', Options: { RequestAddressType: 'com.docker.network.gateway' } })).json.Error).toMatch(/has no gateway/);

    const foreign = await call(a, 'NetworkDriver.CreateNetwork', {
      NetworkID: id('c'), Options: { 'com.docker.network.generic': {} }, IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '172.18.0.0/16', Gateway: '172.18.0.1/16' }], IPv6Data: [],
    });
    expect(foreign.json.Err).toMatch(/--ipam-driver tnet --ipam-opt tnet\.network=NAME/);
    const ep = await call(a, 'NetworkDriver.CreateEndpoint', { NetworkID: id('c'), EndpointID: id('d'), Interface: { Address: '172.18.0.2/16' }, Options: {} });
    expect(ep.json.Err).toMatch(/172\.18\.0\.2 is in no tnet overlay's subnet/);
    expect(a.c.findEndpoint(id('d'))).toBeUndefined();
  });

  it('an overlay removed under a Docker network: a new container is refused, saying why; the Docker network still goes', async () => {
    const [a] = hosts as [Host, Host];
    await a.c.createNetwork({ name: 'gone', driver: 'overlay', subnet: '10.97.0.0/24' });
    const pool = await ok(a, 'IpamDriver.RequestPool', { Pool: '', Options: { 'tnet.network': 'gone' }, V6: false });
    const addr = await ok(a, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: null });
    await ok(a, 'IpamDriver.ReleaseAddress', { PoolID: pool.PoolID, Address: (addr.Address as string).split('/')[0] });
    await a.c.deleteNetwork('gone');
    const refused = await call(a, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: null });
    expect(refused.json.Error).toMatch(/the tnet overlay of this Docker network is gone.*docker network rm/);
    await ok(a, 'IpamDriver.ReleaseAddress', { PoolID: pool.PoolID, Address: '10.97.0.9' });
    await ok(a, 'IpamDriver.ReleasePool', { PoolID: pool.PoolID });
    await ok(a, 'NetworkDriver.DeleteNetwork', { NetworkID: id('9') });
  });

  it('a gateway given to the overlay is the pool\'s and the container\'s', async () => {
    const [a] = hosts as [Host, Host];
    await a.c.createNetwork({ name: 'routed', driver: 'overlay', subnet: '10.96.0.0/24', gateway: '10.96.0.254' });
    const pool = await ok(a, 'IpamDriver.RequestPool', { Pool: '', Options: { 'tnet.network': 'routed' }, V6: false });
    expect(pool.Data).toEqual({ 'com.docker.network.gateway': '10.96.0.254/24' });
    const gw = await ok(a, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '10.96.0.254', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    expect(gw.Address).toBe('10.96.0.254/24');
    const addr = await ok(a, 'IpamDriver.RequestAddress', { PoolID: pool.PoolID, Address: '', Options: null });
    await ok(a, 'NetworkDriver.CreateEndpoint', { NetworkID: id('a'), EndpointID: id('f'), Interface: { Address: addr.Address, MacAddress: '' }, Options: {} });
    const joined = await ok(a, 'NetworkDriver.Join', { NetworkID: id('a'), EndpointID: id('f'), SandboxKey: '/var/run/docker/netns/y', Options: {} });
    expect(joined.Gateway).toBe('10.96.0.254');
    await ok(a, 'NetworkDriver.DeleteEndpoint', { NetworkID: id('a'), EndpointID: id('f') });
    await ok(a, 'IpamDriver.ReleaseAddress', { PoolID: pool.PoolID, Address: '10.96.0.254' });
    await ok(a, 'IpamDriver.ReleaseAddress', { PoolID: pool.PoolID, Address: (addr.Address as string).split('/')[0] });
    expect((await containerAddresses(a, 'routed', pool.PoolID as string)).map((x) => x.address.toString())).toEqual(['10.96.0.254']);
  });
});
