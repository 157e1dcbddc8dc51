import { invalid } from '../errors.js';
import { IpAddr } from './address.js';
import { Subnet } from './subnet.js';

/**
 * The one place that says which blocks can never carry a network of hosts, whatever the face
 * (control API, Docker's IpamDriver, a lab): the kernel gives them other meanings, so a network on
 * them would be accepted and then never work. Checked before anything is recorded.
 *
 * Refused, with the reason (a subnet that overlaps one of these is refused too, since it contains
 * or lies inside it):
 *  - the default route (a /0) and 0.0.0.0/8 ("this network": never a destination);
 *  - loopback, 127.0.0.0/8 and ::1: the kernel delivers them on `lo`, never on a bridge;
 *  - link-local, 169.254.0.0/16 and fe80::/10: never routed off their link, so neither NAT nor
 *    published ports could reach them, and every IPv6 link already has its own fe80::/64;
 *  - multicast, 224.0.0.0/4 and ff00::/8: group addresses, never a host's;
 *  - 240.0.0.0/4 (class E, with the broadcast address 255.255.255.255): the kernel does not route it;
 *  - :: (unspecified) and ::ffff:0:0/96 (IPv4-mapped): never on a wire.
 * A pool with a gateway also needs a host besides it: a /32 or /128 is refused there, a /31 or /127
 * (gateway and one host, RFC 3021 and RFC 6164) is accepted. Without a gateway a /32 is one host.
 */
const NEVER: readonly (readonly [string, string])[] = [
  ['0.0.0.0/8', '"this network" (0.0.0.0/8), never a destination'],
  ['127.0.0.0/8', 'loopback (127.0.0.0/8), delivered on lo and never on a network'],
  ['169.254.0.0/16', 'link-local (169.254.0.0/16), never routed off its link'],
  ['224.0.0.0/4', 'multicast (224.0.0.0/4), group addresses and never a host'],
  ['240.0.0.0/4', 'reserved (240.0.0.0/4, class E and broadcast), which the kernel does not route'],
  ['::/128', 'the unspecified address (::)'],
  ['::1/128', 'loopback (::1), delivered on lo and never on a network'],
  ['::ffff:0:0/96', 'IPv4-mapped (::ffff:0:0/96), never on a wire'],
  ['fe80::/10', 'link-local (fe80::/10), which every IPv6 link already has and never routes off it'],
  ['ff00::/8', 'multicast (ff00::/8), group addresses and never a host'],
];
const BLOCKS = NEVER.map(([cidr, why]) => [Subnet.parse(cidr), why] as const);

/** Why no network can ever use `s`, or undefined if it can. */
export function unusableReason(s: Subnet): string | undefined {
  if (s.prefix === 0) return `the default route (every IPv${s.family} address)`;
  for (const [block, why] of BLOCKS) {
    if (!block.overlaps(s)) continue;
    return block.contains(s) ? `inside ${why}` : `overlaps ${why}`;
  }
  return undefined;
}

/** Why a subnet is too small for its gateway and at least one other host, or undefined. */
export function tooSmallReason(s: Subnet, hasGateway: boolean): string | undefined {
  if (!hasGateway) return undefined;
  const bits = s.family === 4 ? 32 : 128;
  if (s.prefix === bits) return `a /${bits} holds one address, so no host is left beside the gateway (the smallest network with a gateway is a /${bits - 1})`;
  return undefined;
}

/** Refuses a subnet no network can use (see above), naming `what` ("subnet", "pool"...). */
export function checkUsableSubnet(s: Subnet, hasGateway: boolean, what = 'subnet'): void {
  const reason = unusableReason(s) ?? tooSmallReason(s, hasGateway);
  if (reason) throw invalid(`${what} ${s} cannot carry a network: it ${reason.startsWith('a /') ? 'is too small: ' + reason : `is ${reason}`}`, `${what} "${s}"`);
}

/** Why an address can never be a host's own (loopback, multicast...), or undefined. */
export function unusableAddressReason(a: IpAddr): string | undefined {
  const one = Subnet.of(a.family, a.value, a.family === 4 ? 32 : 128);
  return unusableReason(one);
}
