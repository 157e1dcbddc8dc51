import { invalid } from '../libnetwork/errors.js';
import type { PortRequest, Proto } from '../libnetwork/model.js';

/**
 * Docker's -p syntax: [HOST_IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTO], IPv6 host
 * addresses in brackets ([::1]:8080:80). A container port range maps pairwise onto a host range
 * of the same length; one container port with a host range takes the first free host port of it.
 */
export function parsePublish(spec: string): PortRequest[] {
  const bad = (why: string) => invalid(`port spec "${spec}": ${why} (expected [HOST_IP:][HOST_PORT:]CONTAINER_PORT[/tcp|udp|sctp])`, `port "${spec}"`);
  let rest = spec;
  let proto: Proto = 'tcp';
  const slash = rest.lastIndexOf('/');
  if (slash >= 0) {
    const p = rest.slice(slash + 1);
    if (p !== 'tcp' && p !== 'udp' && p !== 'sctp') throw bad(`protocol "${p}" is not tcp, udp or sctp`);
    proto = p;
    rest = rest.slice(0, slash);
  }
  let hostIp = '';
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0 || rest[close + 1] !== ':') throw bad('unclosed IPv6 address');
    hostIp = rest.slice(1, close);
    rest = rest.slice(close + 2);
  }
  const parts = rest.split(':');
  if (parts.length > 3) throw bad('too many ":"');
  if (parts.length === 3) hostIp = parts.shift()!;
  const [hostText, ctrText] = parts.length === 2 ? [parts[0]!, parts[1]!] : ['', parts[0]!];
  const range = (t: string, what: string): [number, number] => {
    const m = /^(\d{1,5})(?:-(\d{1,5}))?$/.exec(t);
    if (!m) throw bad(`${what} "${t}" is not a port or port range`);
    const a = Number(m[1]);
    const b = m[2] ? Number(m[2]) : a;
    if (a < 1 || b > 65535 || b < a) throw bad(`${what} "${t}" is not within 1-65535`);
    return [a, b];
  };
  const [c0, c1] = range(ctrText, 'container port');
  if (hostIp === '0.0.0.0' || hostIp === '::') hostIp = '';
  if (hostText === '') {
    const out: PortRequest[] = [];
    for (let p = c0; p <= c1; p++) out.push({ proto, containerPort: p, hostIp, hostPort: 0, hostPortEnd: 0 });
    return out;
  }
  const [h0, h1] = range(hostText, 'host port');
  if (c0 === c1) return [{ proto, containerPort: c0, hostIp, hostPort: h0, hostPortEnd: h1 === h0 ? 0 : h1 }];
  if (h1 - h0 !== c1 - c0) throw bad('host and container port ranges differ in length');
  const out: PortRequest[] = [];
  for (let i = 0; i <= c1 - c0; i++) out.push({ proto, containerPort: c0 + i, hostIp, hostPort: h0 + i, hostPortEnd: 0 });
  return out;
}
