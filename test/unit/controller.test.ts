/**
 * The controller's seams without root: drivers come from a registry (the core names none), each
 * with its own option short forms, context and records; owners scope names and guard deletes; a
 * state directory keeps its scope. Recording drivers stand in for the kernel (no lab sandboxes
 * here: those need namespaces, see test/integration).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Controller } from '../../libnetwork/controller.js';
import type { DriverContext, DriverFactory } from '../../libnetwork/driverapi.js';
import { IpAddr } from '../../libnetwork/ipam/address.js';
import { recordingDriver } from './recording-driver.js';

let dir: string;
let c: Controller;
let calls: string[];
let contexts: Map<string, DriverContext>;

/** A recording driver that keeps its context and has short forms of its own. */
function withContext(type: string, aliases: Record<string, string>, details: Record<string, string>): DriverFactory {
  const base = recordingDriver(type, () => calls);
  return {
    ...base,
    options: { keys: Object.values(aliases), aliases },
    create: (ctx) => {
      contexts.set(type, ctx);
      return { ...base.create(ctx), inspect: () => details };
    },
  };
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'tnet-controller-'));
  calls = [];
  contexts = new Map();
  c = await Controller.open({
    stateDir: dir,
    drivers: [withContext('bridge', { mtu: 'com.docker.network.driver.mtu' }, { bridge: 'br-x' }), withContext('other', { vni: 'tnet.other.vni' }, {})],
  });
});
afterEach(() => {
  c.close();
  rmSync(dir, { recursive: true, force: true });
});

describe('drivers come from the registry', () => {
  it('a network of each registered type; an unknown type is refused with what is supported, and nothing is recorded', async () => {
    const a = await c.createNetwork({ name: 'a', subnet: '10.1.0.0/24' });
    const b = await c.createNetwork({ name: 'b', driver: 'other', subnet: '10.2.0.0/24' });
    expect([a.driver, b.driver]).toEqual(['bridge', 'other']);
    expect(calls).toEqual([`createNetwork ${a.id.slice(0, 4)}`, `createNetwork ${b.id.slice(0, 4)}`]);
    await expect(c.createNetwork({ name: 'x', driver: 'nosuch' })).rejects.toMatchObject({
      code: 'invalid-argument', message: 'driver "nosuch" is not supported; supported drivers are bridge, other',
    });
    expect(c.networks().map((n) => n.name)).toEqual(['a', 'b']);
    expect((await c.pools()).map((p) => p.subnet.toString())).toEqual(['10.1.0.0/24', '10.2.0.0/24']);
  });

  it("short option forms are each driver's own", async () => {
    const a = await c.createNetwork({ name: 'a', options: { mtu: '1400', vni: '7' } });
    const b = await c.createNetwork({ name: 'b', driver: 'other', options: { mtu: '1400', vni: '7' } });
    expect(a.options).toEqual({ 'com.docker.network.driver.mtu': '1400', vni: '7' });
    expect(b.options).toEqual({ mtu: '1400', 'tnet.other.vni': '7' });
  });

  it('the driver hears of an endpoint before its join and after its leave (an overlay records peers there)', async () => {
    const net = await c.createNetwork({ name: 'a', subnet: '10.1.0.0/24' });
    const id = 'e'.repeat(64);
    calls.length = 0;
    await c.createEndpoint(net.id, { id, ipv4: IpAddr.parse('10.1.0.5') });
    await c.join(net.id, id);
    await c.leave(net.id, id);
    await c.deleteEndpoint(net.id, id);
    expect(calls).toEqual(['createEndpoint eeee', 'join eeee', 'leave eeee', 'leave eeee', 'deleteEndpoint eeee']);
    expect(c.findEndpoint(id)).toBeUndefined();
  });

  it("views get the driver's details through the controller", async () => {
    expect(c.networkDetails(await c.createNetwork({ name: 'a' }))).toEqual({ scope: 'local', bridge: 'br-x' });
    expect(c.networkDetails(await c.createNetwork({ name: 'b', driver: 'other' }))).toEqual({ scope: 'local' });
  });

  it('each driver gets its own context: its networks, its records, the instance tags', async () => {
    await c.createNetwork({ name: 'a' });
    await c.createNetwork({ name: 'b', driver: 'other' });
    const ctx = contexts.get('other')!;
    expect(ctx.networks().map((n) => n.name)).toEqual(['b']);
    expect(ctx.tags.of('network', 'x')).toBe(`tnet:${c.instance}:network:x`);
    expect(ctx.tags.mine(`tnet:${c.instance}:endpoint:y`)).toBe(true);
    expect(ctx.tags.mine('tnet:00000000:endpoint:y')).toBe(false);
    await ctx.store.put('peer/1', 'a');
    await ctx.store.put('peer/2', 'b');
    await ctx.store.put('vni', '7');
    expect(await ctx.store.list('peer/')).toEqual([{ key: 'peer/1', value: 'a' }, { key: 'peer/2', value: 'b' }]);
    expect(await contexts.get('bridge')!.store.get('vni')).toBeUndefined(); // another driver's records are not its own
    await ctx.store.delete('peer/1');
    expect(await ctx.store.list('peer/')).toEqual([{ key: 'peer/2', value: 'b' }]);
  });
});

describe('owners', () => {
  it('names are unique per owner, and only the owner deletes', async () => {
    await c.createNetwork({ name: 'web', subnet: '10.1.0.0/24' });
    await c.createNetwork({ name: 'web', owner: 'lab:l1', subnet: '10.2.0.0/24' });
    await expect(c.createNetwork({ name: 'web', owner: 'lab:l1' })).rejects.toMatchObject({ code: 'conflict', message: 'network "web" already exists' });
    expect(c.network('web').owner).toBe('');
    expect(c.network('web', 'lab:l1').owner).toBe('lab:l1');
    expect(c.networks({ owner: 'lab:l1' }).map((n) => n.ipv4?.subnet.toString())).toEqual(['10.2.0.0/24']);
    await expect(c.deleteNetwork(c.network('web', 'lab:l1').id)).rejects.toMatchObject({
      code: 'invalid-argument', message: 'network "web" belongs to lab "l1"; use tnet destroy l1',
    });
    await c.deleteNetwork('web', { owner: 'lab:l1' });
    await c.deleteNetwork('web');
    expect(c.networks()).toEqual([]);
    expect(await c.pools()).toEqual([]);
  });

  it('a state directory keeps the scope its kernel names were made with', async () => {
    c.close();
    await expect(Controller.open({ stateDir: dir, scope: 'other' })).rejects.toMatchObject({ code: 'conflict', message: /uses scope/ });
    const fresh = mkdtempSync(join(tmpdir(), 'tnet-controller-'));
    await expect(Controller.open({ stateDir: fresh, scope: 'Bad-Scope' })).rejects.toMatchObject({
      code: 'invalid-argument', message: /at most 8 lowercase letters or digits/,
    });
    rmSync(fresh, { recursive: true, force: true });
    c = await Controller.open({ stateDir: dir, drivers: [recordingDriver('bridge', () => calls)] });
    expect(c.scope).toBe(c.instance);
  });
});
