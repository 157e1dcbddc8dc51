import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { IpamDriverApi, NetworkDriverApi } from './docker.js';
import { TnetError } from '../errors.js';
import { KernelError } from '../kernel/error.js';
import { log } from '../log.js';
import * as schemas from './schemas.js';

/** What one plugin socket serves: a NetworkDriver, an IpamDriver, or both. */
export interface PluginBackends {
  readonly network?: NetworkDriverApi;
  readonly ipam?: IpamDriverApi;
}

export interface PluginAppOptions {
  /** Largest request body accepted (default 1 MiB: dockerd's biggest call is a few KiB). */
  readonly bodyLimit?: number;
  /** Keep this many handling times per call for GET /tnet/timings (default 10000). */
  readonly timings?: number;
  /** Serve on this (already listening) server instead of one fastify makes (see index.ts). */
  readonly serverFactory?: (handler: (req: IncomingMessage, res: ServerResponse) => void) => Server;
}

/** Handling times (ms, from the request's arrival to the reply's first byte) per call name. */
export type Timings = Map<string, number[]>;

const IPAM = 'IpamDriver.';

/** The Docker plugin protocol's error shape for the call at `url`. */
function errorBody(url: string, message: string): Record<string, string> {
  return url.startsWith(`/${IPAM}`) ? { Error: message } : { Err: message };
}

function message(e: unknown): string {
  if (e instanceof TnetError || e instanceof KernelError) return e.message;
  return e instanceof Error ? e.message : String(e);
}

/**
 * The HTTP side of the plugin: schema-checked routes, bodies parsed as JSON whatever the
 * Content-Type (dockerd sends none) and empty bodies read as {}, errors in Docker's shape.
 *
 * Status codes: a request that cannot be parsed or does not match its schema gets 400 (413 when
 * too big) with {"Err"}; an operation that fails gets HTTP 200 with {"Err": text} (dockerd shows
 * "remote: text"). IPAM calls always answer 200 with {"Error": text}: dockerd reads the IPAM
 * error only from a 200 answer. 404 means "not implemented" (dockerd treats it so).
 */
