import { isIPv4, isIPv6 } from 'node:net';
import { Address6 } from 'ip-address';

/** An address with its prefix length as the kernel takes it ("10.0.0.2/24", "fd00::2/64"). */
export interface Cidr {
  readonly family: 4 | 6;
  readonly address: string;
  readonly prefixLen: number;
}

export const AF_INET = 2;
export const AF_INET6 = 10;
export const AF_BRIDGE = 7;

export function familyOf(address: string): 4 | 6 {
  if (isIPv4(address)) return 4;
  if (isIPv6(address)) return 6;
  throw new TypeError(`not an IP address: "${address}"`);
}

export function afOf(family: 4 | 6): number {
  return family === 4 ? AF_INET : AF_INET6;
}

export function cidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const family = familyOf(address);
  const max = family === 4 ? 32 : 128;
  const prefixLen = slash < 0 ? max : Number(text.slice(slash + 1));
  if (!Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > max)
    throw new TypeError(`bad prefix length in "${text}"`);
  return { family, address, prefixLen };
}

export function cidrString(c: Cidr): string {
  return `${c.address}/${c.prefixLen}`;
}

/** The address in network byte order, as netlink carries it. */
export function ipBytes(address: string): Buffer {
  if (isIPv4(address)) return Buffer.from(address.split('.').map(Number));
  if (isIPv6(address)) return Buffer.from(new Address6(address).canonicalForm().replaceAll(':', ''), 'hex');
  throw new TypeError(`not an IP address: "${address}"`);
}

export function ipFromBytes(b: Buffer): string {
  if (b.length === 4) return Array.from(b).join('.');
  if (b.length === 16) return Address6.fromByteArray(Array.from(b)).correctForm();
  throw new TypeError(`address of ${b.length} bytes`);
}

export function macBytes(mac: string): Buffer {
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(mac)) throw new TypeError(`not a MAC address: "${mac}"`);
  return Buffer.from(mac.replaceAll(':', ''), 'hex');
}

export function macString(b: Buffer | undefined): string | undefined {
  if (!b || b.length !== 6) return undefined;
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}
