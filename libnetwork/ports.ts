import { createSocket } from 'node:dgram';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { conflict, invalid } from './errors.js';
import { IpAddr } from './ipam/address.js';
import { Subnet } from './ipam/subnet.js';
import { log } from './log.js';
import type { Network, PortMapping, PortRequest, Proto } from './model.js';
import type { State } from './store/state.js';
import type { Core } from './core.js';
import { addrList } from './kernel/index.js';

/**
 * Host ports for published container ports, shared by the lab face and the Docker face: one
 * store (the `ports` table) decides what tnet has published, and a bind probe what the host uses.
 */

/** Where the kernel keeps its ephemeral range; dockerd reads the same file for `-p 80` and `-P`. */
export const PORT_RANGE_FILE = '/proc/sys/net/ipv4/ip_local_port_range';
/** dockerd's range when that file cannot be read (portallocator's DefaultPortRangeStart/End). */
export const FALLBACK_PORT_RANGE: readonly [number, number] = [49153, 65535];

/**
 * The host ports a request without a host port (`-p 80`, `-P`) is given one from: the kernel's
 * ephemeral range (32768-60999 on this kernel), as dockerd does, so a port tnet chooses is one a
 * Docker user expects. Read at each choice (a few microseconds), so a changed sysctl applies.
 */
export function ephemeralPortRange(file = PORT_RANGE_FILE): [number, number] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    log.warn({ err: e, file }, `cannot read the ephemeral port range; using ${FALLBACK_PORT_RANGE.join('-')}`);
    return [...FALLBACK_PORT_RANGE];
  }
  const m = /^\s*(\d+)\s+(\d+)\s*$/.exec(text);
  const first = Number(m?.[1]);
  const last = Number(m?.[2]);
  if (!m || first < 1 || last > 65535 || first > last) {
    log.warn({ file, text: text.trim() }, `the ephemeral port range is not "FIRST LAST"; using ${FALLBACK_PORT_RANGE.join('-')}`);
    return [...FALLBACK_PORT_RANGE];
  }
  return [first, last];
}

export function checkPortRequest(r: PortRequest): void {
  const protos: Proto[] = ['tcp', 'udp', 'sctp'];
  if (!protos.includes(r.proto)) throw invalid(`protocol "${r.proto}" is not tcp, udp or sctp`, `port ${r.containerPort}`);
  const ok = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;
  if (!ok(r.containerPort)) throw invalid(`container port ${r.containerPort} is not in 1-65535`, `port ${r.containerPort}`);
  if (r.hostPort !== 0 && !ok(r.hostPort)) throw invalid(`host port ${r.hostPort} is not in 1-65535`, `port ${r.hostPort}`);
  if (r.hostPortEnd !== 0 && (!ok(r.hostPortEnd) || r.hostPortEnd < r.hostPort))
    throw invalid(`host port range ${r.hostPort}-${r.hostPortEnd} is not a valid range`, `port ${r.hostPort}`);
  if (r.hostIp !== '') {
    try {
      IpAddr.parse(r.hostIp);
    } catch {
      throw invalid(`host address "${r.hostIp}" for port ${r.containerPort} is not an IP address`, `port ${r.containerPort}`);
    }
  }
}

/** A request as -p spells it, for messages: "127.0.0.1:8080:80/tcp". */
export function publishText(r: PortRequest): string {
  const host = r.hostPort === 0 ? '' : `${r.hostPort}${r.hostPortEnd ? `-${r.hostPortEnd}` : ''}:`;
  const ip = r.hostIp === '' ? '' : r.hostIp.includes(':') ? `[${r.hostIp}]:` : `${r.hostIp}:`;
  return `${ip}${host}${r.containerPort}/${r.proto}`;
}

