import { FlagsNew } from 'netlink';
import { type Cidr, afOf, cidrString, ipBytes, ipFromBytes } from './inet.js';
import type { Rtnl } from './rtnl.js';

/**
 * Adds an address to a link. IPv6 addresses skip duplicate address detection: tnet's IPAM
 * already guarantees uniqueness, and DAD would leave the address unusable ("tentative") for
 * about a second after every endpoint comes up.
 */
export async function addrAdd(h: Rtnl, ifindex: number, ifname: string, addr: Cidr): Promise<void> {
  const local = ipBytes(addr.address);
  await h.call('addr add', `${cidrString(addr)} on "${ifname}"`, () =>
    h.sock.newAddress(
      { family: afOf(addr.family), prefixlen: addr.prefixLen, index: ifindex, flags: addr.family === 6 ? { nodad: true } : {} },
      addr.family === 4 ? { local, address: local } : { address: local, flags: { nodad: true } },
      { flags: FlagsNew.CREATE | FlagsNew.EXCL },
    ),
  );
}

export async function addrDel(h: Rtnl, ifindex: number, ifname: string, addr: Cidr): Promise<void> {
  const local = ipBytes(addr.address);
  await h.call('addr del', `${cidrString(addr)} on "${ifname}"`, () =>
    h.sock.delAddress(
      { family: afOf(addr.family), prefixlen: addr.prefixLen, index: ifindex },
      addr.family === 4 ? { local, address: local } : { address: local },
    ),
  );
}

export interface LinkAddr extends Cidr {
  readonly ifindex: number;
}

export async function addrList(h: Rtnl): Promise<LinkAddr[]> {
  const msgs = await h.dump('addr list', 'addresses', (s) => s.getAddresses());
  const out: LinkAddr[] = [];
  for (const m of msgs) {
    const b = m.attrs.local ?? m.attrs.address;
    if (!b || (b.length !== 4 && b.length !== 16)) continue;
    out.push({
      family: b.length === 4 ? 4 : 6,
      address: ipFromBytes(b),
      prefixLen: m.data.prefixlen ?? 0,
      ifindex: m.data.index ?? 0,
    });
  }
  return out;
}
