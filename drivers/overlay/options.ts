import { invalid } from '../../libnetwork/errors.js';
import { VNI_MAX, VNI_MIN } from '../../libnetwork/ipam/global.js';
import { DNS_ADDRESS, DRIVER_MTU, VXLANID_LIST } from '../../libnetwork/netlabel.js';

/** Docker's overlay key `encrypted`, which Docker's overlay takes with any value. */
export const ENCRYPTED = 'encrypted';

export const KNOWN_OPTIONS = [DRIVER_MTU, VXLANID_LIST, ENCRYPTED, DNS_ADDRESS];
/** Short forms: `-o vni=5000 -o mtu=1400`. */
export const ALIASES: Readonly<Record<string, string>> = { mtu: DRIVER_MTU, vni: VXLANID_LIST };

/** The UDP port of VXLAN (IANA; libnetwork's default, not the kernel's legacy 8472). */
export const VXLAN_PORT = 4789;
/** What VXLAN adds to each frame: outer IPv4 20 (IPv6 40) + UDP 8 + VXLAN 8 + inner Ethernet 14. */
export const VXLAN_OVERHEAD = { 4: 50, 6: 70 } as const;

/** The overlay driver's view of a network's options, parsed once. */
export interface OverlayConfig {
  /** The VNI asked for (`-o vni=N`); undefined: the cluster picks one. */
  readonly vni: number | undefined;
  /** The MTU asked for; undefined: the underlay's minus the VXLAN overhead, on each host. */
  readonly mtu: number | undefined;
  readonly encrypted: boolean;
  /** Where this host serves the network's DNS (the cluster chose it); undefined: nowhere. */
  readonly dns: string | undefined;
  /** Keys accepted and not acted on. */
  readonly ignored: readonly string[];
}

export function overlayConfig(options: Readonly<Record<string, string>>): OverlayConfig {
  const ignored = Object.keys(options).filter((k) => !KNOWN_OPTIONS.includes(k)).sort();
  let vni: number | undefined;
  const rawVni = options[VXLANID_LIST];
  if (rawVni !== undefined && rawVni !== '') {
    const list = rawVni.split(',');
    if (list.length > 1) throw invalid(`option vni="${rawVni}": a tnet overlay network has one VNI (one per network, not per subnet)`, 'option vni');
    vni = Number(list[0]);
    if (!/^\d+$/.test(list[0]!) || vni < VNI_MIN || vni > VNI_MAX)
      throw invalid(`option vni="${rawVni}" is not a VNI tnet hands out: ${VNI_MIN}-${VNI_MAX} (the lower ones are left to hand-made VXLANs)`, 'option vni');
  }
  let mtu: number | undefined;
  const rawMtu = options[DRIVER_MTU];
  if (rawMtu !== undefined && rawMtu !== '' && rawMtu !== '0') {
    mtu = Number(rawMtu);
    if (!/^\d+$/.test(rawMtu) || mtu < 1280 || mtu > 65535)
      throw invalid(`option mtu="${rawMtu}" must be a whole number from 1280 (IPv6's minimum) to 65535`, 'option mtu');
  }
  // Docker's overlay takes `-o encrypted` with any value, even empty; tnet follows, but an
  // explicit false is false.
  const rawEnc = options[ENCRYPTED];
  const encrypted = rawEnc !== undefined && !['false', '0', 'no', 'off'].includes(rawEnc.toLowerCase());
  return { vni, mtu, encrypted, dns: options[DNS_ADDRESS] || undefined, ignored };
}

// Names carry tnet's `t` prefix and a letter that is not a hex digit, so they never meet the
// other drivers' links. 15 bytes at most (IFNAMSIZ).
/** The network's bridge: `tov-` and 11 hex digits of its id. */
export const bridgeName = (networkId: string) => `tov-${networkId.slice(0, 11)}`;
/** The network's VXLAN device: `tvx-` and its VNI in hex (unique in a host's namespace, as the kernel wants). */
export const vxlanName = (vni: number) => `tvx-${vni.toString(16)}`;
/** An endpoint's veth, host end. */
export const hostVethName = (endpointId: string) => `tno${endpointId.slice(0, 12)}`;
/** An endpoint's veth left in the host namespace for dockerd to move. */
export const handoffName = (endpointId: string) => `tnq${endpointId.slice(0, 12)}`;
/** The namespace serving the network's DNS address on this host (the host namespace stays out of the segment). */
export const dnsNetnsName = (networkId: string, scope: string) => `tnd-${scope ? `${scope}-` : ''}${networkId.slice(0, 11)}`;
/** Its veth on the network's bridge, host end. */
export const dnsVethName = (networkId: string) => `tnr${networkId.slice(0, 11)}`;