/** What a network offers a published port: its address families, and where its default host address comes from. */
export interface PublishTarget {
  readonly network: string;
  readonly ipv4: boolean;
  readonly ipv6: boolean;
  /** The network's host_binding_ipv4 ('' = every address): the host address of a request without one. */
  readonly defaultHostIp: string;
  /** The host namespace's own addresses (canonical text: has), for requests with a host address. */
  readonly localAddresses: () => Promise<{ has(address: string): boolean }>;
}

/** What `net` offers a published port, with the host's addresses read from the kernel when needed. */
export function publishTarget(core: Core, net: Network): PublishTarget {
  return {
    network: net.name, ipv4: net.ipv4 !== undefined, ipv6: net.ipv6 !== undefined,
    defaultHostIp: core.driver(net.driver).defaultHostIp?.(net) ?? '',
    localAddresses: async () => {
      const addrs = await addrList(core.rtnl);
      const own = new Set(addrs.map((a) => IpAddr.parse(a.address).toString()));
      // An address on lo makes its whole prefix local (127.0.0.1/8: all of 127/8 answers here).
      const onLo = addrs.filter((a) => a.ifindex === 1 && a.family === 4).map((a) => Subnet.of(4, IpAddr.parse(a.address).value & ~((1n << BigInt(32 - a.prefixLen)) - 1n), a.prefixLen));
      return { has: (text: string) => own.has(text) || onLo.some((s) => s.contains(IpAddr.parse(text))) };
    },
  };
}

/**
 * The requests of one connect or ProgramExternalConnectivity with the network's default host
 * address filled in, refused before anything changes if one could never match: an IPv4 host
 * address on a network without IPv4 (nothing would carry the traffic to the container), a host
 * address that is not one of the host's own (nothing would ever arrive on it), or two different
 * mappings of one host port. The same mapping given twice is one mapping (as in Docker).
 */
export async function publishRequests(reqs: readonly PortRequest[], to: PublishTarget): Promise<PortRequest[]> {
  const out: PortRequest[] = [];
  let local: { has(address: string): boolean } | undefined;
  for (const r0 of reqs) {
    checkPortRequest(r0);
    let r: PortRequest = { ...r0, hostIp: r0.hostIp === '' ? to.defaultHostIp : r0.hostIp };
    const spec = `-p ${publishText(r0)}`;
    const via = r0.hostIp === '' && r.hostIp !== '' ? ` (the host_binding_ipv4 of network "${to.network}")` : '';
    if (r.hostIp !== '') {
      const a = IpAddr.parse(r.hostIp);
      // An IPv6 host address on an IPv4-only network works: the userland proxy carries it to the
      // container's IPv4 address (as docker-proxy does). The reverse has nothing to carry it.
      if (a.family === 4 && !to.ipv4)
        throw invalid(
          `${spec}: host address ${a}${via} is IPv4 but network "${to.network}" has no IPv4 subnet, so nothing could carry it to the container`,
          `port "${publishText(r0)}"`,
        );
      local ??= await to.localAddresses();
      if (!local.has(a.toString()))
        throw invalid(
          `${spec}: host address ${a}${via} is not an address of this host, so nothing would ever arrive on it; give one of the host's addresses, or none for every address`,
          `port "${publishText(r0)}"`,
        );
      r = { ...r, hostIp: a.toString() }; // one spelling, so the store's holders compare equal
    }
    if (out.some((o) => o.proto === r.proto && o.containerPort === r.containerPort && o.hostIp === r.hostIp && o.hostPort === r.hostPort && o.hostPortEnd === r.hostPortEnd)) continue;
    const clash = r.hostPort !== 0 && r.hostPortEnd === 0 && out.find((o) => o.proto === r.proto && o.hostPort === r.hostPort && o.hostPortEnd === 0 && (o.hostIp === '' || r.hostIp === '' || o.hostIp === r.hostIp));
    if (clash)
      throw conflict(
        `-p ${publishText(clash)} and ${spec} both ask for host port ${r.hostIp || clash.hostIp || '*'}:${r.hostPort}/${r.proto}; a host port can be published once`,
        `port ${r.hostPort}/${r.proto}`,
      );
    out.push(r);
  }
  return out;
}

