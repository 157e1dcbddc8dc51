import { FlagsNew } from 'netlink';
import { AF_BRIDGE, AF_INET, AF_INET6, afOf, familyOf, ipBytes, ipFromBytes, macBytes, macString } from './inet.js';
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

export async function fdbDel(h: Rtnl, ifindex: number, mac: string, dst: string): Promise<void> {
  await h.call('fdb del', `${mac} dst ${dst} on link ${ifindex}`, () =>
    h.sock.delNeighbor(
      { family: AF_BRIDGE, ifindex, flags: { self: true } },
      { lladdr: macBytes(mac), dst: ipBytes(dst) },
    ),
  );
}

/**
 * A static bridge FDB entry on a VXLAN device, replacing any for the same MAC: frames for `mac`
 * go to the VTEP `dst` (`bridge fdb replace MAC dev vx dst IP self permanent`). Replace, not
 * append: an endpoint that moved to another host has one destination, never two.
 */
export async function fdbSet(h: Rtnl, ifindex: number, mac: string, dst: string): Promise<void> {
  await h.call('fdb set', `${mac} dst ${dst} on link ${ifindex}`, () =>
    h.sock.newNeighbor(
      { family: AF_BRIDGE, ifindex, state: { permanent: true }, flags: { self: true } },
      { lladdr: macBytes(mac), dst: ipBytes(dst) },
      { flags: FlagsNew.CREATE | FlagsNew.REPLACE },
    ),
  );
}

/** A permanent entry of one link: a neighbour (IP -> MAC) or an FDB entry (MAC -> VTEP `dst`). */
export interface StaticEntry {
  readonly ip: string;
  readonly mac: string;
}

/** The permanent neighbour entries (IPv4 and IPv6) of a link: `ip neigh show dev LINK nud permanent`. */
export async function neighList(h: Rtnl, ifindex: number): Promise<StaticEntry[]> {
  const msgs = await h.dump('neigh list', `link ${ifindex}`, (s) => s.getNeighbors({ ifindex }));
  const out: StaticEntry[] = [];
  for (const m of msgs) {
    if (m.data.ifindex !== ifindex || !m.data.state?.permanent || !m.attrs.dst || !m.attrs.lladdr) continue;
    if (m.data.family !== AF_INET && m.data.family !== AF_INET6) continue;
    out.push({ ip: ipFromBytes(m.attrs.dst), mac: macString(m.attrs.lladdr)! });
  }
  return out;
}

/** The permanent FDB entries of a VXLAN link that name a destination: `bridge fdb show dev LINK` (ip = the VTEP). */
export async function fdbList(h: Rtnl, ifindex: number): Promise<StaticEntry[]> {
  const msgs = await h.dump('fdb list', `link ${ifindex}`, (s) => s.getNeighbors({ family: AF_BRIDGE, ifindex }));
  const out: StaticEntry[] = [];
  for (const m of msgs) {
    if (m.data.ifindex !== ifindex || !m.data.state?.permanent || !m.attrs.dst || !m.attrs.lladdr) continue;
    out.push({ ip: ipFromBytes(m.attrs.dst), mac: macString(m.attrs.lladdr)! });
  }
  return out;
}

/**
 * Forgets what a bridge learned about `mac` on one of its ports (`bridge fdb del MAC dev PORT
 * master`): an address that moved leaves no entry sending its frames the old way until ageing.
 */
export async function fdbForgetLearned(h: Rtnl, port: number, mac: string): Promise<void> {
  await h.call('fdb del', `${mac} learned on port ${port}`, () =>
    h.sock.delNeighbor({ family: AF_BRIDGE, ifindex: port, flags: { master: true } }, { lladdr: macBytes(mac) }),
  );
}
