import { writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/**
 * `tnet daemon`: the control socket answers first (a ping within milliseconds of start), then the
 * controller opens the state and reconciles; requests that need it wait for that.
 */
export async function runDaemon(opts: { stateDir: string; socket: string }): Promise<void> {
  const t0 = performance.now();
  const { controlServer, listenUnix } = await import('../libnetwork/api/server.js');
  const { log } = await import('../libnetwork/log.js');
  let resolveReady!: (c: import('../libnetwork/controller.js').Controller) => void;
  let rejectReady!: (e: unknown) => void;
  const ready = new Promise<import('../libnetwork/controller.js').Controller>((res, rej) => {
    resolveReady = res;
    rejectReady = rej;
  });
  const app = await controlServer(ready);
  await listenUnix(app, opts.socket);
  const pidFile = join(opts.stateDir, 'daemon.pid');
  log.info({ socket: opts.socket, ms: Math.round(performance.now() - t0) }, 'control socket listening');
  try {
    const { Controller } = await import('../libnetwork/controller.js');
    const c = await Controller.open({ stateDir: opts.stateDir });
    writeFileSync(pidFile, `${process.pid}\n`);
    resolveReady(c);
    log.info({ ms: Math.round(performance.now() - t0) }, 'ready');
    const stop = async (signal: string) => {
      log.info({ signal }, 'stopping');
      await app.close();
      c.close();
      rmSync(pidFile, { force: true });
      process.exit(0);
    };
    process.once('SIGTERM', () => void stop('SIGTERM'));
    process.once('SIGINT', () => void stop('SIGINT'));
  } catch (e) {
    log.fatal({ err: e }, 'could not open the state and reconcile');
    rejectReady(e);
    await app.close();
    process.exit(1);
  }
}
