import { statSync } from 'node:fs';
import { basename } from 'node:path';
import type { Controller } from '../libnetwork/controller.js';
import { Netns, isErrno, socketBindPair } from '../libnetwork/kernel/index.js';
import { log as rootLog, type Logger } from '../libnetwork/log.js';
import type { Endpoint, Network, Sandbox } from '../libnetwork/model.js';
import type { Peer } from '../libnetwork/cluster.js';
import { IpAddr } from '../libnetwork/ipam/address.js';
import { invalid } from '../libnetwork/errors.js';
import { DEFAULT_GATEWAY_MODE, type GatewayMode } from './gateway-mode.js';
import { normalizeName } from './records.js';
import { labRecords } from './lab-records.js';
import type { LabPlan } from '../libnetwork/lab/plan.js';
import { readResolvConf } from './resolvconf.js';
import { DnsServer, type DnsServerOptions, type ListenerHandle } from './server.js';

/**
 * The DNS service of a tnet process: one DnsServer fed by the controller and the listeners it
 * serves. It reads the controller once at start (every network, sandbox and endpoint), then follows
 * its events, so a join, leave or delete shows in the very next answer.
 *
 * Where it listens, decided here:
 *
 * 1. 127.0.0.11:53 (UDP and TCP) inside every lab sandbox's namespace, scoped to that sandbox,
 *    with `/etc/netns/tn-NAME/resolv.conf` saying `nameserver 127.0.0.11`. Why:
 *    - it needs no route: a lab node with only a point-to-point link and no gateway reaches its own
 *      loopback, and a gateway address may not exist at all (networks without one, internal ones);
 *    - it knows who asks without looking at source addresses: everything on that socket comes from
 *      that sandbox, whatever its addresses are (overlapping subnets, addresses added by hand);
 *    - it cannot be reached from anywhere else, so it is never an open resolver;
 *    - it is what Docker users already know (libnetwork's resolver), and resolv.conf stays valid
 *      whatever networks the sandbox joins or leaves.
 *    The sockets are created inside the namespace (kernel/socket.ts, a few microseconds, no
 *    process) and served by this process by fd, so one event loop answers every sandbox and the
 *    forwards go out from the daemon's namespace (a sandbox without a way out still gets answers
 *    for external names). No DNAT as libnetwork does: tnet owns these namespaces, :53 is free in
 *    them, and DNAT to 127.0.0.11 is what breaks on nftables-only hosts (libnetwork#1085). A
 *    sandbox whose 127.0.0.11:53 is already taken gets a logged error and no listener (tried again
 *    when it next joins a network); nothing else is affected.
 *
 * 2. Only when asked (`gateways: 'docker'` or `'all'`; the daemon's TNET_DNS_GATEWAYS): the
 *    gateway address of each Docker network (or of every network), port 53, in the daemon's
 *    namespace, scoped to that network. Docker containers do not use resolv.conf files tnet
 *    writes: dockerd writes theirs and runs its own 127.0.0.11, which answers container names on
 *    plugin networks and forwards everything else to the container's `--dns` servers, from inside
 *    the container. So `--dns <gateway>` makes tnet the container's upstream: names tnet knows on
 *    that network, PTR for its addresses, and the host's resolvers with tnet's timeouts and
 *    failover. Such a listener answers only source addresses inside the network's subnets (anyone
 *    else: REFUSED).
 *    Off by default, because a socket on port 53 of any host address takes port 53 from the
 *    user: a wildcard bind (docker-proxy's 0.0.0.0:53 for `-p 53`, tnet's own port probe) fails
 *    with EADDRINUSE next to it, whatever SO_REUSEADDR it has (docker-proxy's UDP socket sets
 *    none; a listening TCP socket blocks even sockets that set it). pihole, CoreDNS and dnsmasq
 *    containers publish 53, and a host resolver bound on a Docker gateway is common; Docker's
 *    own bridge listens on no gateway. The service is useful only to containers started with
 *    `--dns <gateway>`, so whoever wants that turns it on, knowing it holds the port.
 */

export { DEFAULT_GATEWAY_MODE, GATEWAY_MODES, gatewayModeFrom, parseGatewayMode, type GatewayMode } from './gateway-mode.js';

