import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import type { Controller } from '../controller.js';
import { ownedElsewhere } from '../core.js';
import { TnetError, invalid, notFound } from '../errors.js';
import { KernelError } from '../kernel/error.js';
import { log } from '../log.js';
import type { Endpoint, PortMapping } from '../model.js';
import { networkView, sandboxView } from '../views.js';
import { MAX_KEYS, MAX_TEXT, STRICT_AJV, type SchemaError, validationMessage } from './strict.js';
import { registerLabRoutes } from './labs.js';
import { registerDoctorRoutes } from './doctor.js';

/** HTTP status for each error code of the control API; the CLI maps codes to exit codes. */
const STATUS: Record<string, number> = {
  'invalid-argument': 400, 'not-found': 404, conflict: 409, busy: 409, unsupported: 501, kernel: 500, internal: 500, unavailable: 503,
};

function sendError(reply: FastifyReply, e: unknown) {
  if (e instanceof TnetError) return reply.code(STATUS[e.code] ?? 500).send({ error: { code: e.code, message: e.message, object: e.object } });
  if (e instanceof KernelError) return reply.code(500).send({ error: { code: 'kernel', message: e.message, object: e.object } });
  log.error({ err: e }, 'internal error');
  return reply.code(500).send({ error: { code: 'internal', message: e instanceof Error ? e.message : String(e) } });
}

/**
 * The endpoints `tnet port REF` means, through the controller's queries: a sandbox by name or id
 * (all its endpoints), else an endpoint by id or id prefix (Docker's EndpointID; its name is the
 * first 12 digits), else a sandbox by id prefix. An ambiguous prefix is refused with what it matches.
 */
function endpointsOf(c: Controller, ref: string): { what: string; eps: Endpoint[] } {
  const ready = (e: Endpoint | undefined): e is Endpoint => e !== undefined && e.state === 'ready';
  const sandboxes = c.sandboxes();
  const named = sandboxes.filter((s) => s.name === ref || s.id === ref);
  if (named.length > 1)
    throw invalid(`"${ref}" names ${named.length} sandboxes (owners ${named.map((s) => s.owner || 'none').join(', ')}); give a sandbox id`, `sandbox "${ref}"`);
  if (named.length === 1) return { what: `sandbox "${named[0]!.name}"`, eps: c.endpointsOfSandbox(named[0]!.id).filter(ready) };
  const exact = c.findEndpoint(ref);
  if (ready(exact)) return { what: `endpoint ${exact.id.slice(0, 12)}`, eps: [exact] };
  if (/^[0-9a-f]+$/.test(ref)) {
    const eps = c.endpoints().filter((e) => e.id.startsWith(ref));
    const sbs = sandboxes.filter((s) => s.id.startsWith(ref));
    if (eps.length + sbs.length > 1) {
      const all = [...eps.map((e) => `endpoint ${e.id.slice(0, 12)}`), ...sbs.map((s) => `sandbox "${s.name}"`)];
      throw invalid(`"${ref}" is the start of ${all.length} ids (${all.slice(0, 5).join(', ')}${all.length > 5 ? ', ...' : ''}); give more digits`, `"${ref}"`);
    }
    if (eps.length === 1) return { what: `endpoint ${eps[0]!.id.slice(0, 12)}`, eps };
    if (sbs.length === 1) return { what: `sandbox "${sbs[0]!.name}"`, eps: c.endpointsOfSandbox(sbs[0]!.id).filter(ready) };
  }
  throw notFound(`no sandbox or endpoint "${ref}" (give a sandbox name, or a Docker EndpointID or its first digits)`, `"${ref}"`);
}

/**
 * Where a mapping answers, as `docker port` prints it: an every-address mapping on 0.0.0.0, and on
 * [::] when the endpoint has an IPv6 address; a given host address as itself.
 */
function hostsOf(e: Endpoint, p: PortMapping): string[] {
  if (p.hostIp === '') return [`0.0.0.0:${p.hostPort}`, ...(e.ipv6 ? [`[::]:${p.hostPort}`] : [])];
  return [p.hostIp.includes(':') ? `[${p.hostIp}]:${p.hostPort}` : `${p.hostIp}:${p.hostPort}`];
}

/**
 * This face connects and disconnects only its own objects: a Docker network or a lab's network or
 * sandbox is refused with the way to change it (deletes check the owner in the core).
 */
function ownedHere(c: Controller, network: string, sandbox: string): void {
  const n = c.network(network);
  if (n.owner !== '' && n.owner !== 'docker') throw ownedElsewhere('network', n.name, n.owner); // Docker's: the core says how
  const s = c.sandbox(sandbox);
  if (s.owner !== '') throw ownedElsewhere('sandbox', s.name, s.owner);
}

