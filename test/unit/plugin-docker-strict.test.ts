/**
 * The Docker plugin sockets: every route refuses input of the wrong shape (generated from the
 * schemas themselves) without changing anything; the IpamDriver acts only on the pools it handed
 * out (a lab's or a tnet network's pool id is "not found" there, and nothing is released); twenty
 * parallel RequestPool calls all succeed (they share the host namespace's netlink socket for the
 * route dump that keeps auto pools off the host's routes).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Controller } from '../../libnetwork/controller.js';
import { DockerIpam, DockerNetworks } from '../../libnetwork/plugin/docker.js';
import * as schemas from '../../libnetwork/plugin/schemas.js';
import { pluginApp } from '../../libnetwork/plugin/server.js';
import { recordingDriver } from './recording-driver.js';

let dir: string;
let c: Controller;
let app: FastifyInstance;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tnet-plugin-strict-'));
  c = await Controller.open({ stateDir: dir, drivers: [recordingDriver('bridge', () => [])] });
  app = await pluginApp({ ipam: new DockerIpam(c), network: new DockerNetworks(c, { dockerUser: false }) });
});
afterEach(async () => {
  await app.close();
  c.close();
  rmSync(dir, { recursive: true, force: true });
});

const bigint = (_k: string, v: unknown) => (typeof v === 'bigint' ? v.toString() : v);
async function snapshot(): Promise<string> {
  const pools = await c.pools();
  const addrs = await Promise.all(pools.map((p) => c.addressesOf(p.id)));
  return JSON.stringify({ n: c.networks(), e: c.endpoints(), pools, addrs }, bigint);
}

async function ipam(method: string, body: unknown): Promise<Record<string, unknown>> {
  const r = await app.inject({ method: 'POST', url: `/IpamDriver.${method}`, payload: JSON.stringify(body) });
  expect(r.statusCode, r.body).toBe(200); // dockerd reads IPAM errors only from a 200
  return r.json();
}

describe('IpamDriver: each face touches only what it owns', () => {
  it("a lab's pool and a tnet network's pool are not found through Docker's IPAM, and nothing in them changes", async () => {
    const net = await c.createNetwork({ name: 'mine', subnet: '10.60.0.0/24' });
    const lab = await c.requestPool({ subnet: '10.61.0.0/24', owner: 'lab:l1' });
    const taken = await c.requestAddress(lab.id, { owner: 'lab:l1 node a' });
    const docker = await ipam('RequestPool', { AddressSpace: '', Pool: '10.62.0.0/24', Options: {}, V6: false });
    const foreign = [net.ipv4!.poolId, lab.id];
    const before = await snapshot();
    let tried = 0;
    for (const id of foreign) {
      for (const [method, body] of [
        ['RequestAddress', { PoolID: id, Address: '' }],
        ['RequestAddress', { PoolID: id, Address: '10.61.0.77' }],
        ['RequestAddress', { PoolID: id, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } }],
        ['ReleaseAddress', { PoolID: id, Address: taken.toString() }],
        ['ReleaseAddress', { PoolID: id, Address: '10.60.0.1' }],
        ['ReleasePool', { PoolID: id }],
      ] as const) {
        tried++;
        const r = await ipam(method, body);
        expect(r.Error, `${method} ${JSON.stringify(body)}`).toBe(`no IPAM pool with id "${id}"`);
      }
    }
    expect(tried).toBe(12);
    expect(await snapshot(), 'nothing released or taken in another face\'s pools').toBe(before);
    // Docker's own pool still works through the same calls.
    const P = docker.PoolID as string;
    expect((await ipam('RequestAddress', { PoolID: P, Address: '' })).Address).toBe('10.62.0.1/24');
    expect(await ipam('ReleaseAddress', { PoolID: P, Address: '10.62.0.1' })).toEqual({});
    expect(await ipam('ReleasePool', { PoolID: P })).toEqual({});
    // A requested subnet that another face holds: refused, and the holder's pool is untouched.
    const clash = await ipam('RequestPool', { AddressSpace: '', Pool: '10.61.0.0/24', Options: {}, V6: false });
    expect(clash.Error).toMatch(/10\.61\.0\.0\/24/);
    expect((await c.addressesOf(lab.id)).map((a) => a.address.toString())).toContain(taken.toString());
  });

  it('twenty parallel RequestPool calls: twenty pools, distinct; twenty identical explicit ones: one pool, twenty references', async () => {
    const auto = await Promise.all(Array.from({ length: 20 }, () => ipam('RequestPool', { AddressSpace: '', Pool: '', Options: {}, V6: false })));
    expect(auto.filter((r) => r.Error)).toEqual([]);
    expect(new Set(auto.map((r) => r.Pool)).size).toBe(20);
    const six = await Promise.all(Array.from({ length: 20 }, () => ipam('RequestPool', { AddressSpace: '', Pool: '', Options: {}, V6: true })));
    expect(six.filter((r) => r.Error)).toEqual([]);
    expect(new Set(six.map((r) => r.Pool)).size).toBe(20);
    const same = await Promise.all(Array.from({ length: 20 }, () => ipam('RequestPool', { AddressSpace: '', Pool: '10.70.0.0/24', Options: {}, V6: false })));
    expect(same.filter((r) => r.Error)).toEqual([]);
    expect(new Set(same.map((r) => r.PoolID)).size).toBe(1);
    const released = await Promise.all(same.map((r) => ipam('ReleasePool', { PoolID: r.PoolID })));
    expect(released.filter((r) => r.Error)).toEqual([]);
    expect((await c.pools()).some((p) => p.subnet.toString() === '10.70.0.0/24')).toBe(false);
  });
});

/** Values of the wrong JSON type for a property schema (none of the types it allows). */
function wrongValues(prop: { type?: string | readonly string[]; pattern?: string; maxLength?: number; minLength?: number }): unknown[] {
  const types = prop.type === undefined ? [] : ([] as string[]).concat(prop.type as string | string[]);
  if (types.length === 0) return [];
  const all: [string, unknown][] = [['string', 'x'], ['integer', 7], ['number', 7.5], ['boolean', true], ['null', null], ['array', ['x']], ['object', { x: 'y' }]];
  const ok = (t: string) => types.includes(t) || (t === 'integer' && types.includes('number'));
  const out = all.filter(([t]) => !ok(t) && !(t === 'string' && prop.pattern === undefined && types.includes('string'))).map(([, v]) => v);
  if (types.includes('string')) {
    if (prop.maxLength !== undefined) out.push('a'.repeat(prop.maxLength + 1));
    if (prop.pattern !== undefined) out.push('A'.repeat(64), 'a'.repeat(63), '');
    if (prop.minLength) out.push('');
  }
  return out;
}

