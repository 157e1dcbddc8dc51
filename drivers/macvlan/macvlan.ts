import type { Attachment, Driver, DriverContext, DriverFactory, DriverOptions, JoinTarget, StaticRoute } from '../../libnetwork/driverapi.js';
import { conflict, invalid, notFound } from '../../libnetwork/errors.js';
import {
  Netns, addrAdd, cidr, isErrno, linkAdd, linkByName, linkDelIfExists, linkList, linkSetAlias, linkSetMac, routeAdd, routeDel, withRtnl,
} from '../../libnetwork/kernel/index.js';
import type { Endpoint, Network, PortMapping } from '../../libnetwork/model.js';
import { netnsName } from '../../libnetwork/names.js';
import type { Txn } from '../../libnetwork/txn.js';
import {
  ALIASES, HOST_ACCESS, KNOWN_OPTIONS, MACVLAN_MODE, type MacvlanConfig, PARENT, handoffName, macvlanConfig, ownParentName, shimAddress, shimName,
} from './options.js';
import { type MadeParent, checkParent, deleteMadeParent, makeOwnParent, makeVlanParent, parentProblem, remakeParent } from './parent.js';

export const macvlanDriver: DriverFactory = {
  type: 'macvlan',
  scope: 'local',
  options: { keys: KNOWN_OPTIONS, aliases: ALIASES },
  create: (ctx) => new MacvlanDriver(ctx),
};

/** The driver's record of the parent it made for a network (store key). */
const madeKey = (networkId: string) => `made:${networkId}`;

/**
 * The macvlan driver: each endpoint is a macvlan sub-interface of the network's parent, born
 * directly in its sandbox (no veth, no bridge, no move), or left in the host namespace for
 * dockerd to move. The parent is the user's interface, an 802.1Q sub-interface tnet makes, or a
 * link tnet makes for an internal segment. With host access, a bridge-mode "shim" macvlan on the
 * parent gives the host a /32 route to each endpoint, and each endpoint an on-link route back.
 */
export class MacvlanDriver implements Driver {
  private readonly ctx: DriverContext;
  /** Parent ifindexes by name, looked up once rather than per endpoint (a round trip each). */
  private readonly parentIndexes = new Map<string, number>();
  private readonly shimIndexes = new Map<string, number>();

  constructor(ctx: DriverContext) {
    this.ctx = ctx;
  }

  private cfg(net: Pick<Network, 'options'>): MacvlanConfig {
    return macvlanConfig(net.options);
  }

  private parentOf(net: Pick<Network, 'id' | 'options'>): string {
    return this.cfg(net).parent ?? ownParentName(net.id);
  }

  /**
   * The tag of the links this driver keeps in the host namespace (its parents, shims, handed-off
   * endpoints). Not under the instance's `tnet:<instance>:` prefix: the core's reconcile removes
   * every link under that prefix that no network or endpoint record names, and a parent tnet made
   * is shared by every network on it while it carries the tag of the first (its own restore
   * below knows which parents are still used). Still this instance's and findable:
   * `tnet-macvlan:<instance>:network:<id>`.
   */
  private hostTag(kind: 'network' | 'endpoint', id: string): string {
    return this.ctx.tags.of(kind, id).replace(/^tnet:/, 'tnet-macvlan:');
  }

  private get hostPrefix(): string {
    return this.ctx.tags.prefix.replace(/^tnet:/, 'tnet-macvlan:');
  }

  hostIfname(): undefined {
    return undefined;
  }

  inspect(net: Network): Record<string, string> {
    const c = this.cfg(net);
    return {
      parent: this.parentOf(net),
      macvlan_mode: c.mode,
      host_access: String(c.hostAccess),
      ...(c.hostAccess ? { host_access_address: shimAddress(net.id), host_access_shim: shimName(net.id) } : {}),
      ...(c.ignored.length ? { ignored_options: c.ignored.join(',') } : {}),
    };
  }

