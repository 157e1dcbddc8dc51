import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { controlServer } from '../../libnetwork/api/server.js';
import type { Controller } from '../../libnetwork/controller.js';
import { notFound } from '../../libnetwork/errors.js';

// The lab routes of the control API with a stand-in controller: what reaches it, what is refused.
const calls: unknown[][] = [];
const fake = {
  labs: () => [{ name: 'lab1', state: 'ready', nodes: 3, links: 3, networks: 1, created: 'x' }],
  labDetails: (name: string) => {
    if (name !== 'lab1') throw notFound(`lab "${name}" not found`, `lab "${name}"`);
    return { name };
  },
  labNodeNetns: (lab: string, node: string) => `tn-${lab}+${node}`,
  destroyLab: async (name: string) => (calls.push(['destroy', name]), { removed: 0 }),
  applyLab: async (spec: unknown, opts: { dryRun?: boolean; onProgress?: (p: unknown) => void }) => {
    calls.push(['apply', spec, opts.dryRun]);
    opts.onProgress?.({ done: 1, total: 1, what: 'node a' });
    return { plan: {}, created: ['node a'], removed: [], changed: [], unchanged: 0 };
  },
} as unknown as Controller;

let app: FastifyInstance;
beforeAll(async () => {
  app = await controlServer(Promise.resolve(fake));
});
afterAll(() => app.close());

describe('lab routes', () => {
  it('lists, shows, finds a node namespace, destroys', async () => {
    expect((await app.inject({ method: 'GET', url: '/labs' })).json()[0].name).toBe('lab1');
    expect((await app.inject({ method: 'GET', url: '/labs/lab1' })).json()).toEqual({ name: 'lab1' });
    const nf = await app.inject({ method: 'GET', url: '/labs/nope' });
    expect(nf.statusCode).toBe(404);
    expect(nf.json().error.code).toBe('not-found');
    expect((await app.inject({ method: 'GET', url: '/labs/lab1/nodes/r1' })).json()).toEqual({ netns: 'tn-lab1+r1' });
    expect((await app.inject({ method: 'DELETE', url: '/labs/lab1' })).json()).toEqual({ removed: 0 });
  });

  it('creates with the spec as given, or streams progress as NDJSON', async () => {
    const spec = { name: 'a', networks: {}, nodes: { a: {} }, links: [] };
    const r = await app.inject({ method: 'POST', url: '/labs', payload: { spec, dryRun: true } });
    expect(r.statusCode).toBe(200);
    expect(calls.at(-1)).toEqual(['apply', spec, true]);
    const s = await app.inject({ method: 'POST', url: '/labs', payload: { spec, progress: true } });
    const lines = s.body.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines[0]).toEqual({ progress: { done: 1, total: 1, what: 'node a' } });
    expect(lines.at(-1).result.created).toEqual(['node a']);
  });

  it('refuses unknown fields, wrong types and long names without calling the controller', async () => {
    const n = calls.length;
    for (const payload of [{ spec: {}, dryrun: true }, { spec: {}, dryRun: 'true' }, { spec: 'lab.yml' }, {}]) {
      const r = await app.inject({ method: 'POST', url: '/labs', payload });
      expect(r.statusCode).toBe(400);
      expect(r.json().error.code).toBe('invalid-argument');
    }
    expect((await app.inject({ method: 'DELETE', url: `/labs/${'x'.repeat(65)}` })).statusCode).toBe(400);
    expect(calls.length).toBe(n);
  });
});
