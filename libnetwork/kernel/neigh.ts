import { FlagsNew } from 'netlink';
import { AF_BRIDGE, afOf, familyOf, ipBytes, macBytes } from './inet.js';
import type { Rtnl } from './rtnl.js';


/** A permanent neighbour (ARP/NDP) entry: `ip neigh replace IP lladdr MAC dev LINK`. */
export async function neighSet(h: Rtnl, ifindex: number, ip: string, mac: string): Promise<void> {
  await h.call('neigh set', `${ip} lladdr ${mac} on link ${ifindex}`, () =>
    h.sock.newNeighbor(
      { family: afOf(familyOf(ip)), ifindex, state: { permanent: true } },
      { dst: ipBytes(ip), lladdr: macBytes(mac) },
      { flags: FlagsNew.CREATE | FlagsNew.REPLACE },
    ),
  );
}

export async function neighDel(h: Rtnl, ifindex: number, ip: string): Promise<void> {
  await h.call('neigh del', `${ip} on link ${ifindex}`, () =>
    h.sock.delNeighbor({ family: afOf(familyOf(ip)), ifindex }, { dst: ipBytes(ip) }),
  );
}

/**
 * A static bridge FDB entry on a VXLAN device: frames for `mac` go to the VTEP `dst`
 * (`bridge fdb append MAC dev vx dst IP self permanent`).
 */
export async function fdbAppend(h: Rtnl, ifindex: number, mac: string, dst: string): Promise<void> {
  await h.call('fdb append', `${mac} dst ${dst} on link ${ifindex}`, () =>
    h.sock.newNeighbor(
      { family: AF_BRIDGE, ifindex, state: { permanent: true }, flags: { self: true } },
      { lladdr: macBytes(mac), dst: ipBytes(dst) },
      { flags: FlagsNew.CREATE | FlagsNew.APPEND },
    ),
  );
}

export async function fdbDel(h: Rtnl, ifindex: number, mac: string, dst: string): Promise<void> {
  await h.call('fdb del', `${mac} dst ${dst} on link ${ifindex}`, () =>
    h.sock.delNeighbor(
      { family: AF_BRIDGE, ifindex, flags: { self: true } },
      { lladdr: macBytes(mac), dst: ipBytes(dst) },
    ),
  );
}