export interface DnsServiceOptions {
  /** Upstream resolvers ("1.2.3.4", "1.2.3.4:5353"); default: the nameservers of `resolvConf`. */
  upstreams?: string[];
  /** The host's resolv.conf: upstreams (unless given) and the search domains sandboxes get. Default /etc/resolv.conf. */
  resolvConf?: string;
  logger?: Logger;
  /**
   * Which networks get a listener on their gateway address, port 53 (for `--dns <gateway>`): none
   * (default: the host's port 53 stays the user's), Docker ones, or all.
   */
  gateways?: GatewayMode;
  /**
   * The port of the gateway listeners (default 53). 0: a free port the kernel picks per listener
   * (the same for UDP and TCP; `status()` shows it), so that no listener holds port 53: for a
   * host whose firewall DNATs gateway:53 to it, as libnetwork does for its 127.0.0.11 resolver
   * (the rules: test/integration/dns.test.ts, "gatewayPort").
   */
  gatewayPort?: number;
  /**
   * Listen in lab sandboxes and write their resolv.conf (default true). false: for a process that
   * serves only Docker (the standalone plugin) next to a `tnet daemon` that serves the labs; two
   * processes cannot both hold 127.0.0.11:53 in one sandbox.
   */
  sandboxes?: boolean;
  /** The rest of the server's knobs (timeouts, TTLs, limits). */
  server?: Omit<DnsServerOptions, 'upstreams' | 'resolvConf' | 'logger'>;
}

export interface ListenerStatus {
  /** Sandbox or network name. */
  name: string;
  /** Where: "127.0.0.11:53 in netns tn-a", "10.1.0.1:53". */
  address: string;
  listening: boolean;
  /** Why it is not listening. */
  error?: string;
  /** The port it listens on (a gateway listener on port 0 shows the port it got). */
  port?: number;
}

export interface DnsService {
  readonly server: DnsServer;
  /** Sandbox listeners by sandbox ID, gateway listeners by network ID (one entry per address). */
  status(): { sandboxes: Record<string, ListenerStatus>; gateways: Record<string, ListenerStatus[]> };
  /** Resolves once every listener started or stopped so far is up or down. */
  settled(): Promise<void>;
  /** Stop following the controller and close every listener. */
  close(): Promise<void>;
}

/** libnetwork's address, inside every sandbox. */
export const SANDBOX_DNS_ADDRESS = '127.0.0.11';
export const DNS_PORT = 53;

interface Slot {
  status: ListenerStatus;
  handle?: ListenerHandle;
  /** The start in progress (the fds exist; Node is adopting them). */
  starting?: Promise<void>;
  closed: boolean;
  /** A listener inside a namespace a driver made (a global network's DNS port): its inode, to see it remade. */
  nsInode?: number;
}

