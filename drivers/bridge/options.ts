import { isIPv4 } from 'node:net';
import { invalid } from '../../libnetwork/errors.js';
import { ifnameProblem } from '../../libnetwork/kernel/ifname.js';
import {
  BRIDGE_NAME,
  CONTAINER_IFACE_PREFIX,
  DEFAULT_BRIDGE,
  DRIVER_MTU,
  ENABLE_ICC,
  ENABLE_IP_MASQUERADE,
  ENABLE_IPV6,
  HOST_BINDING_IPV4,
  INHIBIT_IPV4,
} from '../../libnetwork/netlabel.js';

/** The prefix when no option names one: Docker's. */
export const DEFAULT_IFACE_PREFIX = 'eth';

/** An option that was accepted and not acted on, and why: the log and `network inspect` say so. */
export interface IgnoredOption {
  readonly key: string;
  readonly why: string;
}

/** The bridge driver's view of a network's options, parsed once. */
export interface BridgeConfig {
  readonly bridge: string;
  readonly icc: boolean;
  readonly masquerade: boolean;
  readonly mtu: number | undefined;
  /** Default host address for published ports ('' = every address). */
  readonly hostBindingIpv4: string;
  /** The name prefix of the endpoint's interface inside the sandbox: Docker's DstPrefix; lab sandboxes get PREFIX0, PREFIX1... */
  readonly ifacePrefix: string;
  /** Keys accepted and ignored, sorted: what Docker's bridge does with keys it does not know (it never refuses them). */
  readonly ignored: readonly IgnoredOption[];
}

/** The keys the bridge acts on. */
export const HONOURED_OPTIONS = [BRIDGE_NAME, ENABLE_ICC, ENABLE_IP_MASQUERADE, HOST_BINDING_IPV4, DRIVER_MTU, CONTAINER_IFACE_PREFIX];

/**
 * Keys Docker's bridge knows and tnet does not act on: their values are still checked (Docker
 * refuses a bad one), then they are reported as ignored, with the reason.
 */
const ACCEPTED_UNUSED: Readonly<Record<string, string>> = {
  [INHIBIT_IPV4]: 'tnet always gives the bridge its IPv4 gateway address',
  [DEFAULT_BRIDGE]: "only dockerd's own default bridge (docker0) uses it",
  [ENABLE_IPV6]: 'IPv6 is chosen with --ipv6',
};

/** Every key the bridge knows: the ones it honours and the ones it checks and ignores. */
export const KNOWN_OPTIONS = [...HONOURED_OPTIONS, ...Object.keys(ACCEPTED_UNUSED)];

/** Short forms for people typing `tnet network create -d bridge -o name=br0`. */
export const ALIASES: Readonly<Record<string, string>> = {
  name: BRIDGE_NAME,
  bridge: BRIDGE_NAME,
  icc: ENABLE_ICC,
  masquerade: ENABLE_IP_MASQUERADE,
  'host-binding-ipv4': HOST_BINDING_IPV4,
  mtu: DRIVER_MTU,
  'iface-prefix': CONTAINER_IFACE_PREFIX,
};

/** The default bridge name: tnet's prefix and the first 12 hex digits of the network id (15 bytes). */
export const defaultBridgeName = (networkId: string) => `tn-${networkId.slice(0, 12)}`;

/** Go's strconv.ParseBool, which is what Docker users' values were written for. */
function parseBool(key: string, v: string): boolean {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(v)) return false;
  throw invalid(`option ${key}="${v}" is not a boolean (use true or false)`, `option ${key}`);
}

/**
 * Why an interface name given in an option cannot be used as given, or undefined. Besides what
 * the kernel refuses, a '%' makes the kernel pick the name itself (`br%d` becomes br0, br1...),
 * so tnet would not find its own link again.
 */
function nameProblem(name: string): string | undefined {
  if (name.includes('%')) return 'contains "%", which the kernel replaces with a number of its choosing';
  return ifnameProblem(name);
}

/**
 * Parses a network's options (full keys). Refuses a bad value of a known key, with the reason;
 * accepts any other key and lists it in `ignored` (the caller says so in the log), as Docker's
 * bridge driver ignores the keys it does not know, so `driver_opts` in a compose file never break
 * a network.
 */
export function bridgeConfig(networkId: string, options: Readonly<Record<string, string>>): BridgeConfig {
  const ignored: IgnoredOption[] = [];
  for (const key of Object.keys(options).sort()) {
    if (HONOURED_OPTIONS.includes(key)) continue;
    const why = ACCEPTED_UNUSED[key];
    if (why !== undefined) {
      parseBool(key, options[key]!);
      ignored.push({ key, why });
    } else {
      ignored.push({ key, why: `not a bridge option (the bridge acts on ${HONOURED_OPTIONS.join(', ')})` });
    }
  }
  const bridge = options[BRIDGE_NAME] ?? defaultBridgeName(networkId);
  const problem = nameProblem(bridge);
  if (problem) throw invalid(`bridge name "${bridge}" ${problem}`, `option ${BRIDGE_NAME}`);
  const ifacePrefix = options[CONTAINER_IFACE_PREFIX] ?? DEFAULT_IFACE_PREFIX;
  // The first interface is PREFIX0: that name must be one the kernel takes as it is.
  if (ifacePrefix === '') throw invalid('container interface prefix is empty', `option ${CONTAINER_IFACE_PREFIX}`);
  const prefixProblem = nameProblem(`${ifacePrefix}0`);
  if (prefixProblem)
    throw invalid(`container interface prefix "${ifacePrefix}" makes no valid interface name: "${ifacePrefix}0" ${prefixProblem}`, `option ${CONTAINER_IFACE_PREFIX}`);
  let mtu: number | undefined;
  const mtuText = options[DRIVER_MTU];
  if (mtuText !== undefined) {
    mtu = Number(mtuText);
    if (!/^\d+$/.test(mtuText) || mtu < 68 || mtu > 65535)
      throw invalid(`MTU "${mtuText}" must be a whole number from 68 to 65535`, `option ${DRIVER_MTU}`);
  }
  const hostIp = options[HOST_BINDING_IPV4] ?? '';
  if (hostIp !== '' && !isIPv4(hostIp))
    throw invalid(`host binding address "${hostIp}" is not an IPv4 address`, `option ${HOST_BINDING_IPV4}`);
  return {
    bridge,
    icc: options[ENABLE_ICC] === undefined ? true : parseBool(ENABLE_ICC, options[ENABLE_ICC]),
    masquerade:
      options[ENABLE_IP_MASQUERADE] === undefined ? true : parseBool(ENABLE_IP_MASQUERADE, options[ENABLE_IP_MASQUERADE]),
    mtu,
    hostBindingIpv4: hostIp === '0.0.0.0' ? '' : hostIp,
    ifacePrefix,
    ignored,
  };
}
