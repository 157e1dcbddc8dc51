import { invalid } from '../../libnetwork/errors.js';
import { ifnameProblem } from '../../libnetwork/kernel/ifname.js';
import type { MacvlanMode } from '../../libnetwork/kernel/index.js';

/** Docker's macvlan keys, as `docker network create -d macvlan -o parent=eth0 -o macvlan_mode=bridge` sends them. */
export const PARENT = 'parent';
export const MACVLAN_MODE = 'macvlan_mode';
/**
 * tnet's own key: `host_access=true` gives the host a way to its macvlan endpoints (and theirs to
 * it), which the kernel otherwise filters (a macvlan child never talks to its parent).
 */
export const HOST_ACCESS = 'host_access';

/** The keys the macvlan driver acts on. */
export const KNOWN_OPTIONS = [PARENT, MACVLAN_MODE, HOST_ACCESS];
/** Short forms for people typing `tnet network create -d macvlan -o mode=private`. */
export const ALIASES: Readonly<Record<string, string>> = { mode: MACVLAN_MODE, master: PARENT, 'host-access': HOST_ACCESS };

const MODES: readonly MacvlanMode[] = ['bridge', 'private', 'vepa', 'passthru'];

/** A parent that does not exist yet and that tnet makes: an 802.1Q sub-interface BASE.VID. */
export interface VlanParent {
  readonly base: string;
  readonly vid: number;
}

/** The macvlan driver's view of a network's options, parsed once. */
export interface MacvlanConfig {
  /** The parent named by the user; undefined: a parent tnet makes and owns (an internal segment). */
  readonly parent: string | undefined;
  readonly mode: MacvlanMode;
  readonly hostAccess: boolean;
  /** Keys accepted and not acted on, sorted (Docker's macvlan driver ignores keys it does not know). */
  readonly ignored: readonly string[];
}

/** Go's strconv.ParseBool, which is what Docker users' values were written for. */
function parseBool(key: string, v: string): boolean {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(v)) return false;
  throw invalid(`option ${key}="${v}" is not a boolean (use true or false)`, `option ${key}`);
}

/** Parses a network's options (full keys): a bad value of a known key is refused with the reason. */
export function macvlanConfig(options: Readonly<Record<string, string>>): MacvlanConfig {
  const ignored = Object.keys(options).filter((k) => !KNOWN_OPTIONS.includes(k)).sort();
  const rawMode = options[MACVLAN_MODE] ?? '';
  // Docker: an empty mode is bridge; anything else unknown is refused with this message.
  const mode = (rawMode === '' ? 'bridge' : rawMode) as MacvlanMode;
  if (!MODES.includes(mode))
    throw invalid(`requested macvlan mode '${rawMode}' is not valid, 'bridge' mode is the macvlan driver default (modes: ${MODES.join(', ')})`, `option ${MACVLAN_MODE}`);
  const parent = options[PARENT] === '' ? undefined : options[PARENT];
  if (parent !== undefined) {
    if (parent === 'lo') throw invalid('loopback interface is not a valid macvlan parent link', `option ${PARENT}`);
    const problem = ifnameProblem(parent);
    if (problem) throw invalid(`parent interface name "${parent}" ${problem}`, `option ${PARENT}`);
  }
  const hostAccess = options[HOST_ACCESS] === undefined ? false : parseBool(HOST_ACCESS, options[HOST_ACCESS]);
  if (hostAccess && mode === 'passthru')
    throw invalid('host_access needs a second macvlan on the parent, which passthru mode forbids; use bridge mode', `option ${HOST_ACCESS}`);
  return { parent, mode, hostAccess, ignored };
}

/**
 * The 802.1Q sub-interface a parent name asks for (eth0.10), with Docker's checks and messages;
 * called for a parent that does not exist.
 */
export function vlanParent(name: string): VlanParent {
  const parts = name.split('.');
  if (parts.length !== 2 || parts[0] === '' || parts[1] === '')
    throw invalid(
      `parent interface "${name}" does not exist, and is not an 802.1Q sub-interface name to make (example formatting is eth0.10)`,
      `option ${PARENT}`,
    );
  const vid = Number(parts[1]);
  if (!/^\d+$/.test(parts[1]!) || vid < 1 || vid > 4094) throw invalid(`vlan id must be between 1-4094, received: ${parts[1]}`, `option ${PARENT}`);
  return { base: parts[0]!, vid };
}

// Names carry tnet's `tn` prefix, then a letter that is not a hex digit, so they never meet the
// bridge driver's `tn-<12 hex>` bridges or `tn<12 hex>` veths. 15 bytes at most (IFNAMSIZ).
/** The parent tnet makes for a network without one: `tnm-` and 11 hex digits of the id. */
export const ownParentName = (networkId: string) => `tnm-${networkId.slice(0, 11)}`;
/** The host's shim macvlan of a network with host access. */
export const shimName = (networkId: string) => `tnh-${networkId.slice(0, 11)}`;
/** An endpoint's macvlan left in the host namespace for dockerd to move. */
export const handoffName = (endpointId: string) => `tnv${endpointId.slice(0, 12)}`;

/**
 * The shim's address: a link-local /32 derived from the network's id, so it takes nothing from
 * the segment's subnet (whose addresses belong to the LAN's own hosts and tnet's IPAM) and needs
 * no reservation. The endpoints get an on-link route to it; the host routes each endpoint's /32
 * through the shim.
 */
export function shimAddress(networkId: string): string {
  const a = parseInt(networkId.slice(0, 2), 16) % 254;
  const b = parseInt(networkId.slice(2, 4), 16) % 254;
  // 169.254.0.0/24 and 169.254.255.0/24 are reserved (RFC 3927); 169.254.169.254 is the clouds' metadata service.
  const third = a === 168 ? 170 : a + 1;
  return `169.254.${third}.${b + 1}`;
}
