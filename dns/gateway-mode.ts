import { invalid } from '../libnetwork/errors.js';

/**
 * Which networks' gateway addresses the DNS service listens on, port 53 in the daemon's namespace
 * (what `docker run --dns <gateway>` reaches): none (the default), Docker networks, or every
 * network. Its own module, free of kernel code, so the daemon can check its setting before it
 * starts anything.
 */
export type GatewayMode = 'docker' | 'all' | 'none';
export const GATEWAY_MODES: readonly GatewayMode[] = ['none', 'docker', 'all'];
export const DEFAULT_GATEWAY_MODE: GatewayMode = 'none';

/**
 * A gateway mode as a person types it (TNET_DNS_GATEWAYS, a daemon flag): none, docker or all,
 * in any case, blanks around it ignored. Anything else throws, naming the choices.
 */
export function parseGatewayMode(text: string): GatewayMode {
  const v = text.trim().toLowerCase();
  if ((GATEWAY_MODES as readonly string[]).includes(v)) return v as GatewayMode;
  throw invalid(`"${text}" is not a DNS gateway mode; use one of ${GATEWAY_MODES.join(', ')}`, 'dns gateways');
}

/**
 * A process's gateway mode: the one it was given (a command-line flag), else TNET_DNS_GATEWAYS,
 * else none. A bad value throws, naming where it came from.
 */
export function gatewayModeFrom(given: string | undefined, env: NodeJS.ProcessEnv = process.env): GatewayMode {
  if (given !== undefined) return parseGatewayMode(given);
  const v = env.TNET_DNS_GATEWAYS;
  if (v === undefined || v.trim() === '') return DEFAULT_GATEWAY_MODE;
  try {
    return parseGatewayMode(v);
  } catch (e) {
    throw invalid(`TNET_DNS_GATEWAYS: ${(e as Error).message}`, 'dns gateways');
  }
}
