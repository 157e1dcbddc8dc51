import { Address4, Address6 } from 'ip-address';
import { invalid } from '../errors.js';

/** IP version. A value of one family never equals, contains or overlaps a value of the other. */
export type Family = 4 | 6;

export const familyBits = (family: Family): 32 | 128 => (family === 4 ? 32 : 128);

/**
 * One IP address: its family and its value as an unsigned integer. A bigint rather than bytes or
 * text so that "next address", "inside subnet" and "sorts before" are plain arithmetic.
 */
export class IpAddr {
  private constructor(
    readonly family: Family,
    readonly value: bigint,
  ) {}

  /** Builds an address from its integer value; refuses a value that does not fit the family. */
  static of(family: Family, value: bigint): IpAddr {
    if (value < 0n || value >> BigInt(familyBits(family)) !== 0n) {
      throw invalid(`value ${value} is not an IPv${family} address`);
    }
    return new IpAddr(family, value);
  }

  /**
   * Parses a bare address: dotted quad for IPv4 (no leading zeros, no shorthand like "10.1"),
   * any RFC 4291 text form for IPv6. Refuses a prefix length ("/24") and a zone ("%eth0"): an
   * address handed to IPAM is neither a subnet nor tied to a link.
   */
  static parse(text: string): IpAddr {
    if (typeof text !== 'string' || text === '') throw invalid('an IP address is required');
    if (text.includes('/')) {
      throw invalid(`address "${text}" has a prefix length; give the bare address`, `address "${text}"`);
    }
    const a = parseBare(text);
    if (!(a instanceof IpAddr)) {
      throw invalid(`address "${text}" is not a valid IP address: ${a.reason}`, `address "${text}"`);
    }
    return a;
  }

  /** Canonical text: dotted quad, or RFC 5952 (lower case, longest zero run compressed). */
  toString(): string {
    if (this.family === 4) return Address4.fromBigInt(this.value).correctForm();
    const a6 = Address6.fromBigInt(this.value);
    // RFC 5952 section 5: IPv4-mapped addresses keep the dotted quad.
    return this.value >> 32n === 0xffffn ? a6.to4in6() : a6.correctForm();
  }

  equals(other: IpAddr): boolean {
    return this.family === other.family && this.value === other.value;
  }
}

/**
 * Parses address text without a prefix length with the `ip-address` package. Returns the reason
 * it is not an address instead of throwing, so that callers can name what they were parsing.
 */
export function parseBare(text: string): IpAddr | { reason: string } {
  try {
    if (text.includes(':')) {
      if (text.includes('%')) return { reason: 'a zone (%...) is not allowed' };
      return IpAddr.of(6, new Address6(text).bigInt());
    }
    return IpAddr.of(4, new Address4(text).bigInt());
  } catch (e) {
    return { reason: e instanceof Error ? e.message.replace(/\.$/, '') : String(e) };
  }
}
