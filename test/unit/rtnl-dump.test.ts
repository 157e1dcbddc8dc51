/**
 * Dumps (every link, address, route) share nothing with the other requests on a handle: mixed in
 * any order with each other and with plain requests on one handle, all succeed (no root: these
 * only read the test's own namespace). On one shared socket they failed with EBUSY (two dumps) or
 * "Multipart message not terminated properly" (another reply inside a dump), which is what made
 * parallel `tnet network create` fail.
 */
import { describe, expect, it } from 'vitest';
import { Rtnl, addrList, linkByName, linkList, routeList } from '../../libnetwork/kernel/index.js';

describe('netlink dumps on a shared handle', () => {
  it('120 dumps and lookups in flight together on one handle: all succeed, all alike', async () => {
    const h = Rtnl.open();
    try {
      const ops = [routeList, linkList, addrList, (x: Rtnl) => linkByName(x, 'lo')] as const;
      const r = await Promise.allSettled(Array.from({ length: 120 }, (_, i) => ops[i % 4]!(h)));
      expect(r.filter((x) => x.status === 'rejected').map((x) => String((x as PromiseRejectedResult).reason))).toEqual([]);
      const links = r.filter((_, i) => i % 4 === 1).map((x) => JSON.stringify((x as PromiseFulfilledResult<unknown>).value));
      expect(new Set(links).size).toBe(1);
    } finally {
      h.close();
    }
  });
});