/** A file's inode, or undefined when it is not there. */
function inodeOf(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

/** What a lab sandbox's resolv.conf says. */
export function sandboxResolvConf(search: readonly string[]): string {
  return [
    '# Written by tnet: its DNS answers inside this sandbox on 127.0.0.11 (peers by name, the host\'s resolvers for the rest).',
    `nameserver ${SANDBOX_DNS_ADDRESS}`,
    ...(search.length ? [`search ${search.join(' ')}`] : []),
    // A dotted name is first asked as it is, not with the search domains appended (libnetwork does the same).
    'options ndots:0',
    '',
  ].join('\n');
}

export async function startDnsService(controller: Controller, opts: DnsServiceOptions = {}): Promise<DnsService> {
  const log = opts.logger ?? rootLog.child({ module: 'dns' });
  const server = new DnsServer({ ...opts.server, upstreams: opts.upstreams, resolvConf: opts.resolvConf, logger: log });
  const gateways: GatewayMode = opts.gateways ?? DEFAULT_GATEWAY_MODE;
  const gatewayPort = opts.gatewayPort ?? DNS_PORT;
  if (!Number.isInteger(gatewayPort) || gatewayPort < 0 || gatewayPort > 65535)
    throw invalid(`DNS gateway port ${gatewayPort} is not in 0-65535`, 'dns gateway port');
  const resolvConf = sandboxResolvConf(readResolvConf(opts.resolvConf).search);
  const sandboxes = new Map<string, Slot>();
  const gatewaySlots = new Map<string, Slot[]>();
  /** Sandbox ID -> the networks it has endpoints on (its scope). */
  const scopes = new Map<string, Set<string>>();
  const inflight = new Set<Promise<void>>();
  let closed = false;

  const track = (p: Promise<void>) => {
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
    return p;
  };

  // ---------------------------------------------------------------- records

  const setNetwork = (net: Network) => {
    const subnets = [net.ipv4?.subnet, net.ipv6?.subnet].filter((s) => s !== undefined).map(String);
    server.setNetwork({ networkId: net.id, name: net.name, internal: net.internal, subnets });
  };

  const setEndpoint = (ep: Pick<Endpoint, 'id' | 'name' | 'aliases' | 'ipv4' | 'ipv6' | 'sandboxId'>, net: Network) => {
    const names: string[] = [];
    for (const n of [ep.name, ...ep.aliases]) {
      try {
        names.push(normalizeName(n, 'name'));
      } catch {
        // A sandbox name may be a valid tnet name and no DNS name ("a..b"): it just has no record.
        log.warn({ endpoint: ep.id, name: n }, `dns: "${n}" is not a valid DNS name; it does not resolve`);
      }
    }
    server.setEndpoint({
      endpointId: ep.id,
      networkId: net.id,
      networkName: net.name,
      names,
      ipv4: ep.ipv4?.toString(),
      ipv6: ep.ipv6?.toString(),
      sandboxId: ep.sandboxId,
    });
    if (ep.sandboxId !== undefined) {
      let s = scopes.get(ep.sandboxId);
      if (!s) scopes.set(ep.sandboxId, (s = new Set()));
      s.add(net.id);
      server.setSandboxNetworks(ep.sandboxId, [...s]);
    }
  };

  const removeEndpoint = (ep: Endpoint) => {
    server.removeEndpoint(ep.id);
    if (ep.sandboxId !== undefined) {
      const s = scopes.get(ep.sandboxId);
      if (s?.delete(ep.networkId)) server.setSandboxNetworks(ep.sandboxId, [...s]);
    }
  };

  // ---------------------------------------------------------------- listeners

  const start = (slot: Slot, open: () => Promise<ListenerHandle>) => {
    slot.starting = track(
      open().then(
        async (h) => {
          if (slot.closed || closed) {
            await h.close();
            return;
          }
          slot.handle = h;
          slot.status.listening = true;
          delete slot.status.error;
          const port = h.udp?.port ?? h.tcp?.port;
          if (port !== undefined && port !== slot.status.port) {
            slot.status.address = slot.status.address.replace(/:\d+( in .*)?$/, (_m, rest: string | undefined) => `:${port}${rest ?? ''}`);
            slot.status.port = port;
          }
        },
        (e: unknown) => {
          slot.status.error = (e as Error).message;
          log.error({ err: (e as Error).message, listener: slot.status.address }, `dns: cannot serve ${slot.status.address}: ${(e as Error).message}`);
        },
      ),
    );
  };

  const stop = (slot: Slot) => {
    slot.closed = true;
    slot.status.listening = false;
    void track((async () => {
      await slot.starting;
      await slot.handle?.close();
      slot.handle = undefined;
    })());
  };

  /** A lab sandbox's listener on 127.0.0.11:53 inside its namespace (a no-op when it has one). */
  const sandboxUp = (sb: Sandbox) => {
    if (sb.kind !== 'lab' || closed || opts.sandboxes === false) return;
    const old = sandboxes.get(sb.id);
    if (old && !old.closed && (old.handle || (old.starting && !old.status.error))) return;
    // named as `ip netns` knows it (errors then say "netns tn-a"), unless it lives elsewhere
    const named = Netns.named(basename(sb.netns));
    const ns = named.path === sb.netns ? named : Netns.atPath(sb.netns);
    const slot: Slot = {
      status: { name: sb.name, address: `${SANDBOX_DNS_ADDRESS}:${DNS_PORT} in ${String(ns)}`, listening: false, port: DNS_PORT },
      closed: false,
    };
    sandboxes.set(sb.id, slot);
    let fds: { udp: number; tcp: number };
    try {
      fds = socketBindPair(ns, SANDBOX_DNS_ADDRESS, DNS_PORT);
    } catch (e) {
      const taken = isErrno(e, 'EADDRINUSE');
      slot.status.error = (e as Error).message;
      log.error(
        { sandbox: sb.name, err: (e as Error).message },
        taken
          ? `dns: sandbox "${sb.name}" has something else on ${SANDBOX_DNS_ADDRESS}:${DNS_PORT} (${(e as Error).message}); tnet's DNS does not answer there until it is free and the sandbox next joins a network`
          : `dns: cannot listen in sandbox "${sb.name}": ${(e as Error).message}`,
      );
      return;
    }
    // From here Node owns the fds (it closes them with the listener, or when adopting them fails).
    start(slot, () => server.addListener({ udpFd: fds.udp, tcpFd: fds.tcp, family: 4 }, { sandboxId: sb.id }));
    try {
      controller.writeResolvConf(sb, resolvConf);
    } catch (e) {
      log.error({ sandbox: sb.name, err: (e as Error).message }, `dns: cannot write the resolv.conf of sandbox "${sb.name}"`);
    }
  };

  const sandboxDown = (sb: Sandbox) => {
    const slot = sandboxes.get(sb.id);
    sandboxes.delete(sb.id);
    if (slot) stop(slot);
    scopes.delete(sb.id);
    server.removeSandbox(sb.id);
  };

  const wantsGateway = (net: Network) => gateways === 'all' || (gateways === 'docker' && net.owner === 'docker');

  /**
   * A global network's DNS address on this host (details `dns_address` in `dns_netns`, made by
   * its driver): the port 53 an engine's containers are pointed at (Docker's `--dns`), scoped to
   * the network, so they resolve the other hosts' endpoints too.
   */
  const networkDnsSlot = (net: Network): Slot | undefined => {
    const d = controller.networkDetails?.(net) ?? {};
    if (!d['dns_address'] || !d['dns_netns'] || opts.sandboxes === false) return undefined;
    const ns = Netns.named(d['dns_netns']);
    const slot: Slot = {
      status: { name: net.name, address: `${d['dns_address']}:${DNS_PORT} in ${String(ns)}`, listening: false, port: DNS_PORT }, closed: false,
      nsInode: inodeOf(ns.path),
    };
    let fds: { udp: number; tcp: number };
    try {
      fds = socketBindPair(ns, d['dns_address'], DNS_PORT);
    } catch (e) {
      slot.status.error = (e as Error).message;
      log.error({ network: net.name, err: (e as Error).message }, `dns: cannot serve ${slot.status.address}: ${(e as Error).message}`);
      return slot;
    }
    start(slot, () => server.addListener({ udpFd: fds.udp, tcpFd: fds.tcp, family: 4 }, { networkId: net.id }));
    return slot;
  };

  const networkUp = (net: Network) => {
    setNetwork(net);
    const had = gatewaySlots.get(net.id);
    // A DNS port its driver made again (a repair): the old listener serves a namespace that is gone.
    const stale = had?.find((x) => x.nsInode !== undefined);
    if (stale && !closed && stale.nsInode !== inodeOf(Netns.named(controller.networkDetails?.(net)?.['dns_netns'] ?? '').path)) {
      stop(stale);
      const fresh = networkDnsSlot(net);
      gatewaySlots.set(net.id, [...had!.filter((x) => x !== stale), ...(fresh ? [fresh] : [])]);
      return;
    }
    if (had || closed) return;
    const slots: Slot[] = [];
    const dnsSlot = networkDnsSlot(net);
    if (dnsSlot) slots.push(dnsSlot);
    if (wantsGateway(net)) {
      for (const gw of [net.ipv4?.gateway, net.ipv6?.gateway]) {
        if (!gw) continue;
        const host = gw.toString();
        const slot: Slot = {
          status: { name: net.name, address: `${host.includes(':') ? `[${host}]` : host}:${gatewayPort}`, listening: false, port: gatewayPort },
          closed: false,
        };
        slots.push(slot);
        start(slot, () => server.addListener({ host, port: gatewayPort }, { networkId: net.id }));
      }
    }
    if (slots.length) gatewaySlots.set(net.id, slots);
  };

  const networkDown = (net: Network) => {
    for (const s of gatewaySlots.get(net.id) ?? []) stop(s);
    gatewaySlots.delete(net.id);
    server.removeNetwork(net.id);
  };

  // ---------------------------------------------------------------- events

  /** A handler must never throw into the controller (it emits inside its operations). */
  const safe =
    <A extends unknown[]>(what: string, fn: (...a: A) => void) =>
    (...a: A) => {
      try {
        fn(...a);
      } catch (e) {
        log.error({ err: (e as Error).stack }, `dns: failed to follow ${what}`);
      }
    };

  const onNetwork = safe('a network change', (change: 'up' | 'down', net: Network) => {
    if (change === 'up') networkUp(net);
    else networkDown(net);
  });
  const onSandbox = safe('a sandbox change', (change: 'up' | 'down', sb: Sandbox) => {
    if (change === 'up') sandboxUp(sb);
    else sandboxDown(sb);
  });
  // A lab's names (dns/lab-records.ts): NODE and NODE.LAB inside its nodes, PTR for their addresses.
  const labs = labRecords(server, scopes, (sb) => server.setSandboxNetworks(sb, [...(scopes.get(sb) ?? [])]));
  const onLab = safe('a lab change', (change: 'up' | 'down', name: string, plan: LabPlan | undefined, sandboxOf: (node: string) => string | undefined) => {
    if (change === 'up' && plan?.nodes) labs.up(name, plan, sandboxOf);
    else labs.down(name);
  });
  const onEndpoint = safe('an endpoint change', (change: 'up' | 'down', ep: Endpoint, net: Network, sb: Sandbox | undefined) => {
    if (change === 'up') {
      setEndpoint(ep, net);
      if (sb) sandboxUp(sb); // a sandbox that could not listen before gets another try
    } else removeEndpoint(ep);
  });

  // Another host's endpoint on a global network: in the scope of every local sandbox on that
  // network, like a local one (its record has no sandbox here).
  const onPeer = safe('a remote endpoint', (change: 'up' | 'down', peer: Peer, net: Network) => {
    if (change === 'down') return server.removeEndpoint(peer.endpointId);
    setEndpoint({
      id: peer.endpointId, name: peer.name, aliases: peer.aliases ?? [], sandboxId: undefined,
      ipv4: peer.ip ? IpAddr.parse(peer.ip) : undefined, ipv6: peer.ip6 ? IpAddr.parse(peer.ip6) : undefined,
    }, net);
  });

  controller.on('network', onNetwork);
  controller.on('sandbox', onSandbox);
  controller.on('endpoint', onEndpoint);
  controller.on('lab', onLab);
  controller.on('peer', onPeer);

  // ---------------------------------------------------------------- what exists now

  const nets = new Map(controller.networks().map((n) => [n.id, n]));
  for (const n of nets.values()) if (n.state === 'ready') onNetwork('up', n);
  for (const ep of controller.endpoints()) {
    const n = nets.get(ep.networkId);
    if (n) safe('an endpoint', setEndpoint)(ep, n);
  }
  for (const sb of controller.sandboxes()) if (sb.state === 'ready') onSandbox('up', sb);
  // (a stand-in controller in unit tests may have no labs)
  for (const l of typeof controller.labs === 'function' ? controller.labs() : []) {
    const ids = new Map(controller.sandboxes({ owner: `lab:${l.name}` }).map((sb) => [sb.name, sb.id]));
    safe('a lab', () => onLab('up', l.name, controller.labDetails(l.name).plan, (node) => ids.get(node)))();
  }
  await Promise.all([...inflight]);
  log.info(
    { sandboxes: sandboxes.size, gatewayMode: gateways, gateways: [...gatewaySlots.values()].flat().length, upstreams: server.upstreams },
    'dns: serving',
  );

  return {
    server,
    status() {
      const sbs: Record<string, ListenerStatus> = {};
      for (const [id, s] of sandboxes) sbs[id] = { ...s.status };
      const gws: Record<string, ListenerStatus[]> = {};
      for (const [id, l] of gatewaySlots) gws[id] = l.map((s) => ({ ...s.status }));
      return { sandboxes: sbs, gateways: gws };
    },
    async settled() {
      while (inflight.size) await Promise.all([...inflight]);
    },
    async close() {
      if (closed) return;
      closed = true;
      controller.off('network', onNetwork);
      controller.off('sandbox', onSandbox);
      controller.off('endpoint', onEndpoint);
      controller.off('lab', onLab);
      controller.off('peer', onPeer);
      while (inflight.size) await Promise.all([...inflight]);
      await server.close();
      sandboxes.clear();
      gatewaySlots.clear();
    },
  };
}
