import { type Socket as UdpSocket, createSocket } from 'node:dgram';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { conflict, unsupported } from '../../libnetwork/errors.js';
import type { Logger } from '../../libnetwork/log.js';

/**
 * The userland side of published ports, for what nftables cannot do (Docker's docker-proxy):
 * - IPv6 to an IPv4-only container: NAT does not translate between families, so the host port
 *   is served on IPv6 by a socket here that connects to the container's IPv4 address;
 * - [::1]: IPv6 has no route_localnet, so a connection to ::1 DNATed out of the host is dropped
 *   as a martian; it is served here instead (the DNAT rules skip ::1).
 * One listener per mapping and family, in the tnet process, opened and closed with the mapping.
 * A listener on `::` is IPv6-only: the IPv4 side of the port stays the kernel's NAT.
 */
export interface ProxySpec {
  readonly proto: 'tcp' | 'udp';
  /** An IPv6 address of the host, or '::' for all of them. */
  readonly hostIp: string;
  readonly hostPort: number;
  /** The container's address and port. */
  readonly target: string;
  readonly targetPort: number;
  /** Derived from an every-address mapping: a host without IPv6 skips it with a warning instead of failing. */
  readonly optional: boolean;
}

interface Running {
  readonly spec: ProxySpec;
  close(): void;
}

/** How long a UDP flow's upstream socket lives without traffic (docker-proxy: 90 s). */
const UDP_IDLE_MS = 90_000;
const hostPortText = (s: ProxySpec) => `[${s.hostIp}]:${s.hostPort}/${s.proto}`;

export class Proxies {
  private readonly byEndpoint = new Map<string, Running[]>();

  constructor(private readonly log: Logger) {}

  /** Starts the listeners of an endpoint (after stopping any it had); all or none. */
  async start(endpointId: string, specs: readonly ProxySpec[]): Promise<void> {
    this.stop(endpointId);
    const running: Running[] = [];
    try {
      for (const s of specs) {
        try {
          running.push(s.proto === 'tcp' ? await tcpProxy(s, this.log) : await udpProxy(s, this.log));
        } catch (e) {
          const code = (e as NodeJS.ErrnoException).code;
          if (code === 'EADDRINUSE') throw conflict(`host port ${hostPortText(s)} is already in use by another program`, `port ${s.hostPort}/${s.proto}`);
          if (s.optional && (code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL')) {
            this.log.warn({ port: hostPortText(s), code }, 'no IPv6 on this host: the published port answers on IPv4 only');
            continue;
          }
          throw unsupported(`cannot listen on host port ${hostPortText(s)}: ${(e as Error).message}`, `port ${s.hostPort}/${s.proto}`);
        }
      }
    } catch (e) {
      for (const r of running) r.close();
      throw e;
    }
    if (running.length) this.byEndpoint.set(endpointId, running);
  }

  /** Closes an endpoint's listeners and the connections through them. */
  stop(endpointId: string): void {
    for (const r of this.byEndpoint.get(endpointId) ?? []) r.close();
    this.byEndpoint.delete(endpointId);
  }

  closeAll(): void {
    for (const id of [...this.byEndpoint.keys()]) this.stop(id);
  }
}

function listenTcp(server: Server, s: ProxySpec): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: s.hostIp, port: s.hostPort, ipv6Only: s.hostIp.includes(':'), exclusive: true }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

async function tcpProxy(s: ProxySpec, log: Logger): Promise<Running> {
  const conns = new Set<Socket>();
  // Half-open both ways: a client that shuts down its sending side still gets the whole answer.
  const server = createServer({ allowHalfOpen: true }, (client) => {
    const up = connect({ host: s.target, port: s.targetPort, allowHalfOpen: true });
    conns.add(client);
    conns.add(up);
    const done = () => {
      client.destroy();
      up.destroy();
      conns.delete(client);
      conns.delete(up);
    };
    client.on('error', done).on('close', () => (up.writableEnded ? done() : up.end()));
    up.on('error', done).on('close', () => (client.writableEnded ? done() : client.end()));
    client.pipe(up);
    up.pipe(client);
  });
  server.on('error', (e) => log.warn({ err: e, port: hostPortText(s) }, 'published port proxy error'));
  await listenTcp(server, s);
  return {
    spec: s,
    close: () => {
      server.close();
      for (const c of conns) c.destroy();
      conns.clear();
    },
  };
}

function bindUdp(sock: UdpSocket, s: ProxySpec): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: s.hostIp, port: s.hostPort, exclusive: true }, () => {
      sock.off('error', reject);
      resolve();
    });
  });
}

async function udpProxy(s: ProxySpec, log: Logger): Promise<Running> {
  const sock = createSocket({ type: 'udp6', ipv6Only: true });
  const flows = new Map<string, { up: UdpSocket; timer: NodeJS.Timeout }>();
  const endFlow = (key: string) => {
    const f = flows.get(key);
    if (!f) return;
    clearTimeout(f.timer);
    f.up.close();
    flows.delete(key);
  };
  sock.on('message', (msg, from) => {
    const key = `${from.address}|${from.port}`;
    let f = flows.get(key);
    if (!f) {
      const up = createSocket(s.target.includes(':') ? 'udp6' : 'udp4');
      up.on('message', (reply) => {
        const cur = flows.get(key);
        if (cur) cur.timer.refresh();
        sock.send(reply, from.port, from.address);
      });
      up.on('error', () => endFlow(key));
      f = { up, timer: setTimeout(() => endFlow(key), UDP_IDLE_MS).unref() };
      flows.set(key, f);
    } else f.timer.refresh();
    f.up.send(msg, s.targetPort, s.target);
  });
  await bindUdp(sock, s);
  sock.on('error', (e) => log.warn({ err: e, port: hostPortText(s) }, 'published port proxy error'));
  return {
    spec: s,
    close: () => {
      for (const k of [...flows.keys()]) endFlow(k);
      sock.close();
    },
  };
}
