/**
 * The IpamDriver face against the real Ipam on a temporary SQLite state database, through the
 * HTTP handlers (inject), as dockerd calls it (the sequences in docker-plugin.md).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Controller } from '../../libnetwork/controller.js';
import { Subnet } from '../../libnetwork/ipam/index.js';
import { DockerIpam } from '../../libnetwork/plugin/docker.js';
import { pluginApp } from '../../libnetwork/plugin/server.js';
import { recordingDriver } from './recording-driver.js';

let dir: string;
let c: Controller;
let app: FastifyInstance;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tnet-ipam-plugin-'));
  // As if the host had docker0's 172.17.0.0/16: an auto pool must skip it.
  c = await Controller.open({ stateDir: dir, drivers: [recordingDriver('bridge', () => [])], avoid: [Subnet.parse('172.17.0.0/16')] });
  app = await pluginApp({ ipam: new DockerIpam(c) });
});
afterEach(async () => {
  await app.close();
  c.close();
  rmSync(dir, { recursive: true, force: true });
});

async function call(method: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await app.inject({ method: 'POST', url: `/IpamDriver.${method}`, payload: body === undefined ? '' : JSON.stringify(body) });
  expect(r.statusCode).toBe(200);
  return r.json();
}

describe('IpamDriver on the real Ipam', () => {
  it('the recorded explicit sequence: subnet, ip-range, gateway, aux, static IP, then teardown', async () => {
    const pool = await call('RequestPool', {
      AddressSpace: 'tnet-local', Pool: '10.98.0.0/24', SubPool: '10.98.0.128/25', Options: { foo: 'bar' }, V6: false,
    });
    expect(pool).toMatchObject({ Pool: '10.98.0.0/24', Data: {} });
    const P = pool.PoolID as string;
    expect(await call('RequestAddress', { PoolID: P, Address: '10.98.0.254', Options: { RequestAddressType: 'com.docker.network.gateway' } }))
      .toEqual({ Address: '10.98.0.254/24', Data: {} });
    expect((await call('RequestAddress', { PoolID: P, Address: '10.98.0.5', Options: null })).Address).toBe('10.98.0.5/24');
    // Dynamic addresses come from the ip-range.
    expect((await call('RequestAddress', { PoolID: P, Address: '', Options: {} })).Address).toBe('10.98.0.128/24');
    expect((await call('RequestAddress', { PoolID: P, Address: '10.98.0.200', Options: { 'com.docker.network.endpoint.macaddress': '02:42:45:b4:17:96' } })).Address)
      .toBe('10.98.0.200/24');
    // Taken: a clear error in the IPAM shape.
    const again = await call('RequestAddress', { PoolID: P, Address: '10.98.0.200', Options: null });
    expect(again.Error).toMatch(/10\.98\.0\.200 .* already allocated/);
    const outside = await call('RequestAddress', { PoolID: P, Address: '10.97.0.3' });
    expect(outside.Error).toMatch(/not in subnet 10\.98\.0\.0\/24/);
    for (const a of ['10.98.0.128', '10.98.0.200', '10.98.0.5', '10.98.0.254']) expect(await call('ReleaseAddress', { PoolID: P, Address: a })).toEqual({});
    // A release dockerd repeats (it lost the answer) is not an error.
    expect(await call('ReleaseAddress', { PoolID: P, Address: '10.98.0.200' })).toEqual({});
    expect(await call('ReleasePool', { PoolID: P })).toEqual({});
    expect(await c.pools()).toEqual([]);
    expect((await call('ReleasePool', { PoolID: P })).Error).toMatch(/no IPAM pool/);
  });

  it('an auto pool skips host routes; the gateway gets the first address; dynamic ones follow', async () => {
    const pool = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: '', SubPool: '', Options: {}, V6: false });
    expect(pool.Pool).toBe('172.18.0.0/16');
    const P = pool.PoolID as string;
    expect((await call('RequestAddress', { PoolID: P, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } })).Address).toBe('172.18.0.1/16');
    expect((await call('RequestAddress', { PoolID: P, Address: '', Options: null })).Address).toBe('172.18.0.2/16');
    expect((await call('RequestAddress', { PoolID: P })).Address).toBe('172.18.0.3/16');
    const second = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: '', V6: false });
    expect(second.Pool).toBe('172.19.0.0/16');
  });

  it('IPv6: an auto ULA /64 and an explicit one', async () => {
    const auto = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: '', V6: true });
    expect(auto.Pool).toMatch(/^fd[0-9a-f:]+::\/64$/);
    const v6 = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: 'fd00:97::/64', V6: true });
    const gw = await call('RequestAddress', { PoolID: v6.PoolID, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
    expect(gw.Address).toBe('fd00:97::1/64');
    expect((await call('RequestAddress', { PoolID: v6.PoolID })).Address).toBe('fd00:97::2/64');
    const wrong = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: '10.1.0.0/24', V6: true });
    expect(wrong.Error).toMatch(/IPv4 .* IPv6|IPv6 pool was requested/);
    expect(await c.pools()).toHaveLength(2);
  });

  it('identical requests share one pool (reference-counted); overlapping ones are refused', async () => {
    const a = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: '10.50.0.0/24' });
    const b = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: '10.50.0.0/24' });
    expect(b.PoolID).toBe(a.PoolID);
    const wider = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: '10.50.0.0/16' });
    expect(wider.Error).toMatch(/overlaps 10\.50\.0\.0\/24/);
    await call('ReleasePool', { PoolID: a.PoolID });
    expect(await c.pools()).toHaveLength(1);
    await call('ReleasePool', { PoolID: a.PoolID });
    expect(await c.pools()).toHaveLength(0);
  });

  it('allocations survive a restart of the plugin (a new controller on the same state)', async () => {
    const pool = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: '10.60.0.0/29' });
    const got = new Set<string>();
    for (let i = 0; i < 3; i++) got.add((await call('RequestAddress', { PoolID: pool.PoolID })).Address as string);
    await app.close();
    c.close();
    c = await Controller.open({ stateDir: dir, drivers: [recordingDriver('bridge', () => [])] });
    app = await pluginApp({ ipam: new DockerIpam(c) });
    for (let i = 0; i < 3; i++) got.add((await call('RequestAddress', { PoolID: pool.PoolID })).Address as string);
    expect(got.size).toBe(6);
    expect((await call('RequestAddress', { PoolID: pool.PoolID })).Error).toMatch(/no free address/);
  });

  it('concurrent requests never hand out one address twice', async () => {
    const pool = await call('RequestPool', { AddressSpace: 'tnet-local', Pool: '10.70.0.0/24' });
    const all = await Promise.all(Array.from({ length: 100 }, () => call('RequestAddress', { PoolID: pool.PoolID })));
    expect(new Set(all.map((r) => r.Address)).size).toBe(100);
  });

  it('bad input: unknown pool, sub-pool without a pool, wrong types', async () => {
    expect((await call('RequestAddress', { PoolID: 'nope' })).Error).toMatch(/no IPAM pool with id "nope"/);
    expect((await call('RequestPool', { Pool: '', SubPool: '10.0.0.0/25' })).Error).toMatch(/needs an explicit pool/);
    expect((await call('RequestPool', { Pool: 'not-a-subnet' })).Error).toMatch(/not-a-subnet/);
    expect((await call('RequestPool', { Pool: '10.0.0.0/24', V6: 'yes' })).Error).toMatch(/V6 must be boolean/);
    expect((await call('ReleaseAddress', { PoolID: 'x' })).Error).toMatch(/Address/);
    expect(await c.pools()).toEqual([]);
  });
});