export async function pluginApp(b: PluginBackends, opts: PluginAppOptions = {}): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: opts.bodyLimit ?? 1 << 20,
    // Wrong types are an error to report, not something to coerce (a NetworkID of 123 is not "123").
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false } },
    return503OnClosing: false,
    ...(opts.serverFactory ? { serverFactory: opts.serverFactory } : {}),
  });
  const keep = opts.timings ?? 10_000;
  const timings: Timings = new Map();

  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => {
    const text = (body as string).trim();
    if (text === '') return done(null, {});
    try {
      done(null, JSON.parse(text));
    } catch (e) {
      const err = new Error(`the request body is not valid JSON: ${(e as Error).message}`) as FastifyError;
      (err as { statusCode?: number }).statusCode = 400;
      done(err, undefined);
    }
  });

  const started = new WeakMap<FastifyRequest, number>();
  app.addHook('onRequest', async (req) => {
    started.set(req, performance.now());
  });
  app.addHook('onSend', async (req, _reply, payload) => {
    const t0 = started.get(req);
    const name = req.routeOptions.url?.slice(1);
    if (t0 !== undefined && name && name !== 'tnet/timings') {
      let list = timings.get(name);
      if (!list) timings.set(name, (list = []));
      list.push(performance.now() - t0);
      if (list.length > keep) list.splice(0, list.length - keep);
    }
    return payload;
  });

  app.setErrorHandler((e: FastifyError, req, reply) => {
    const url = req.url;
    const ipam = url.startsWith(`/${IPAM}`);
    if (e.validation) {
      const text = `invalid request to ${url.slice(1)}: ${e.message}`;
      return reply.code(ipam ? 200 : 400).send(errorBody(url, text));
    }
    if (e.statusCode === 413 || e.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
      return reply.code(ipam ? 200 : 413).send(errorBody(url, `request body too large (limit ${app.initialConfig.bodyLimit} bytes)`));
    }
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
      return reply.code(ipam ? 200 : e.statusCode).send(errorBody(url, message(e)));
    }
    if (!(e instanceof TnetError) && !(e instanceof KernelError)) log.error({ err: e, call: url }, 'plugin call failed');
    else log.info({ call: url, err: message(e) }, 'plugin call refused');
    return reply.code(200).send(errorBody(url, message(e)));
  });

  app.setNotFoundHandler((req, reply) => {
    reply.code(404).send(errorBody(req.url, `${req.method} ${req.url.slice(0, 200)} is not implemented by tnet`));
  });

  const implementsList = [...(b.network ? ['NetworkDriver'] : []), ...(b.ipam ? ['IpamDriver'] : [])];
  app.post('/Plugin.Activate', async () => {
    // dockerd (re)started: let the network side refresh what dockerd may have rebuilt.
    if (b.network?.activated) await b.network.activated().catch((e) => log.warn({ err: e }, 'activation hook failed'));
    return { Implements: implementsList };
  });

  // Handling times, for the benchmark and for people (root-only socket, like everything here).
  app.get('/tnet/timings', async () => Object.fromEntries(timings));

  const route = <Body>(name: string, schema: object | undefined, fn: (body: Body) => Promise<unknown>) => {
    app.post(`/${name}`, schema ? { schema: { body: schema } } : {}, async (req: FastifyRequest, reply: FastifyReply) => {
      const out = await fn(req.body as Body);
      return reply.code(200).send(out ?? {});
    });
  };

  const n = b.network;
  if (n) {
    const s = schemas.network;
    route('NetworkDriver.GetCapabilities', undefined, async () => n.capabilities());
    route<Parameters<NetworkDriverApi['createNetwork']>[0]>('NetworkDriver.CreateNetwork', s.CreateNetwork, (r) => n.createNetwork(r));
    route<Parameters<NetworkDriverApi['deleteNetwork']>[0]>('NetworkDriver.DeleteNetwork', s.DeleteNetwork, (r) => n.deleteNetwork(r));
    route<Parameters<NetworkDriverApi['createEndpoint']>[0]>('NetworkDriver.CreateEndpoint', s.CreateEndpoint, (r) => n.createEndpoint(r));
    route<Parameters<NetworkDriverApi['endpointOperInfo']>[0]>('NetworkDriver.EndpointOperInfo', s.EndpointOperInfo, (r) => n.endpointOperInfo(r));
    route<Parameters<NetworkDriverApi['deleteEndpoint']>[0]>('NetworkDriver.DeleteEndpoint', s.DeleteEndpoint, (r) => n.deleteEndpoint(r));
    route<Parameters<NetworkDriverApi['join']>[0]>('NetworkDriver.Join', s.Join, (r) => n.join(r));
    route<Parameters<NetworkDriverApi['leave']>[0]>('NetworkDriver.Leave', s.Leave, (r) => n.leave(r));
    route<Parameters<NetworkDriverApi['programExternalConnectivity']>[0]>(
      'NetworkDriver.ProgramExternalConnectivity', s.ProgramExternalConnectivity, (r) => n.programExternalConnectivity(r),
    );
    route<Parameters<NetworkDriverApi['revokeExternalConnectivity']>[0]>(
      'NetworkDriver.RevokeExternalConnectivity', s.RevokeExternalConnectivity, (r) => n.revokeExternalConnectivity(r),
    );
    // Node discovery: nothing to do for local-scope drivers.
    route('NetworkDriver.DiscoverNew', s.DiscoverNew, async () => ({}));
    route('NetworkDriver.DiscoverDelete', s.DiscoverDelete, async () => ({}));
    // AllocateNetwork/FreeNetwork are swarm-only: 404 (not implemented), as dockerd expects.
  }
  const p = b.ipam;
  if (p) {
    const s = schemas.ipam;
    route('IpamDriver.GetCapabilities', undefined, async () => p.capabilities());
    route('IpamDriver.GetDefaultAddressSpaces', undefined, async () => p.defaultAddressSpaces());
    route<Parameters<IpamDriverApi['requestPool']>[0]>('IpamDriver.RequestPool', s.RequestPool, (r) => p.requestPool(r));
    route<Parameters<IpamDriverApi['releasePool']>[0]>('IpamDriver.ReleasePool', s.ReleasePool, (r) => p.releasePool(r));
    route<Parameters<IpamDriverApi['requestAddress']>[0]>('IpamDriver.RequestAddress', s.RequestAddress, (r) => p.requestAddress(r));
    route<Parameters<IpamDriverApi['releaseAddress']>[0]>('IpamDriver.ReleaseAddress', s.ReleaseAddress, (r) => p.releaseAddress(r));
  }
  return app;
}
