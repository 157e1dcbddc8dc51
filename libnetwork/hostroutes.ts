import { Subnet } from './ipam/subnet.js';
import { type Rtnl, routeList } from './kernel/index.js';

/** Destinations of the host's routes (not the default route): auto-chosen pools must not shadow them. */
export async function hostRoutes(rtnl: Rtnl): Promise<Subnet[]> {
  const out: Subnet[] = [];
  for (const r of await routeList(rtnl)) {
    if (!r.dst || r.dst.prefixLen === 0) continue;
    try {
      out.push(Subnet.parse(`${r.dst.address}/${r.dst.prefixLen}`));
    } catch {
      /* a route with host bits set overlaps the same pools as its subnet */
    }
  }
  return out;
}
