import { invalid } from '../errors.js';
import { type Family, IpAddr, familyBits, parseBare } from './address.js';

/**
 * A CIDR block: family, network address (host bits all zero) and prefix length. Immutable; the
 * constructor is private so that every Subnet in the program has its host bits clear.
 */
export class Subnet {
  private constructor(
    readonly family: Family,
    readonly network: bigint,
    readonly prefix: number,
  ) {}

  /** Builds a subnet; refuses a prefix out of range or a network with host bits set. */
  static of(family: Family, network: bigint, prefix: number): Subnet {
    const bits = familyBits(family);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > bits) {
      throw invalid(`prefix length ${prefix} is out of range for IPv${family} (0-${bits})`);
    }
    const addr = IpAddr.of(family, network);
    const hostMask = (1n << BigInt(bits - prefix)) - 1n;
    if ((network & hostMask) !== 0n) {
      const text = `${addr}/${prefix}`;
      throw invalid(
        `subnet "${text}" has host bits set; did you mean ${Subnet.of(family, network & ~hostMask, prefix)}?`,
        `subnet "${text}"`,
      );
    }
    return new Subnet(family, network, prefix);
  }

  /**
   * Parses "address/prefix". Refuses, naming the text: a missing or malformed prefix (no sign,
   * no leading zero, no spaces), a prefix beyond 32/128, a malformed address, and host bits set
   * ("10.0.0.1/24" is an interface address, not a subnet; the error suggests 10.0.0.0/24).
   */
  /** The subnet, or undefined when `text` is not one (the caller reports it elsewhere). */
  static tryParse(text: string): Subnet | undefined {
    try {
      return Subnet.parse(text);
    } catch {
      return undefined;
    }
  }

  static parse(text: string): Subnet {
    if (typeof text !== 'string' || text === '') throw invalid('a subnet is required');
    const object = `subnet "${text}"`;
    const slash = text.indexOf('/');
    if (slash < 0) throw invalid(`subnet "${text}" has no prefix length (e.g. ${text}/24)`, object);
    const addrText = text.slice(0, slash);
    const prefixText = text.slice(slash + 1);
    if (!/^(0|[1-9][0-9]{0,2})$/.test(prefixText)) {
      throw invalid(`subnet "${text}" has a malformed prefix length "${prefixText}"`, object);
    }
    const addr = parseBare(addrText);
    if (!(addr instanceof IpAddr)) {
      throw invalid(`subnet "${text}" is not a valid CIDR subnet: ${addr.reason}`, object);
    }
    const prefix = Number(prefixText);
    const bits = familyBits(addr.family);
    if (prefix > bits) {
      throw invalid(
        `subnet "${text}" has prefix length ${prefix}, beyond ${bits} for IPv${addr.family}`,
        object,
      );
    }
    const hostMask = (1n << BigInt(bits - prefix)) - 1n;
    if ((addr.value & hostMask) !== 0n) {
      const suggestion = new Subnet(addr.family, addr.value & ~hostMask, prefix);
      throw invalid(`subnet "${text}" has host bits set; did you mean ${suggestion}?`, object);
    }
    return new Subnet(addr.family, addr.value, prefix);
  }

  /** Number of addresses in the block, including network and broadcast. */
  get size(): bigint {
    return 1n << BigInt(familyBits(this.family) - this.prefix);
  }

  /** The network address (all host bits zero). */
  get first(): IpAddr {
    return IpAddr.of(this.family, this.network);
  }

  /** The last address (all host bits one; the broadcast address for IPv4). */
  get last(): IpAddr {
    return IpAddr.of(this.family, this.network + this.size - 1n);
  }

  /** True if the address, or the whole subnet, lies inside this subnet (same family only). */
  contains(x: IpAddr | Subnet): boolean {
    if (x.family !== this.family) return false;
    const end = this.network + this.size;
    if (x instanceof IpAddr) return x.value >= this.network && x.value < end;
    return x.network >= this.network && x.network + x.size <= end;
  }

  /** True if the two blocks share at least one address (CIDR blocks either nest or are disjoint). */
  overlaps(other: Subnet): boolean {
    return this.contains(other) || other.contains(this);
  }

  equals(other: Subnet): boolean {
    return this.family === other.family && this.network === other.network && this.prefix === other.prefix;
  }

  /** Canonical CIDR text, e.g. "10.0.0.0/24" or "fd00:1::/64". */
  toString(): string {
    return `${this.first}/${this.prefix}`;
  }
}
