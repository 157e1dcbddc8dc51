/**
 * tnet's embedded DNS. The engine (server.ts) is driven by calls (records and scopes) and handed
 * sockets; it never reads the store. The service (service.ts) ties it to a Controller: it loads the
 * records, follows the controller's events, and decides where it listens (127.0.0.11:53 inside
 * every lab sandbox; the gateway address of each Docker network only when asked, since that takes
 * the host's port 53; the reasons are written there).
 */
export { DnsServer, DEFAULT_TTL, DEFAULT_NEGATIVE_TTL } from './server.js';
export type { DnsServerOptions, DnsStats, ListenerHandle, ListenerOptions, Scope } from './server.js';
export type { EndpointSpec, NetworkSpec } from './records.js';
export { hostUpstreams, parseUpstream, type Upstream } from './forwarder.js';
export {
  startDnsService, sandboxResolvConf, parseGatewayMode, gatewayModeFrom, SANDBOX_DNS_ADDRESS, DNS_PORT, GATEWAY_MODES,
  type DnsService, type DnsServiceOptions, type GatewayMode, type ListenerStatus,
} from './service.js';
export { readResolvConf, type ResolvConf } from './resolvconf.js';
