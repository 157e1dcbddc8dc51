import { FlagsNew } from 'netlink';
import { type Cidr, afOf, cidrString, familyOf, ipBytes, ipFromBytes } from './inet.js';
import type { Rtnl } from './rtnl.js';

const RT_TABLE_MAIN = 254;

export interface Route {
  /** Destination; undefined means the default route of `family`. */
  readonly dst?: Cidr;
  readonly family?: 4 | 6;
  readonly gateway?: string;
  /** ifindex of the output link. */
  readonly oif?: number;
  readonly metric?: number;
  /**
   * The gateway is on the link whether or not an address's prefix route says so yet (RTNH_F_ONLINK):
   * lets the default route go in the same round trip as the address it would otherwise wait for.
   */
  readonly onlink?: boolean;
}

const RTNH_F_ONLINK = 4;

function routeFamily(r: Route): 4 | 6 {
  return r.dst?.family ?? (r.gateway ? familyOf(r.gateway) : (r.family ?? 4));
}

function describe(r: Route): string {
  return `route ${r.dst ? cidrString(r.dst) : 'default'}${r.gateway ? ` via ${r.gateway}` : ''}`;
}

function message(r: Route) {
  const family = routeFamily(r);
  const data = {
    family: afOf(family),
    dstLen: r.dst?.prefixLen ?? 0,
    table: RT_TABLE_MAIN,
    protocol: 'BOOT' as const,
    // no gateway: the destination is on the link itself
    scope: r.gateway ? ('UNIVERSE' as const) : ('LINK' as const),
    type: 'UNICAST' as const,
    ...(r.onlink ? { flags: { __unknown: RTNH_F_ONLINK } } : {}),
  };
  const attrs: { dst?: Buffer; gateway?: Buffer; oif?: number; priority?: number } = {};
  if (r.dst) attrs.dst = ipBytes(r.dst.address);
  if (r.gateway) attrs.gateway = ipBytes(r.gateway);
  if (r.oif) attrs.oif = r.oif;
  if (r.metric !== undefined) attrs.priority = r.metric;
  return { data, attrs };
}

export async function routeAdd(h: Rtnl, r: Route): Promise<void> {
  const { data, attrs } = message(r);
  await h.call('route add', describe(r), () =>
    h.sock.newRoute(data, attrs, { flags: FlagsNew.CREATE | FlagsNew.EXCL }),
  );
}

export async function routeDel(h: Rtnl, r: Route): Promise<void> {
  const { data, attrs } = message(r);
  await h.call('route del', describe(r), () => h.sock.delRoute(data, attrs));
}

/** The routes of the main table, for both families. */
export async function routeList(h: Rtnl): Promise<Route[]> {
  const msgs = await h.dump('route list', 'routes', (s) => s.getRoutes());
  const out: Route[] = [];
  for (const m of msgs) {
    if ((m.attrs.table ?? m.data.table) !== RT_TABLE_MAIN) continue;
    const family: 4 | 6 = m.data.family === 10 ? 6 : 4;
    const route: { dst?: Cidr; family: 4 | 6; gateway?: string; oif?: number } = { family };
    if (m.attrs.dst) route.dst = { family, address: ipFromBytes(m.attrs.dst), prefixLen: m.data.dstLen ?? 0 };
    if (m.attrs.gateway) route.gateway = ipFromBytes(m.attrs.gateway);
    if (m.attrs.oif) route.oif = m.attrs.oif;
    out.push(route);
  }
  return out;
}
