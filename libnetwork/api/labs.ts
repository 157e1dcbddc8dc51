/**
 * The control API's lab routes (`tnet create`, `destroy`, `ls`, `inspect`, `exec LAB NODE`).
 * Strict like the other routes: no coercion, no unknown fields, sizes bounded. The spec itself is
 * checked by the controller (lab/check.ts: every problem at once, in the user's words), so the
 * schema here only bounds its shape.
 *
 * A create asked with `progress: true` answers with NDJSON: `{"progress":{done,total,what}}`
 * lines while it works, then one `{"result":...}` or `{"error":{code,message}}` line.
 */
import type { FastifyInstance } from 'fastify';
import type { Controller } from '../controller.js';
import { TnetError } from '../errors.js';
import { KernelError } from '../kernel/error.js';
import type { LabSpec } from '../lab/topology.js';

const labName = { type: 'string', minLength: 1, maxLength: 64 } as const;
const nodeName = { type: 'string', minLength: 1, maxLength: 64 } as const;

const createBody = {
  type: 'object',
  required: ['spec'],
  additionalProperties: false,
  properties: {
    // a lab's top level has name, ipv6, pools, networks, nodes, links (check.ts says which are wrong)
    spec: { type: 'object', maxProperties: 16 },
    dryRun: { type: 'boolean' },
    progress: { type: 'boolean' },
  },
} as const;

const nameParams = { type: 'object', required: ['name'], additionalProperties: false, properties: { name: labName } } as const;
const nodeParams = {
  type: 'object', required: ['name', 'node'], additionalProperties: false, properties: { name: labName, node: nodeName },
} as const;

function errorBody(e: unknown): { code: string; message: string; object?: string } {
  if (e instanceof TnetError) return { code: e.code, message: e.message, object: e.object };
  if (e instanceof KernelError) return { code: 'kernel', message: e.message, object: e.object };
  return { code: 'internal', message: e instanceof Error ? e.message : String(e) };
}

export function registerLabRoutes(app: FastifyInstance, ctl: () => Promise<Controller>): void {
  app.get('/labs', async () => (await ctl()).labs());

  app.get<{ Params: { name: string } }>('/labs/:name', { schema: { params: nameParams } }, async (req) => (await ctl()).labDetails(req.params.name));

  app.get<{ Params: { name: string; node: string } }>('/labs/:name/nodes/:node', { schema: { params: nodeParams } }, async (req) => ({
    netns: (await ctl()).labNodeNetns(req.params.name, req.params.node),
  }));

  app.delete<{ Params: { name: string } }>('/labs/:name', { schema: { params: nameParams } }, async (req) => (await ctl()).destroyLab(req.params.name));

  app.post<{ Body: { spec: LabSpec; dryRun?: boolean; progress?: boolean } }>('/labs', { schema: { body: createBody } }, async (req, reply) => {
    const c = await ctl();
    const { spec, dryRun, progress } = req.body;
    if (!progress) return reply.code(dryRun ? 200 : 201).send(await c.applyLab(spec, { dryRun }));
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    let last = 0;
    try {
      const result = await c.applyLab(spec, {
        dryRun,
        onProgress: (p) => {
          // at most ~20 lines a second: a 1000-node lab does not need 3000 of them
          const now = Date.now();
          if (now - last < 50 && p.done !== p.total) return;
          last = now;
          res.write(JSON.stringify({ progress: p }) + '\n');
        },
      });
      res.end(JSON.stringify({ result }) + '\n');
    } catch (e) {
      res.end(JSON.stringify({ error: errorBody(e) }) + '\n');
    }
  });
}
