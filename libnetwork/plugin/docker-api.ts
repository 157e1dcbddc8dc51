/**
 * The little of Docker's Engine API the plugin reads: which container an endpoint belongs to,
 * by its name and network aliases. dockerd never tells a network plugin a container's name (the
 * wire protocol carries ids only), and a tnet overlay's other hosts need it for their DNS.
 * The socket: $DOCKER_HOST (unix://PATH), else /var/run/docker.sock.
 */
import { request } from 'node:http';
import { DNS_NAME } from '../names.js';

const DEFAULT_SOCKET = '/var/run/docker.sock';

function socketPath(): string {
  const h = process.env.DOCKER_HOST;
  return h?.startsWith('unix://') ? h.slice('unix://'.length) : DEFAULT_SOCKET;
}

/** GET a path of the Engine API; undefined for anything but a 200 with JSON (dockerd away, no such object). */
function get<T>(path: string): Promise<T | undefined> {
  return new Promise((resolve) => {
    const req = request({ socketPath: socketPath(), path, method: 'GET', timeout: 2000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        try {
          resolve(res.statusCode === 200 ? (JSON.parse(body) as T) : undefined);
        } catch {
          resolve(undefined);
        }
      });
    });
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

interface NetworkInspect {
  readonly Name: string;
  readonly Containers?: Record<string, { readonly Name: string; readonly EndpointID: string }>;
}
interface ContainerInspect {
  readonly NetworkSettings?: { readonly Networks?: Record<string, { readonly EndpointID?: string; readonly Aliases?: readonly string[] | null }> };
}

/**
 * The DNS names of an endpoint's container: its name, then its network aliases (DNS names only:
 * a name Docker allows may not be one). Undefined while dockerd does not list the endpoint
 * (it records it after Join returns) or cannot be reached.
 */
export async function containerNames(networkId: string, endpointId: string): Promise<{ name: string; aliases: string[] } | undefined> {
  const net = await get<NetworkInspect>(`/networks/${encodeURIComponent(networkId)}`);
  const entry = Object.entries(net?.Containers ?? {}).find(([, c]) => c.EndpointID === endpointId);
  if (!entry || !net) return undefined;
  const [cid, c] = entry;
  const info = await get<ContainerInspect>(`/containers/${encodeURIComponent(cid)}/json`);
  const aliases = Object.values(info?.NetworkSettings?.Networks ?? {}).find((n) => n.EndpointID === endpointId)?.Aliases ?? [];
  const dns = (n: string) => DNS_NAME.test(n) && n.length <= 253;
  const names = [c.Name.replace(/^\//, ''), ...aliases].filter((n, i, all) => dns(n) && all.indexOf(n) === i);
  if (!names.length) return undefined;
  return { name: names[0]!, aliases: names.slice(1) };
}