const str = { type: 'string', maxLength: MAX_TEXT } as const;
/** Object names: what checkName accepts at most (the core gives the precise rule). */
const name = { type: 'string', minLength: 1, maxLength: 255 } as const;
const strMap = {
  type: 'object', maxProperties: MAX_KEYS, propertyNames: { maxLength: 255 }, additionalProperties: { type: 'string', maxLength: MAX_TEXT },
} as const;
const port = (min: number) => ({ type: 'integer', minimum: min, maximum: 65535 }) as const;
const portReq = {
  type: 'object',
  required: ['proto', 'containerPort'],
  additionalProperties: false,
  properties: {
    proto: { enum: ['tcp', 'udp', 'sctp'] }, containerPort: port(1), hostIp: { type: 'string', maxLength: 64 },
    hostPort: port(0), hostPortEnd: port(0),
  },
} as const;
/** The :ref of a route: a name, an id or an id prefix. */
const refParams = { type: 'object', required: ['ref'], additionalProperties: false, properties: { ref: name } } as const;

/**
 * The control API the `tnet` command talks to, over a unix socket. Schema-first: the schemas are
 * the documentation of the wire format. `ready` resolves when the controller has reconciled;
 * /ping answers before that, so a starting daemon is seen as up within milliseconds.
 */