  async checkNetwork(req: { id: string; internal: boolean; options: DriverOptions }): Promise<DriverOptions> {
    const c = macvlanConfig(req.options);
    if (c.hostAccess && c.mode === 'private')
      throw invalid('host_access needs the endpoints to talk to the host\'s shim on the parent, which private mode forbids; use bridge mode', `option ${HOST_ACCESS}`);
    if (c.parent !== undefined) await checkParent(this.ctx.rtnl, c.parent);
    const parent = c.parent ?? ownParentName(req.id);
    for (const other of this.ctx.networks()) {
      if (other.id === req.id || this.parentOf(other) !== parent) continue;
      const oc = this.cfg(other);
      if (c.mode === 'passthru' || oc.mode === 'passthru')
        throw conflict(
          `parent interface ${parent} is already used by macvlan network "${other.name}"${oc.mode === 'passthru' ? ' in passthru mode' : ''}; a passthru network needs its parent alone`,
          `option ${PARENT}`,
        );
    }
    for (const k of c.ignored) this.ctx.log.warn({ network: req.id.slice(0, 12), option: k }, `macvlan option "${k}" ignored: not a macvlan option (the driver acts on ${KNOWN_OPTIONS.join(', ')})`);
    return req.options;
  }

  async createNetwork(net: Network, t: Txn): Promise<void> {
    const c = this.cfg(net);
    const h = this.ctx.rtnl;
    const parent = this.parentOf(net);
    // Several networks may share a parent, as long as their subnets do not overlap: an address
    // on the segment must mean one endpoint.
    for (const other of this.ctx.networks()) {
      if (other.id === net.id || this.parentOf(other) !== parent) continue;
      for (const [a, b] of [[net.ipv4, other.ipv4], [net.ipv6, other.ipv6]] as const) {
        if (a && b && a.subnet.overlaps(b.subnet))
          throw conflict(`subnet ${a.subnet} overlaps ${b.subnet} of macvlan network "${other.name}" on the same parent ${parent}`, `network "${net.name}"`);
      }
    }
    let made: MadeParent | undefined;
    if (c.parent === undefined) {
      made = await t.step(`parent ${parent}`, () => makeOwnParent(h, parent, this.hostTag('network', net.id)), () => linkDelIfExists(h, parent));
    } else {
      const vlan = await checkParent(h, c.parent);
      if (vlan) made = await t.step(`parent ${parent}`, () => makeVlanParent(h, parent, vlan, this.hostTag('network', net.id)), () => linkDelIfExists(h, parent));
    }
    if (made) {
      const m = made;
      await t.step(`record parent ${parent}`, () => this.ctx.store.put(madeKey(net.id), JSON.stringify(m)), () => this.ctx.store.delete(madeKey(net.id)));
    }
    this.parentIndexes.delete(parent);
    if (c.hostAccess) {
      const shim = shimName(net.id);
      await t.step(`host access shim ${shim}`, () => this.makeShim(net), () => linkDelIfExists(h, shim));
    }
  }

  /** The host's bridge-mode macvlan on the parent, with the network's link-local /32. */
  private async makeShim(net: Network): Promise<void> {
    const h = this.ctx.rtnl;
    const shim = shimName(net.id);
    const created = await linkAdd(h, {
      kind: 'macvlan', name: shim, parent: await this.parentIndex(this.parentOf(net), true), mode: 'bridge', up: true, alias: this.hostTag('network', net.id),
    });
    const index = created.index ?? (await this.linkIndex(shim));
    this.shimIndexes.set(net.id, index);
    await addrAdd(h, index, shim, cidr(`${shimAddress(net.id)}/32`));
  }

  private async linkIndex(name: string): Promise<number> {
    const l = await linkByName(this.ctx.rtnl, name);
    if (!l) throw notFound(`link ${name} is gone`, `link "${name}"`);
    return l.index;
  }

  /** The parent's ifindex; a parent that is gone is an error naming it (Docker's words). */
  private async parentIndex(name: string, fresh = false): Promise<number> {
    let index = fresh ? undefined : this.parentIndexes.get(name);
    if (index === undefined) {
      const l = await linkByName(this.ctx.rtnl, name);
      if (!l) throw notFound(`the requested parent interface ${name} was not found on the host`, `link "${name}"`);
      const problem = parentProblem(l);
      if (problem) throw invalid(problem, `link "${name}"`);
      index = l.index;
      this.parentIndexes.set(name, index);
    }
    return index;
  }

  private async made(net: Pick<Network, 'id'>): Promise<MadeParent | undefined> {
    const v = await this.ctx.store.get(madeKey(net.id));
    return v === undefined ? undefined : (JSON.parse(v) as MadeParent);
  }

