/**
 * tnet as a Docker remote plugin: fastify on unix sockets under /run/docker/plugins/.
 *
 *   tnet.sock           NetworkDriver (tnet's bridge driver) + IpamDriver
 *   tnet-macvlan.sock   NetworkDriver (tnet's macvlan driver): `docker network create -d tnet-macvlan -o parent=eth0`
 *   tnet-overlay.sock   NetworkDriver (Docker networks over a tnet overlay, overlay.ts):
 *                       `docker network create -d tnet-overlay --ipam-driver tnet --ipam-opt tnet.network=NAME NAME`
 *
 * `docker network create -d tnet ...` picks the network driver, `--ipam-driver tnet` the IPAM.
 * More drivers (overlay, macvlan) get their own socket names through `drivers`, e.g.
 * { tnet: 'bridge', 'tnet-overlay': 'overlay' }; the first one also serves the IpamDriver.
 *
 * The sockets answer at once (Activate and GetCapabilities need no state), so dockerd never
 * waits ~15 s for a missing plugin; calls that need the controller wait for it to be ready.
 */
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Controller } from '../controller.js';
import type { IpamDriverApi, NetworkDriverApi } from './docker.js';
import { EarlySocket, SocketInUse } from '../early-socket.js';
import { conflict } from '../errors.js';

export type { PluginBackends, PluginAppOptions } from './server.js';

export const DEFAULT_PLUGIN_DIR = '/run/docker/plugins';
/** The plugins `tnet daemon` serves: the names dockerd sees (`-d NAME`) and the tnet drivers behind them; the first also serves the IpamDriver. */
export const DAEMON_DRIVERS: Readonly<Record<string, string>> = { tnet: 'bridge', 'tnet-macvlan': 'macvlan', 'tnet-overlay': 'overlay' };

/**
 * What GetCapabilities says for a tnet driver. Always Scope "local": dockerd refuses a global one
 * outside swarm, and swarm refuses legacy plugins. The overlay's connectivity is global (dockerd
 * accepts that outside swarm and treats the network as local); tnet spans the hosts itself.
 */
function capabilitiesOf(driverType: string): { Scope: 'local'; ConnectivityScope: 'local' | 'global' } {
  return { Scope: 'local', ConnectivityScope: driverType === 'overlay' ? 'global' : 'local' };
}

/** The Docker operations and the kernel modules under them load when first needed, not before the socket. */
let dockerModule: Promise<typeof import('./docker.js')> | undefined;
const docker = () => (dockerModule ??= import('./docker.js'));

/** The logger (pino) loads after the sockets listen too: it alone costs ~90 ms of start-up. */
type Logger = (typeof import('../log.js'))['log'];
const withLog = (fn: (log: Logger) => void) => void import('../log.js').then(({ log }) => fn(log));

export interface PluginOptions {
  /** Where dockerd looks for plugin sockets (fixed at /run/docker/plugins in dockerd). */
  readonly dir?: string;
  /** The socket name of the main plugin (`-d NAME`, `--ipam-driver NAME`). Default "tnet". */
  readonly name?: string;
  /** Plugin name -> tnet driver type. Default { [name]: 'bridge' } (`tnet daemon` passes DAEMON_DRIVERS). */
  readonly drivers?: Readonly<Record<string, string>>;
  /** Group that may use the sockets besides root (e.g. "docker"). Default: root only. */
  readonly group?: string;
  readonly bodyLimit?: number;
  /** Accept tnet bridges in dockerd's DOCKER-USER chain (default true). */
  readonly dockerUser?: boolean;
}

export interface PluginHandle {
  readonly sockets: readonly string[];
  readonly apps: readonly FastifyInstance[];
  close(): Promise<void>;
}

function groupId(name: string): number {
  const line = readFileSync('/etc/group', 'utf8')
    .split('\n')
    .find((l) => l.split(':')[0] === name);
  if (!line) throw conflict(`group "${name}" does not exist`, `group "${name}"`);
  return Number(line.split(':')[2]);
}

/**
 * Starts the Docker plugin sockets for `controller` (or a promise of it: the sockets answer
 * Activate and capability calls before the controller has reconciled). Returns a handle whose
 * close() stops listening and removes the sockets.
 */