const ID = 'a'.repeat(64);
const base: Record<string, Record<string, unknown>> = {
  'NetworkDriver.CreateNetwork': { NetworkID: ID },
  'NetworkDriver.DeleteNetwork': { NetworkID: ID },
  'NetworkDriver.CreateEndpoint': { NetworkID: ID, EndpointID: ID },
  'NetworkDriver.EndpointOperInfo': { NetworkID: ID, EndpointID: ID },
  'NetworkDriver.DeleteEndpoint': { NetworkID: ID, EndpointID: ID },
  'NetworkDriver.Join': { NetworkID: ID, EndpointID: ID, SandboxKey: '/var/run/docker/netns/x' },
  'NetworkDriver.Leave': { NetworkID: ID, EndpointID: ID },
  'NetworkDriver.ProgramExternalConnectivity': { NetworkID: ID, EndpointID: ID },
  'NetworkDriver.RevokeExternalConnectivity': { NetworkID: ID, EndpointID: ID },
  'NetworkDriver.DiscoverNew': {},
  'NetworkDriver.DiscoverDelete': {},
  'IpamDriver.RequestPool': {},
  'IpamDriver.ReleasePool': { PoolID: 'p' },
  'IpamDriver.RequestAddress': { PoolID: 'p' },
  'IpamDriver.ReleaseAddress': { PoolID: 'p', Address: '10.0.0.1' },
};

describe('the plugin sockets refuse input of the wrong shape, and change nothing', () => {
  it('every property of every route, from the schemas: wrong types, oversize and malformed ids, missing required fields, non-objects', async () => {
    await c.createNetwork({ name: 'keep', subnet: '10.90.0.0/24' });
    const before = await snapshot();
    let tried = 0;
    const send = async (route: string, body: unknown, raw?: string) => {
      tried++;
      const r = await app.inject({ method: 'POST', url: `/${route}`, payload: raw ?? JSON.stringify(body) });
      const ipamRoute = route.startsWith('IpamDriver.');
      expect(r.statusCode, `${route} ${raw ?? JSON.stringify(body)?.slice(0, 100)}: ${r.body}`).toBe(ipamRoute ? 200 : 400);
      const err = (r.json() as Record<string, string>)[ipamRoute ? 'Error' : 'Err'];
      expect(err, `${route} ${JSON.stringify(body)?.slice(0, 100)}`).toMatch(/invalid request to|not valid JSON/);
      return err!;
    };
    const groups = { NetworkDriver: schemas.network, IpamDriver: schemas.ipam } as const;
    for (const [prefix, group] of Object.entries(groups)) {
      for (const [name, schema] of Object.entries(group) as [string, { required?: readonly string[]; properties?: Record<string, never> }][]) {
        const route = `${prefix}.${name}`;
        const valid = base[route]!;
        for (const [prop, ps] of Object.entries(schema.properties ?? {})) {
          for (const v of wrongValues(ps)) {
            const err = await send(route, { ...valid, [prop]: v });
            expect(err, `${route} ${prop}`).toContain(prop);
          }
        }
        for (const req of schema.required ?? []) {
          const body = { ...valid };
          delete body[req];
          expect(await send(route, body)).toContain(req);
        }
        for (const v of [null, [], 'x', 7, true]) await send(route, v);
        for (const raw of ['{', '{"NetworkID":', "{'a':1}"]) await send(route, undefined, raw);
      }
    }
    expect(await snapshot()).toBe(before);
    expect(tried).toBeGreaterThan(150);
    console.log(`plugin sockets: ${tried} refused inputs tried`);
  });
});