  async deleteNetwork(net: Network): Promise<void> {
    const h = this.ctx.rtnl;
    const shim = await linkByName(h, shimName(net.id));
    if (shim && shim.alias === this.hostTag('network', net.id)) await linkDelIfExists(h, shim.name);
    this.shimIndexes.delete(net.id);
    const made = (await this.made(net)) ?? (this.cfg(net).parent === undefined ? { name: ownParentName(net.id), kind: 'bridge' as const } : undefined);
    // A parent tnet made goes with the last network on it (a sub-interface others now use stays).
    const heir = this.ctx.networks().find((o) => o.id !== net.id && o.state !== 'deleting' && this.parentOf(o) === this.parentOf(net));
    if (made && heir) {
      // The parent tnet made outlives this network: the next network on it owns it now (its tag
      // and record), so the last one deletes it and a reboot still makes it again.
      await linkSetAlias(h, made.name, this.hostTag('network', heir.id)).catch((e: unknown) => {
        if (!isErrno(e, 'ENODEV')) throw e;
      });
      await this.ctx.store.put(madeKey(heir.id), JSON.stringify(made));
    } else if (made) {
      await deleteMadeParent(h, made, (alias) => alias === this.hostTag('network', net.id) || (alias?.startsWith(this.hostPrefix) ?? false));
    }
    this.parentIndexes.delete(this.parentOf(net));
    await this.ctx.store.delete(madeKey(net.id));
  }

  async join(net: Network, ep: Endpoint, target: JoinTarget, t: Txn): Promise<Attachment> {
    const c = this.cfg(net);
    const h = this.ctx.rtnl;
    const parentName = this.parentOf(net);
    const gateways = net.internal ? {} : { gateway4: net.ipv4?.gateway, gateway6: net.ipv6?.gateway };
    const staticRoutes: StaticRoute[] = c.hostAccess && ep.ipv4 ? [{ destination: `${shimAddress(net.id)}/32` }] : [];
    const make = async (parent: number) => {
      try {
        if (target.kind === 'handoff')
          return await linkAdd(h, { kind: 'macvlan', name: handoffName(ep.id), parent, mode: c.mode, mac: ep.mac, alias: this.hostTag('endpoint', ep.id) });
        return await linkAdd(h, { kind: 'macvlan', name: target.ifname, parent, mode: c.mode, mac: ep.mac, ns: target.ns, alias: this.ctx.tags.of('endpoint', ep.id) });
      } catch (e) {
        // The kernel's EINVAL for a second child of a passthru parent says nothing of why.
        if (c.mode === 'passthru' && isErrno(e, 'EINVAL'))
          throw conflict(
            `macvlan network "${net.name}" is in passthru mode: its parent ${parentName} takes a single endpoint and already has one (use bridge mode for several)`,
            `network "${net.name}"`,
          );
        throw e;
      }
    };
    await t.step(
      `macvlan of ${ep.name}`,
      async () => {
        try {
          return await make(await this.parentIndex(parentName));
        } catch (e) {
          // A cached index of a parent that was deleted and made again behind our back.
          if (!isErrno(e, 'ENODEV')) throw e;
          return await make(await this.parentIndex(parentName, true));
        }
      },
      () => (target.kind === 'handoff' ? linkDelIfExists(h, handoffName(ep.id)) : withRtnl(target.ns, (s) => linkDelIfExists(s, target.ifname))),
    );
    if (c.mode === 'passthru' && target.kind === 'sandbox') {
      // A passthru child is born with the parent's MAC; giving it the endpoint's sets the parent's
      // too (as Docker's does), and the kernel gives the parent its own back when the child goes.
      await withRtnl(target.ns, (s) => linkSetMac(s, target.ifname, ep.mac));
    }
    if (c.hostAccess && ep.ipv4) {
      const dst = cidr(`${ep.ipv4}/32`);
      const oif = await this.shimIndex(net);
      await t.step(`host route to ${ep.ipv4}`, () => routeAdd(h, { dst, oif }), () => routeDel(h, { dst, oif }).catch(() => undefined));
    }
    if (target.kind === 'handoff') return { where: 'handoff', srcName: handoffName(ep.id), ...gateways, staticRoutes };
    return { where: 'sandbox', ...gateways, staticRoutes };
  }

