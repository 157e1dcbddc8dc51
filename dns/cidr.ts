import { isIP } from 'node:net';
import { invalid } from '../libnetwork/errors.js';

/**
 * Address parsing for the DNS engine: IPv4/IPv6 to bytes, reverse (PTR) names, and subnet
 * membership for gateway listeners (which answer only clients inside their network's subnets).
 * Kept here, small and allocation-light, because a gateway listener checks every query's source.
 */

export function ipv4Bytes(addr: string): Buffer | null {
  if (isIP(addr) !== 4) return null;
  return Buffer.from(addr.split('.').map(Number));
}

export function ipv6Bytes(addr: string): Buffer | null {
  const zone = addr.indexOf('%');
  const a = zone >= 0 ? addr.slice(0, zone) : addr;
  if (isIP(a) !== 6) return null;
  let head = a;
  let tail = '';
  const dbl = a.indexOf('::');
  if (dbl >= 0) {
    head = a.slice(0, dbl);
    tail = a.slice(dbl + 2);
  }
  const parse = (s: string): number[] => {
    if (s === '') return [];
    const out: number[] = [];
    for (const part of s.split(':')) {
      if (part.includes('.')) {
        const v4 = ipv4Bytes(part)!;
        out.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
      } else out.push(parseInt(part, 16));
    }
    return out;
  };
  const h = parse(head);
  const t = parse(tail);
  const words = dbl >= 0 ? [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t] : h;
  const buf = Buffer.alloc(16);
  words.forEach((w, i) => buf.writeUInt16BE(w, i * 2));
  return buf;
}

/** "10.0.0.5" -> "5.0.0.10.in-addr.arpa"; IPv6 -> nibble name under ip6.arpa. */
export function reverseName(bytes: Buffer): string {
  if (bytes.length === 4) return `${bytes[3]}.${bytes[2]}.${bytes[1]}.${bytes[0]}.in-addr.arpa`;
  const nibbles: string[] = [];
  for (let i = 15; i >= 0; i--) {
    const b = bytes[i]!;
    nibbles.push((b & 0xf).toString(16), (b >> 4).toString(16));
  }
  return `${nibbles.join('.')}.ip6.arpa`;
}

/** A parsed subnet: family, network bytes and prefix length. */
export interface Cidr {
  readonly text: string;
  readonly family: 4 | 6;
  readonly bytes: Buffer;
  readonly prefix: number;
}

export function parseCidr(text: string): Cidr {
  const slash = text.indexOf('/');
  const addr = slash >= 0 ? text.slice(0, slash) : text;
  const fam = isIP(addr);
  if (fam === 0) throw invalid(`"${text}" is not a subnet (expected e.g. 10.1.0.0/24 or fd00::/64)`, `subnet "${text}"`);
  const max = fam === 4 ? 32 : 128;
  const prefix = slash >= 0 ? Number(text.slice(slash + 1)) : max;
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max)
    throw invalid(`"${text}": prefix length must be 0..${max}`, `subnet "${text}"`);
  const bytes = fam === 4 ? ipv4Bytes(addr)! : ipv6Bytes(addr)!;
  return { text, family: fam === 4 ? 4 : 6, bytes, prefix };
}

/** Is the address (as bytes) inside the subnet? */
export function cidrContains(c: Cidr, addr: Buffer): boolean {
  if (addr.length !== c.bytes.length) return false;
  let bits = c.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((addr[i]! & mask) !== (c.bytes[i]! & mask)) return false;
  }
  return true;
}

/**
 * Source address of a datagram/connection to bytes; an IPv4-mapped IPv6 address (::ffff:a.b.c.d,
 * however it is written: a dual-stack socket reports IPv4 clients that way) becomes IPv4.
 */
export function clientBytes(address: string): Buffer | null {
  const v4 = ipv4Bytes(address);
  if (v4) return v4;
  const v6 = ipv6Bytes(address);
  if (v6 && v6.readUInt32BE(0) === 0 && v6.readUInt32BE(4) === 0 && v6.readUInt32BE(8) === 0xffff) return v6.subarray(12);
  return v6;
}
