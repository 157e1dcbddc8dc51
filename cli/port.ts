/**
 * `tnet port REF [PRIVATE_PORT[/PROTO]]`: the host ports published to a sandbox, a Docker
 * endpoint or a Docker container, printed as `docker port` prints them. dockerd never reads the
 * ports of a remote driver back (moby/libnetwork#2451), so `docker port` is empty for tnet's.
 */
import { spawnSync } from 'node:child_process';
import { ApiFailure, type Client } from './client.js';

/** One published port, as the control API's GET /ports/REF answers. */
export interface PortLine {
  endpoint: string;
  network?: string;
  networkId: string;
  sandbox?: string;
  proto: 'tcp' | 'udp' | 'sctp';
  containerPort: number;
  hostIp: string;
  hostPort: number;
  /** HOST:PORT as `docker port` prints them: 0.0.0.0:32768, [::]:32768, 127.0.0.1:8080. */
  hosts: string[];
}

export interface PortsAnswer {
  ref: string;
  what: string;
  mappings: PortLine[];
}

/** `80`, `80/tcp`, `53/udp` -> the private port and protocol (tcp when none is given, as Docker). */
export function parsePrivatePort(text: string): { port: number; proto: 'tcp' | 'udp' | 'sctp' } {
  const m = /^(\d{1,5})(?:\/(tcp|udp|sctp))?$/i.exec(text);
  const port = Number(m?.[1]);
  if (!m || port < 1 || port > 65535) throw new Error(`"${text}" is not PORT or PORT/PROTO (like 80 or 53/udp)`);
  return { port, proto: (m[2]?.toLowerCase() ?? 'tcp') as 'tcp' | 'udp' | 'sctp' };
}

/**
 * The lines `docker port` prints: `80/tcp -> 0.0.0.0:32768` for every mapping, or only
 * `0.0.0.0:32768` for the mappings of one private port. undefined: that port is not published.
 */
export function formatPorts(mappings: readonly PortLine[], only?: { port: number; proto: string }): string[] | undefined {
  if (!only) return mappings.flatMap((m) => m.hosts.map((h) => `${m.containerPort}/${m.proto} -> ${h}`));
  const mine = mappings.filter((m) => m.containerPort === only.port && m.proto === only.proto);
  return mine.length ? mine.flatMap((m) => m.hosts) : undefined;
}

/**
 * The EndpointIDs of a Docker container, from the `docker` command (it honours DOCKER_HOST), or
 * undefined when there is no such command or container. tnet knows Docker's endpoints, not
 * containers: this is how `tnet port CONTAINER` finds them.
 */
export function dockerEndpointIds(container: string): string[] | undefined {
  const r = spawnSync('docker', ['inspect', '--type', 'container', '--format', '{{json .NetworkSettings.Networks}}', container], {
    encoding: 'utf8',
    timeout: 15_000,
  });
  if (r.error || r.status !== 0) return undefined;
  try {
    const nets = JSON.parse(r.stdout) as Record<string, { EndpointID?: string }> | null;
    return Object.values(nets ?? {})
      .map((n) => n.EndpointID ?? '')
      .filter((id) => /^[0-9a-f]{64}$/.test(id));
  } catch {
    return undefined;
  }
}

/**
 * What REF publishes: a sandbox or an endpoint (id or prefix) as tnet knows it, else a Docker
 * container of that name or id, through its endpoints on tnet networks.
 */
export async function portsOf(client: Client, ref: string, docker = dockerEndpointIds): Promise<PortsAnswer> {
  const get = (r: string) => client.call<PortsAnswer>('GET', `/ports/${encodeURIComponent(r)}`);
  try {
    return await get(ref);
  } catch (e) {
    if (!(e instanceof ApiFailure) || e.error.code !== 'not-found') throw e;
    const ids = docker(ref);
    if (ids === undefined) throw e;
    const mappings: PortLine[] = [];
    let known = 0;
    for (const id of ids) {
      try {
        mappings.push(...(await get(id)).mappings);
        known++;
      } catch (e2) {
        // An endpoint on one of dockerd's own networks: not tnet's.
        if (!(e2 instanceof ApiFailure) || e2.error.code !== 'not-found') throw e2;
      }
    }
    if (known === 0)
      throw new ApiFailure(404, { code: 'not-found', message: `container "${ref}" has no endpoint on a tnet network`, object: `container "${ref}"` });
    mappings.sort((a, b) => a.containerPort - b.containerPort || a.proto.localeCompare(b.proto) || a.hostPort - b.hostPort);
    return { ref, what: `container "${ref}"`, mappings };
  }
}