/** Who holds a published port, for messages: the sandbox's name, or the endpoint's short id. */
export function holderName(state: State, endpointId: string): string {
  const ep = state.endpoint(endpointId);
  const sb = ep?.sandboxId ? state.sandbox(ep.sandboxId) : undefined;
  return sb ? `sandbox "${sb.name}"` : `endpoint ${endpointId.slice(0, 12)}`;
}

const takenBy = (state: State, endpointId: string) => `already allocated (already published by ${holderName(state, endpointId)})`;

/** Inside the store transaction: another request may have taken the port since choosePorts. */
export function checkPortFree(state: State, p: PortMapping): void {
  const h = state.portHolders(p.proto, p.hostIp, p.hostPort)[0];
  if (h) throw conflict(`host port ${p.hostIp || '*'}:${p.hostPort}/${p.proto} is ${takenBy(state, h.endpointId)}`, `port ${p.hostPort}/${p.proto}`);
}

/** One host port per request: the given port, the first free one of a range, or an ephemeral one. */
export async function choosePorts(state: State, reqs: readonly PortRequest[]): Promise<PortMapping[]> {
  const out: PortMapping[] = [];
  const taken = new Set<string>();
  for (const r of reqs) {
    checkPortRequest(r);
    const [first, last] = r.hostPort === 0 ? ephemeralPortRange() : [r.hostPort, r.hostPortEnd || r.hostPort];
    let chosen: PortMapping | undefined;
    let problem = '';
    for (let port = first; port <= last && !chosen; port++) {
      const key = `${r.proto}/${r.hostIp}/${port}`;
      if (taken.has(key) || taken.has(`${r.proto}//${port}`) || (r.hostIp === '' && [...taken].some((k) => k.startsWith(`${r.proto}/`) && k.endsWith(`/${port}`)))) {
        problem = 'taken by another mapping of this same request';
        continue;
      }
      const m: PortMapping = { proto: r.proto, containerPort: r.containerPort, hostIp: r.hostIp, hostPort: port };
      const h = state.portHolders(m.proto, m.hostIp, m.hostPort)[0];
      if (h) {
        problem = takenBy(state, h.endpointId);
        continue;
      }
      const inUse = await hostPortInUse(m);
      if (inUse) {
        problem = `in use on the host (${inUse})`;
        continue;
      }
      chosen = m;
      taken.add(key);
    }
    if (!chosen) {
      const what = first === last ? `host port ${r.hostIp || '*'}:${first}/${r.proto} is` : `no host port in ${first}-${last}/${r.proto} is free:`;
      throw conflict(`${what} ${problem}`, `port ${first}/${r.proto}`);
    }
    out.push(chosen);
  }
  return out;
}

/**
 * Whether a process on the host already listens on this port: publishing over it would
 * silently steal its traffic, so it is refused as dockerd refuses it ("address already in use").
 */
export async function hostPortInUse(m: PortMapping): Promise<string | undefined> {
  if (m.proto === 'sctp') return undefined;
  const host = m.hostIp === '' ? undefined : m.hostIp;
  return new Promise((resolve) => {
    if (m.proto === 'tcp') {
      const s = createServer();
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'EADDRNOTAVAIL' ? undefined : e.code));
      s.listen({ port: m.hostPort, host, exclusive: true }, () => s.close(() => resolve(undefined)));
    } else {
      const s = createSocket(host?.includes(':') ? 'udp6' : 'udp4');
      s.once('error', (e: NodeJS.ErrnoException) => {
        s.close();
        resolve(e.code === 'EADDRNOTAVAIL' ? undefined : e.code);
      });
      s.bind({ port: m.hostPort, address: host, exclusive: true }, () => s.close(() => resolve(undefined)));
    }
  });
}
