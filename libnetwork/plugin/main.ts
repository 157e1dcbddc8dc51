/**
 * The Docker plugin on its own: `node dist/libnetwork/plugin/main.js [--state-dir DIR]
 * [--plugin-dir DIR] [--name NAME]`. Opens the state, reconciles, serves the plugin sockets until
 * SIGTERM/SIGINT. `tnet daemon` serves the same sockets next to its control API; this entry is for
 * hosts that want only the plugin, and for the e2e tests' kill -9 cases.
 */
import { type GatewayMode, gatewayModeFrom } from '../../dns/gateway-mode.js';
import type { DnsService } from '../../dns/service.js';
import type { Controller } from '../controller.js';
import { startPlugin } from './index.js';

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const t0 = performance.now();
// Gateway DNS listeners as the daemon's (TNET_DNS_GATEWAYS, default none): checked before anything starts.
let gateways: GatewayMode;
try {
  gateways = gatewayModeFrom(undefined);
} catch (e) {
  process.stderr.write(`tnet plugin: ${(e as Error).message}\n`);
  process.exit(2);
}
// The socket first (dockerd may be waiting), then the controller and the kernel modules.
let openController!: (c: Promise<Controller>) => void;
const ready = new Promise<Controller>((res) => (openController = res));
const plugin = await startPlugin(ready, { dir: arg('plugin-dir'), name: arg('name') });
const { log } = await import('../log.js');
let dns: DnsService | undefined;
openController(
  (async () => {
    const { Controller } = await import('../controller.js');
    const opened = await Controller.open({ stateDir: arg('state-dir'), scope: '' });
    // Before any Docker call sees the controller, so the DNS service misses no network. Docker
    // networks only: a tnet daemon next to this process serves the lab sandboxes' 127.0.0.11.
    const { startDnsService } = await import('../../dns/service.js');
    dns = await startDnsService(opened, { sandboxes: false, gateways }).catch((e: unknown) => {
      log.error({ err: e }, 'DNS is not served by this plugin');
      return undefined;
    });
    return opened;
  })(),
);
let c: Controller;
try {
  c = await ready;
} catch (e) {
  log.fatal({ err: e }, 'could not open the state and reconcile');
  await plugin.close();
  process.exit(1);
}
log.info({ ms: Math.round(performance.now() - t0), sockets: plugin.sockets }, 'plugin ready');
const stop = async (signal: string) => {
  log.info({ signal }, 'stopping');
  await plugin.close();
  await dns?.close();
  c.close();
  process.exit(0);
};
process.once('SIGTERM', () => void stop('SIGTERM'));
process.once('SIGINT', () => void stop('SIGINT'));