export async function startPlugin(controller: Controller | Promise<Controller>, opts: PluginOptions = {}): Promise<PluginHandle> {
  const t0 = performance.now();
  const dir = opts.dir ?? DEFAULT_PLUGIN_DIR;
  const name = opts.name ?? 'tnet';
  const drivers = opts.drivers ?? { [name]: 'bridge' };
  const gid = opts.group === undefined ? undefined : groupId(opts.group);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  const ready = Promise.resolve(controller);
  ready.catch(() => undefined); // each call reports it; no unhandled rejection here

  const backends: { close(): void }[] = [];
  const apps: FastifyInstance[] = [];
  const sockets: string[] = [];
  const early: EarlySocket[] = [];
  let first = true;
  try {
    // 1. Every socket listens and answers activation, within milliseconds of the process start.
    for (const [pluginName, driverType] of Object.entries(drivers)) {
      const withIpam = early.length === 0;
      const e = new EarlySocket({
        'POST /Plugin.Activate': { Implements: withIpam ? ['NetworkDriver', 'IpamDriver'] : ['NetworkDriver'] },
        'POST /NetworkDriver.GetCapabilities': capabilitiesOf(driverType),
        ...(withIpam ? { 'POST /IpamDriver.GetCapabilities': { RequiresMACAddress: false, RequiresRequestReplay: false } } : {}),
      });
      const path = join(dir, `${pluginName}.sock`);
      try {
        await e.listen(path, 0o660, gid);
      } catch (err) {
        throw err instanceof SocketInUse ? conflict(err.message, `socket "${path}"`) : err;
      }
      early.push(e);
      sockets.push(path);
    }
    const answering = Math.round(performance.now() - t0);
    withLog((log) => log.debug({ sockets, ms: answering }, 'docker plugin sockets answering activation'));
    // 2. Then fastify with the schemas, and the Docker operations once the controller is ready.
    const { pluginApp } = await import('./server.js');
    for (const [i, [, driverType]] of Object.entries(drivers).entries()) {
      const e = early[i]!;
      const nets = ready.then(async (c): Promise<NetworkDriverApi> => {
        if (driverType === 'overlay') {
          const { DockerOverlay } = await import('./overlay.js');
          const d = new DockerOverlay(c);
          backends.push(d);
          return d;
        }
        const { DockerNetworks } = await docker();
        const d = new DockerNetworks(c, { driver: driverType, dockerUser: opts.dockerUser });
        backends.push(d);
        return d;
      });
      nets.catch(() => undefined);
      const ipam = first
        ? lazyIpam(docker, ready.then(async (c) => {
            const { DockerIpam } = await docker();
            return new DockerIpam(c);
          }))
        : undefined;
      first = false;
      const app = await pluginApp({ network: lazyNetwork(nets, capabilitiesOf(driverType)), ipam }, { bodyLimit: opts.bodyLimit, serverFactory: (h) => e.attach(h) });
      await app.ready();
      e.release();
      apps.push(app);
      // A plugin restarted while dockerd runs gets no new Activate: refresh DOCKER-USER now.
      void nets.then((d) => d.activated?.()).catch((err) => withLog((log) => log.warn({ err }, 'DOCKER-USER sync at start failed')));
    }
  } catch (err) {
    for (const a of apps) await a.close();
    for (const e of early) await e.close();
    for (const s of sockets) rmSync(s, { force: true });
    throw err;
  }
  const ms = Math.round(performance.now() - t0);
  withLog((log) => log.info({ sockets, ms }, 'docker plugin listening'));
  return {
    sockets,
    apps,
    async close() {
      for (const a of apps) await a.close();
      for (const e of early) await e.close();
      for (const s of sockets) rmSync(s, { force: true });
      for (const b of backends) b.close();
    },
  };
}

/** The NetworkDriver side, waiting for the controller where a call needs it. */
function lazyNetwork(p: Promise<NetworkDriverApi>, caps: ReturnType<NetworkDriverApi['capabilities']>): NetworkDriverApi {
  let ready: NetworkDriverApi | undefined;
  p.then((n) => (ready = n)).catch(() => undefined);
  return {
    capabilities: () => caps,
    // Activate never waits for the controller (dockerd gives up on a slow plugin); once it is
    // ready, the firewall refresh finishes before the answer, so the next Join's traffic passes.
    activated: async () => {
      if (ready) await ready.activated?.();
      else void p.then((n) => n.activated?.()).catch((err) => withLog((log) => log.warn({ err }, 'activation hook failed')));
    },
    createNetwork: async (r) => (await p).createNetwork(r),
    deleteNetwork: async (r) => (await p).deleteNetwork(r),
    createEndpoint: async (r) => (await p).createEndpoint(r),
    endpointOperInfo: async (r) => (await p).endpointOperInfo(r),
    deleteEndpoint: async (r) => (await p).deleteEndpoint(r),
    join: async (r) => (await p).join(r),
    leave: async (r) => (await p).leave(r),
    programExternalConnectivity: async (r) => (await p).programExternalConnectivity(r),
    revokeExternalConnectivity: async (r) => (await p).revokeExternalConnectivity(r),
  };
}

function lazyIpam(docker: () => Promise<typeof import('./docker.js')>, p: Promise<IpamDriverApi>): IpamDriverApi {
  p.catch(() => undefined);
  return {
    capabilities: () => ({ RequiresMACAddress: false, RequiresRequestReplay: false }),
    defaultAddressSpaces: async () => {
      const d = await docker();
      return { LocalDefaultAddressSpace: d.LOCAL_ADDRESS_SPACE, GlobalDefaultAddressSpace: d.GLOBAL_ADDRESS_SPACE };
    },
    requestPool: async (r) => (await p).requestPool(r),
    releasePool: async (r) => (await p).releasePool(r),
    requestAddress: async (r) => (await p).requestAddress(r),
    releaseAddress: async (r) => (await p).releaseAddress(r),
  };
}
