/**
 * tnet's embedded DNS engine. The controller drives it by calls (records and scopes) and hands it
 * sockets; it never reads the store.
 *
 * Where it listens (decided here, wired by the controller): both places, because each kind of
 * client can reach only one of them.
 *  - 127.0.0.11:53 inside every sandbox tnet creates (lab nodes, `tnet exec`), with
 *    `/etc/netns/NAME/resolv.conf` saying `nameserver 127.0.0.11`. The sockets are created inside the
 *    namespace and passed by fd (`addListener({ udpFd, tcpFd }, { sandboxId })`), so it works for
 *    nodes that have only point-to-point links and no gateway, needs no DNAT (tnet owns those
 *    namespaces, port 53 is free there) and knows who asks without looking at addresses.
 *  - the gateway address of each network, port 53, in the host namespace
 *    (`addListener({ host: gateway, port: 53 }, { networkId })`), for Docker containers: dockerd
 *    writes their resolv.conf and runs its own 127.0.0.11, which forwards names it does not know to
 *    the container's `--dns` servers: `--dns <gateway>` points it at tnet. Clients are scoped by
 *    source address and strangers are REFUSED (see server.ts).
 * One process serves all listeners; an answer costs the same on either.
 */
export { DnsServer, DEFAULT_TTL, DEFAULT_NEGATIVE_TTL } from './server.js';
export type { DnsServerOptions, DnsStats, ListenerHandle, ListenerOptions, Scope } from './server.js';
export type { EndpointSpec, NetworkSpec } from './records.js';
export { hostUpstreams, parseUpstream, type Upstream } from './forwarder.js';
