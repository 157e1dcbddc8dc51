import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { DnsService } from '../dns/service.js';
import type { FastifyInstance } from 'fastify';
import type { Controller } from '../libnetwork/controller.js';
import type { PluginHandle } from '../libnetwork/plugin/index.js';
import { EarlySocket, SocketInUse } from '../libnetwork/early-socket.js';
import { type GatewayMode, gatewayModeFrom } from '../dns/gateway-mode.js';

export interface DaemonOptions {
  readonly stateDir: string;
  /** The control API's socket (the `tnet` command's). */
  readonly socket: string;
  /** Where the Docker plugin sockets go (default /run/docker/plugins); undefined with dockerPlugin false. */
  readonly pluginDir?: string;
  /** Serve Docker's remote plugin protocol too (default true). */
  readonly dockerPlugin?: boolean;
  /** Where the DNS service forwards names it does not know (default: the host's resolv.conf). */
  readonly dnsUpstreams?: readonly string[];
  /**
   * `--dns-gateways`, as typed: which networks get a DNS listener on their gateway address, port 53
   * (for `docker run --dns <gateway>`): none, docker or all. Default: $TNET_DNS_GATEWAYS, else none,
   * because that listener takes port 53 from everyone who publishes it (`-p 53` binds every host
   * address).
   */
  readonly dnsGateways?: string;
  /** An empty state next to what an earlier daemon of this state directory made: remove those objects (else refuse to start). */
  readonly removeOrphans?: boolean;
  /** The global store this host shares with the others (overlay networks); none: a host of its own. */
  readonly store?: StoreOptions;
}

/** `--store` and its companions, as typed (the URL checked already). */
export interface StoreOptions {
  readonly url: string;
  readonly ca?: string;
  readonly cert?: string;
  readonly key?: string;
  /** Lease TTL, seconds: how long after this host dies its endpoints are withdrawn elsewhere. */
  readonly ttl?: number;
  /** `--advertise-addr`: IP or interface name; default the source address towards the store. */
  readonly advertise?: string;
}

/**
 * `tnet daemon`, in the order its clients need it:
 *  1. the control socket answers /ping (the CLI's "is it up?") within milliseconds of the start,
 *     from a plain node:http server, before fastify, pino or the kernel modules have loaded;
 *  2. the Docker plugin sockets answer Activate (dockerd gives up on a plugin after ~15 s);
 *  3. fastify takes both over, the controller opens the state and reconciles, the DNS service
 *     starts (127.0.0.11 in every lab sandbox; Docker networks' gateways only with dnsGateways);
 *     requests that need the controller wait for all of it.
 * Bad settings stop it before anything starts (exit 2, like a bad --dns-upstream).
 */