export async function controlServer(
  ready: Promise<Controller>,
  opts: { serverFactory?: (handler: (req: IncomingMessage, res: ServerResponse) => void) => Server } = {},
): Promise<FastifyInstance> {
  // Strict validator options at the instance: the route plugins registered on it inherit them.
  const app = Fastify({ logger: false, bodyLimit: 1 << 20, ajv: { customOptions: STRICT_AJV },
    // Long references reach the schema (a 4xx naming the field) instead of the router's bare 414.
    routerOptions: { maxParamLength: 4096 }, ...(opts.serverFactory ? { serverFactory: opts.serverFactory } : {}) });
  let controller: Controller | undefined;
  void ready.then((c) => (controller = c)).catch(() => undefined);
  const ctl = () => ready;

  app.setErrorHandler((e, req, reply) => {
    const v = e as { validation?: SchemaError[]; validationContext?: string; statusCode?: number; code?: string };
    if (v.validation) {
      const context = v.validationContext ?? 'body';
      const schema = (req.routeOptions.schema as Record<string, unknown> | undefined)?.[context];
      return reply.code(400).send({ error: { code: 'invalid-argument', message: validationMessage(v.validation, context, schema) } });
    }
    // The HTTP layer's own refusals (bad JSON, a body too large, a wrong media type): the client's fault.
    if (!(e instanceof TnetError) && typeof v.statusCode === 'number' && v.statusCode >= 400 && v.statusCode < 500) {
      const message = v.code === 'FST_ERR_CTP_BODY_TOO_LARGE' ? `the request body is larger than ${app.initialConfig.bodyLimit} bytes` : `the request: ${(e as Error).message}`;
      return reply.code(v.statusCode).send({ error: { code: 'invalid-argument', message } });
    }
    return sendError(reply, e);
  });
  // No route takes a query string: one given is a mistake to report (`?force=1` would do nothing).
  app.addHook('onRoute', (route) => {
    route.schema = { ...route.schema, querystring: route.schema?.querystring ?? { type: 'object', additionalProperties: false, properties: {} } };
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: { code: 'not-found', message: `${req.method} ${req.url.slice(0, 200)} is not part of the control API` } }),
  );

  app.get('/ping', async () => ({ ok: true, ready: controller !== undefined, pid: process.pid }));

  app.get('/networks', async () => {
    const c = await ctl();
    return c.networks().map((n) => networkView(n, c.networkDetails(n), c.endpointsOfNetwork(n.id)));
  });
  app.get<{ Params: { ref: string } }>('/networks/:ref', { schema: { params: refParams } }, async (req) => {
    const c = await ctl();
    const n = c.network(req.params.ref);
    const view = networkView(n, c.networkDetails(n), c.endpointsOfNetwork(n.id), (id) => c.nameOf('sandbox', id));
    const remote = c.networkDetails(n)['scope'] === 'global' ? c.cluster?.remotePeers(n.name) : undefined;
    // A global network's endpoints on the other hosts, as this host knows them (its peer watch).
    return remote ? { ...view, remoteEndpoints: remote.map((p) => ({ id: p.endpointId, name: p.name, host: p.host, vtep: p.vtep, ipv4: p.ip, ipv6: p.ip6, mac: p.mac })) } : view;
  });
  app.post<{ Body: Parameters<Controller['createNetwork']>[0] }>(
    '/networks',
    {
      schema: {
        body: {
          type: 'object', required: ['name'], additionalProperties: false,
          properties: {
            name, driver: str, subnet: str, gateway: str, ipRange: str, auxAddresses: strMap, ipv6: { type: 'boolean' },
            subnet6: str, gateway6: str, ipRange6: str, internal: { type: 'boolean' }, options: strMap, labels: strMap,
          },
        },
      },
    },
    async (req, reply) => {
      const c = await ctl();
      const n = await c.createNetwork(req.body);
      return reply.code(201).send(networkView(n, c.networkDetails(n)));
    },
  );
  app.delete<{ Params: { ref: string } }>('/networks/:ref', { schema: { params: refParams } }, async (req, reply) => {
    await (await ctl()).deleteNetwork(req.params.ref);
    return reply.code(204).send();
  });

  app.get('/sandboxes', async () => {
    const c = await ctl();
    return c.sandboxes().map((s) => sandboxView(s, c.endpointsOfSandbox(s.id), (id) => c.nameOf('network', id)));
  });
  app.get<{ Params: { ref: string } }>('/sandboxes/:ref', { schema: { params: refParams } }, async (req) => {
    const c = await ctl();
    const s = c.sandbox(req.params.ref);
    return sandboxView(s, c.endpointsOfSandbox(s.id), (id) => c.nameOf('network', id));
  });
  app.post<{ Body: { name: string } }>(
    '/sandboxes',
    { schema: { body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name } } } },
    async (req, reply) => reply.code(201).send(sandboxView(await (await ctl()).createSandbox(req.body))),
  );
  app.delete<{ Params: { ref: string } }>('/sandboxes/:ref', { schema: { params: refParams } }, async (req, reply) => {
    await (await ctl()).deleteSandbox(req.params.ref);
    return reply.code(204).send();
  });

  type PortBody = { proto: 'tcp' | 'udp' | 'sctp'; containerPort: number; hostIp?: string; hostPort?: number; hostPortEnd?: number };
  type ConnectBody = { network: string; sandbox: string; ip?: string; ip6?: string; mac?: string; aliases?: string[]; ports?: PortBody[] };
  app.post<{ Body: ConnectBody }>(
    '/connect',
    {
      schema: {
        body: {
          type: 'object', required: ['network', 'sandbox'], additionalProperties: false,
          properties: {
            network: name, sandbox: name, ip: str, ip6: str, mac: str,
            aliases: { type: 'array', maxItems: 64, items: { type: 'string', maxLength: 253 } },
            // every port of the host at most (a -p range expands to one request per port)
            ports: { type: 'array', maxItems: 65535, items: portReq },
          },
        },
      },
    },
    async (req, reply) => {
      const c = await ctl();
      const { network, sandbox, ports, ...rest } = req.body;
      ownedHere(c, network, sandbox);
      const full = (ports ?? []).map((p) => ({ ...p, hostIp: p.hostIp ?? '', hostPort: p.hostPort ?? 0, hostPortEnd: p.hostPortEnd ?? 0 }));
      const ep = await c.connect(network, sandbox, { ...rest, ports: full });
      return reply.code(201).send(sandboxView(c.sandbox(sandbox), [ep], (id) => c.nameOf('network', id)).endpoints[0]);
    },
  );
  // Published ports of a sandbox or an endpoint: dockerd never reads them back from a remote
  // driver (moby/libnetwork#2451), so `docker port` shows nothing for tnet's; `tnet port` does.
  app.get<{ Params: { ref: string } }>('/ports/:ref', { schema: { params: refParams } }, async (req) => {
    const c = await ctl();
    const { what, eps } = endpointsOf(c, req.params.ref);
    const networks = new Map(c.networks().map((n) => [n.id, n]));
    const sandboxes = new Map(c.sandboxes().map((s) => [s.id, s]));
    const mappings = eps.flatMap((e) =>
      e.ports.map((p) => ({
        endpoint: e.id,
        network: networks.get(e.networkId)?.name,
        networkId: e.networkId,
        sandbox: e.sandboxId ? sandboxes.get(e.sandboxId)?.name : undefined,
        proto: p.proto,
        containerPort: p.containerPort,
        hostIp: p.hostIp,
        hostPort: p.hostPort,
        hosts: hostsOf(e, p),
      })),
    );
    mappings.sort((a, b) => a.containerPort - b.containerPort || a.proto.localeCompare(b.proto) || a.hostPort - b.hostPort || a.hostIp.localeCompare(b.hostIp));
    return { ref: req.params.ref, what, mappings };
  });

  app.post<{ Body: { network: string; sandbox: string } }>(
    '/disconnect',
    { schema: { body: { type: 'object', required: ['network', 'sandbox'], additionalProperties: false, properties: { network: name, sandbox: name } } } },
    async (req, reply) => {
      const c = await ctl();
      ownedHere(c, req.body.network, req.body.sandbox);
      await c.disconnect(req.body.network, req.body.sandbox);
      return reply.code(204).send();
    },
  );
  registerLabRoutes(app, ctl);
  registerDoctorRoutes(app, ctl);
  return app;
}
