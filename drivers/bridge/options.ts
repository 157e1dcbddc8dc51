import { isIPv4 } from 'node:net';
import { invalid } from '../../libnetwork/errors.js';
import { ifnameProblem } from '../../libnetwork/kernel/ifname.js';
import {
  BRIDGE_NAME,
  DRIVER_MTU,
  ENABLE_ICC,
  ENABLE_IP_MASQUERADE,
  HOST_BINDING_IPV4,
} from '../../libnetwork/netlabel.js';

/** The bridge driver's view of a network's options, parsed once. */
export interface BridgeConfig {
  readonly bridge: string;
  readonly icc: boolean;
  readonly masquerade: boolean;
  readonly mtu: number | undefined;
  /** Default host address for published ports ('' = every address). */
  readonly hostBindingIpv4: string;
}

export const KNOWN_OPTIONS = [BRIDGE_NAME, ENABLE_ICC, ENABLE_IP_MASQUERADE, HOST_BINDING_IPV4, DRIVER_MTU];

/** Short forms for people typing `tnet network create -d bridge -o name=br0`. */
export const ALIASES: Readonly<Record<string, string>> = {
  name: BRIDGE_NAME,
  bridge: BRIDGE_NAME,
  icc: ENABLE_ICC,
  masquerade: ENABLE_IP_MASQUERADE,
  'host-binding-ipv4': HOST_BINDING_IPV4,
  mtu: DRIVER_MTU,
};

/** The default bridge name: tnet's prefix and the first 12 hex digits of the network id (15 bytes). */
export const defaultBridgeName = (networkId: string) => `tn-${networkId.slice(0, 12)}`;

/** Go's strconv.ParseBool, which is what Docker users' values were written for. */
function parseBool(key: string, v: string): boolean {
  if (['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v)) return true;
  if (['0', 'f', 'F', 'false', 'FALSE', 'False'].includes(v)) return false;
  throw invalid(`option ${key}="${v}" is not a boolean (use true or false)`, `option ${key}`);
}

export function bridgeConfig(networkId: string, options: Readonly<Record<string, string>>): BridgeConfig {
  for (const key of Object.keys(options)) {
    if (!KNOWN_OPTIONS.includes(key))
      throw invalid(`unknown bridge option "${key}"; known options: ${KNOWN_OPTIONS.join(', ')}`, `option ${key}`);
  }
  const bridge = options[BRIDGE_NAME] ?? defaultBridgeName(networkId);
  const problem = ifnameProblem(bridge);
  if (problem) throw invalid(`bridge name "${bridge}" ${problem}`, `option ${BRIDGE_NAME}`);
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
  };
}