export async function runDaemon(opts: DaemonOptions): Promise<void> {
  const t0 = performance.now();
  let gateways: GatewayMode;
  try {
    gateways = gatewayModeFrom(opts.dnsGateways);
  } catch (e) {
    process.stderr.write(`tnet daemon: ${opts.dnsGateways !== undefined ? '--dns-gateways: ' : ''}${(e as Error).message}\n`);
    process.exit(2);
  }
  let controller: Controller | undefined;
  let openController!: (c: Promise<Controller>) => void;
  const ready = new Promise<Controller>((res) => (openController = res));
  ready.catch(() => undefined); // reported below; requests waiting on it get the error

  const control = new EarlySocket({ 'GET /ping': () => ({ ok: true, ready: controller !== undefined, pid: process.pid }) });
  try {
    await control.listen(opts.socket, 0o600);
  } catch (e) {
    process.stderr.write(`tnet daemon: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(e instanceof SocketInUse ? 4 : 1);
  }
  const pingMs = Math.round(performance.now() - t0);

  // What is running so far; a signal at any point of the start stops exactly that, so no socket
  // file is left behind by a daemon stopped while it was still starting.
  let plugin: Promise<PluginHandle | undefined> | undefined;
  let app: FastifyInstance | undefined;
  let dns: DnsService | undefined;
  let cluster: ClusterLink | undefined;
  let stateLock: { release(): void } | undefined;
  const pidFile = join(opts.stateDir, 'daemon.pid');
  const stop = async (code: number, why: string) => {
    (await import('../libnetwork/log.js')).log.info({ why }, 'stopping');
    await (await plugin)?.close(); // a plugin still starting has listened already: wait, then close it
    await app?.close();
    await control.close();
    await dns?.close();
    await cluster?.close();
    controller?.close();
    rmSync(pidFile, { force: true });
    stateLock?.release();
    process.exit(code);
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => void stop(0, signal));

  // One daemon per state directory, before anything else starts: a second one (another --socket)
  // would reconcile against the same state and remove what the first made. Taken after the
  // socket (a second daemon on the same socket is told that first; /ping does not wait for the
  // FFI this loads); a refused daemon closes its socket again, which removes the file, and
  // leaves the holder's pid file alone.
  try {
    stateLock = (await import('../libnetwork/store/lock.js')).lockStateDir(opts.stateDir);
  } catch (e) {
    await control.close();
    process.stderr.write(`tnet daemon: ${(e as Error).message}\n`);
    process.exit(4);
  }

  plugin = opts.dockerPlugin === false ? undefined : startDockerPlugin(ready, opts.pluginDir);
  const pluginSockets = (await plugin)?.sockets;
  const { log } = await import('../libnetwork/log.js');
  log.info({ socket: opts.socket, ms: pingMs }, 'control socket listening');
  const { controlServer } = await import('../libnetwork/api/server.js');
  app = await controlServer(ready, { serverFactory: (h) => control.attach(h) });
  await app.ready();
  control.release();

  openController(
    (async () => {
      const { Controller } = await import('../libnetwork/controller.js');
      const vtep = opts.store ? await chooseVtep(opts.store) : undefined;
      // The host's own instance: its namespaces and nft table carry no scope (tn-NAME, inet tnet).
      const c = await Controller.open({ stateDir: opts.stateDir, scope: '', orphans: opts.removeOrphans ? 'remove' : 'refuse', vtep });
      // Before any request sees the controller, so the DNS service misses no sandbox or network.
      const { startDnsService } = await import('../dns/service.js');
      dns = await startDnsService(c, { upstreams: opts.dnsUpstreams?.length ? [...opts.dnsUpstreams] : undefined, gateways }).catch((e: unknown) => {
        log.error({ err: e }, 'DNS is not served by this daemon');
        return undefined;
      });
      if (dns) {
        const served = dns;
        c.reportDnsListeners(() => served.status()); // `tnet doctor` checks them
      }
      // The cluster is joined before the first request when the store answers; otherwise the
      // daemon serves everything local and keeps trying (global operations say why they wait).
      if (opts.store) cluster = await joinCluster(c, opts.store, (code, why) => void stop(code, why));
      return c;
    })(),
  );
  try {
    controller = await ready;
  } catch (e) {
    log.fatal({ err: e }, 'could not open the state and reconcile');
    process.stderr.write(`tnet daemon: ${e instanceof Error ? e.message : String(e)}\n`);
    const code = (e as { code?: string }).code;
    await stop(code === 'conflict' ? 4 : code === 'invalid-argument' ? 2 : 1, 'start failed');
  }
  writeFileSync(pidFile, `${process.pid}\n`);
  log.info({ ms: Math.round(performance.now() - t0), plugin: pluginSockets }, 'ready');
}

/**
 * The Docker plugin sockets. Another process already serving them (e.g. the standalone plugin,
 * libnetwork/plugin/main.ts) is not fatal: the control API still works, and the log says why
 * Docker is not served from here.
 */
async function startDockerPlugin(ready: Promise<Controller>, dir: string | undefined) {
  const { DAEMON_DRIVERS, startPlugin } = await import('../libnetwork/plugin/index.js');
  try {
    return await startPlugin(ready, { dir, drivers: DAEMON_DRIVERS });
  } catch (e) {
    const { log } = await import('../libnetwork/log.js');
    log.error({ err: e }, 'the Docker plugin sockets are not served by this daemon');
    return undefined;
  }
}

/** The VTEP (`--advertise-addr`, else the source towards the store); a bad one stops the start (exit 2). */
async function chooseVtep(store: StoreOptions) {
  const [{ resolveVtep }, { parseStoreUrl }, { Rtnl }] = await Promise.all([
    import('../libnetwork/vtep.js'), import('../libnetwork/store/etcd.js'), import('../libnetwork/kernel/index.js'),
  ]);
  const rtnl = Rtnl.open();
  try {
    return await resolveVtep(rtnl, store.advertise, parseStoreUrl(store.url).hosts[0]!);
  } finally {
    rtnl.close();
  }
}

interface ClusterLink {
  close(): Promise<void>;
}

/** How often an unreachable store is tried again. */
const STORE_RETRY_MS = 2000;

/**
 * Opens the global store and joins its cluster; while the store cannot be reached, tries again
 * every STORE_RETRY_MS in the background. A refusal that retrying cannot fix (another host
 * advertises this VTEP, the TLS files are wrong) stops the daemon: exit 4 or 2.
 */
async function joinCluster(c: Controller, store: StoreOptions, fatal: (code: number, why: string) => void): Promise<ClusterLink> {
  const { EtcdGlobalStore } = await import('../libnetwork/store/etcd.js');
  const { log } = await import('../libnetwork/log.js');
  let opened: { close(opts?: { revoke?: boolean }): Promise<void> } | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const attempt = async (): Promise<boolean> => {
    try {
      const s = await EtcdGlobalStore.open({ url: store.url, ca: store.ca, cert: store.cert, key: store.key, ttl: store.ttl });
      opened = s;
      if (stopped) return true;
      s.onStoreEvent((e) => {
        if (e.type === 'unavailable') log.warn({ err: e.error.message }, 'the global store is unreachable: overlay traffic flows on, changes wait');
        else if (e.type === 'available') log.info('the global store is reachable again');
        else if (e.type === 'lease-lost') log.warn({ lease: e.lease }, 'this host\'s lease expired: its endpoints were withdrawn elsewhere; publishing them again');
        else if (e.type === 'lease-renewed' && e.conflicts.length) log.error({ conflicts: e.conflicts }, 'records another host took while this one was away');
      });
      await c.joinCluster(s);
      log.info({ store: s.endpoint, vtep: c.cluster?.vtep, host: c.cluster?.host }, 'joined the cluster');
      return true;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'unavailable') {
        log.error({ err: (e as Error).message }, `the global store cannot be reached; trying again every ${STORE_RETRY_MS / 1000} s (local networks work meanwhile)`);
        await opened?.close({ revoke: false }).catch(() => undefined);
        opened = undefined;
        return false;
      }
      process.stderr.write(`tnet daemon: ${(e as Error).message}\n`);
      log.fatal({ err: e }, 'cannot join the cluster');
      fatal(code === 'conflict' ? 4 : code === 'invalid-argument' ? 2 : 1, 'cluster refused');
      return true;
    }
  };
  const retry = () => {
    timer = setTimeout(() => {
      void attempt().then((done) => {
        if (!done && !stopped) retry();
      });
    }, STORE_RETRY_MS);
  };
  if (!(await attempt())) retry();
  return {
    close: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await c.leaveCluster();
      // The lease is left to expire rather than revoked: a daemon restarted within the TTL takes
      // its records over, and the other hosts never see its endpoints go.
      await opened?.close({ revoke: false });
    },
  };
}