  private async shimIndex(net: Network, fresh = false): Promise<number> {
    let index = fresh ? undefined : this.shimIndexes.get(net.id);
    if (index === undefined) {
      index = await this.linkIndex(shimName(net.id));
      this.shimIndexes.set(net.id, index);
    }
    return index;
  }

  /**
   * A Docker endpoint: its macvlan is still in the host namespace (not yet moved). A lab
   * endpoint: its sandbox holds a macvlan of that name carrying this endpoint's tag.
   */
  async endpointIntact(net: Network, ep: Endpoint): Promise<boolean> {
    if (ep.sandboxId === undefined) return (await linkByName(this.ctx.rtnl, handoffName(ep.id)))?.alias === this.hostTag('endpoint', ep.id);
    try {
      const l = await withRtnl(Netns.named(netnsName(this.ctx.scope, ep.name)), (s) => linkByName(s, ep.ifname));
      return l !== undefined && l.kind === 'macvlan' && l.alias === this.ctx.tags.of('endpoint', ep.id);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return false; // the sandbox's namespace is gone
      throw e;
    }
  }

  async leave(net: Network, ep: Endpoint, _how: { sandboxGoing: boolean }): Promise<void> {
    const h = this.ctx.rtnl;
    if (this.cfg(net).hostAccess && ep.ipv4) {
      const oif = await this.shimIndex(net).catch(() => undefined);
      if (oif !== undefined) {
        await routeDel(h, { dst: cidr(`${ep.ipv4}/32`), oif }).catch((e: unknown) => {
          if (!isErrno(e, 'ESRCH', 'ENOENT', 'ENODEV')) throw e;
        });
      }
    }
    // A sandbox's macvlan goes with the namespace or is removed by the core; one handed to
    // dockerd and never moved is still here.
    if (ep.sandboxId === undefined) await linkDelIfExists(h, handoffName(ep.id));
  }

  async restore(nets: readonly Network[], eps: readonly Endpoint[]): Promise<void> {
    const h = this.ctx.rtnl;
    this.parentIndexes.clear();
    this.shimIndexes.clear();
    const links = await linkList(h);
    const byName = new Map(links.map((l) => [l.name, l]));
    const wanted = new Set([...nets.map((n) => this.hostTag('network', n.id)), ...eps.map((e) => this.hostTag('endpoint', e.id))]);
    // What this instance made in the host namespace and no longer wants: endpoints and shims
    // first, then the parents they sit on.
    const stale = links.filter((l) => l.alias?.startsWith(this.hostPrefix) && !wanted.has(l.alias));
    stale.sort((a, b) => Number(a.kind !== 'macvlan') - Number(b.kind !== 'macvlan'));
    for (const l of stale) {
      this.ctx.log.info({ link: l.name, tag: l.alias }, 'reconcile: removing a link tnet no longer wants');
      await linkDelIfExists(h, l.name);
    }
    for (const net of nets) {
      const made = await this.made(net);
      if (made && !byName.has(made.name)) {
        this.ctx.log.info({ network: net.name, parent: made.name }, 'reconcile: making the parent again');
        await remakeParent(h, made, this.hostTag('network', net.id)).catch((err) =>
          this.ctx.log.error({ err, network: net.name, parent: made.name }, 'reconcile: the parent cannot be made; its endpoints cannot work'),
        );
      }
      const c = this.cfg(net);
      if (!c.hostAccess) continue;
      const shim = byName.get(shimName(net.id));
      if (!shim || shim.alias !== this.hostTag('network', net.id)) {
        this.ctx.log.info({ network: net.name }, 'reconcile: making the host access shim again');
        if (shim) await linkDelIfExists(h, shim.name);
        try {
          await this.makeShim(net);
        } catch (err) {
          this.ctx.log.error({ err, network: net.name }, 'reconcile: the host access shim cannot be made');
          continue;
        }
      }
      const oif = await this.shimIndex(net, true);
      for (const ep of eps) {
        if (ep.networkId !== net.id || !ep.ipv4) continue;
        await routeAdd(h, { dst: cidr(`${ep.ipv4}/32`), oif }).catch((e: unknown) => {
          if (!isErrno(e, 'EEXIST')) throw e;
        });
      }
    }
  }
}

export { MACVLAN_MODE, PARENT, HOST_ACCESS };
