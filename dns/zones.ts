import { cidrContains } from './cidr.js';
import type { Network } from './records.js';
import { keyToName, labelStarts } from './wire.js';

/**
 * tnet's own zones, answered here and never forwarded, whoever asks: a network's name (`w.web`,
 * `anything.web`), and the reverse zones inside its subnets (`5.0.16.172.in-addr.arpa` for
 * 172.16.0.0/16, the nibble names under ip6.arpa for an IPv6 subnet). Forwarding them would tell
 * the upstream resolvers the names and addresses of containers, and where there is no upstream the
 * client would wait for a timeout. A name of a zone the asking sandbox does not share is answered
 * like a name that does not exist (NXDOMAIN), so nothing about other networks shows either.
 * A reverse name above a subnet (`10.in-addr.arpa` for 10.1.0.0/24) is not tnet's: it is forwarded.
 */
export function inOwnZone(nets: Iterable<Network>, key: string): boolean {
  const name = keyToName(key);
  if (name.endsWith('.in-addr.arpa') || name.endsWith('.ip6.arpa')) return inReverseZone(nets, name);
  const starts = labelStarts(key);
  for (const n of nets) {
    const z = n.zoneKey;
    if (z === null) continue;
    for (const at of starts) if (at === 0 ? key === z : key.length - at === z.length && key.endsWith(z)) return true;
  }
  return false;
}

/** The block a reverse name stands for (its labels up to the arpa zone), as bytes and a prefix length. */
function reverseBlock(name: string): { bytes: Buffer; prefix: number } | null {
  const v4 = name.endsWith('.in-addr.arpa');
  const labels = name.slice(0, name.length - (v4 ? '.in-addr.arpa' : '.ip6.arpa').length).split('.').reverse();
  const bytes = Buffer.alloc(v4 ? 4 : 16);
  const per = v4 ? 8 : 4;
  let bits = 0;
  // Labels closest to the zone first; any label below a full address (or not a number) ends the block.
  for (const l of labels) {
    if (bits >= bytes.length * 8) break;
    if (v4) {
      if (!/^(0|[1-9][0-9]{0,2})$/.test(l) || Number(l) > 255) break;
      bytes[bits / 8] = Number(l);
    } else {
      if (!/^[0-9a-f]$/.test(l)) break;
      const i = bits >> 3;
      bytes[i] = bytes[i]! | (parseInt(l, 16) << (bits % 8 === 0 ? 4 : 0));
    }
    bits += per;
  }
  return bits === 0 ? null : { bytes, prefix: bits };
}

function inReverseZone(nets: Iterable<Network>, name: string): boolean {
  const block = reverseBlock(name);
  if (!block) return false;
  for (const n of nets)
    for (const s of n.subnets)
      if (s.bytes.length === block.bytes.length && block.prefix >= s.prefix && cidrContains(s, block.bytes)) return true;
  return false;
}
