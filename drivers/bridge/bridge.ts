import type { Attachment, Driver, DriverContext, DriverFactory, DriverFinding, DriverOptions, JoinTarget } from '../../libnetwork/driverapi.js';
import { conflict } from '../../libnetwork/errors.js';
import { failpoint } from '../../libnetwork/failpoint.js';
import {
  addrAdd, cidr, isErrno, linkAdd, linkByName, linkDelIfExists, linkGet, linkList, linkSetAlias, linkSetHairpin, sysctlSet,
} from '../../libnetwork/kernel/index.js';
import type { Endpoint, Network, PortMapping } from '../../libnetwork/model.js';
import type { Txn } from '../../libnetwork/txn.js';
import * as fw from './firewall.js';
import { Proxies, type ProxySpec } from './proxy.js';
import { ALIASES, type BridgeConfig, KNOWN_OPTIONS, bridgeConfig } from './options.js';

export const bridgeDriver: DriverFactory = {
  type: 'bridge',
  scope: 'local',
  options: { keys: KNOWN_OPTIONS, aliases: ALIASES },
  create: (ctx) => new BridgeDriver(ctx),
};

/**
 * A bridge's own MAC, fixed (locally administered, from the network's id). Without one the kernel
 * gives the bridge the lowest MAC of its ports, which changes when that port's endpoint goes: the
 * other containers' ARP entry for the gateway then points at a MAC nobody has, and they lose the
 * gateway until it ages out (seen here: a disconnect cut its neighbours off for seconds).
 */
export const bridgeMac = (networkId: string) => `06:${networkId.slice(0, 10).match(/../g)!.join(':')}`;

/**
 * The bridge driver: one Linux bridge per network holding the gateway address, one veth per
 * endpoint (the host end enslaved to the bridge, the other end born in the sandbox), NAT and
 * isolation in tnet's nftables table.
 */
export class BridgeDriver implements Driver {
  private readonly ctx: DriverContext;
  /** This instance's nft table: several tnet instances on one host each keep their own. */
  private readonly fw: fw.Firewall;
  private forwardingOn = { 4: false, 6: false };
  /** Networks this driver has made: its nft table exists exactly while this is not empty. */
  private readonly live = new Set<string>();
  private readonly bridgeIndexes = new Map<string, number>();
  /** Listeners for what NAT cannot serve of published ports (IPv6 to IPv4 containers, [::1]). */
  private readonly proxies: Proxies;

  constructor(ctx: DriverContext) {
    this.ctx = ctx;
    this.fw = new fw.Firewall(fw.tableName(ctx.scope));
    this.proxies = new Proxies(ctx.log);
  }

  /** The proxies' sockets close; the kernel objects stay (restore() starts the proxies again). */
  close(): void {
    this.proxies.closeAll();
  }

  private cfg(net: Pick<Network, 'id' | 'options'>): BridgeConfig {
    return bridgeConfig(net.id, net.options);
  }

  private fwNet(net: Network): fw.FirewallNet {
    const c = this.cfg(net);
    return {
      id: net.id,
      bridge: c.bridge,
      internal: net.internal,
      icc: c.icc,
      masquerade: c.masquerade,
      subnet4: net.ipv4?.subnet,
      subnet6: net.ipv6?.subnet,
    };
  }

  private tag(kind: 'network' | 'endpoint', id: string): string {
    return this.ctx.tags.of(kind, id);
  }

  hostIfname(ep: Pick<Endpoint, 'id'>): string {
    return `tn${ep.id.slice(0, 12)}`;
  }

  /** What `network inspect` shows: the bridge, the container interface prefix, and the options accepted and ignored. */
  inspect(net: Network): Record<string, string> {
    const c = this.cfg(net);
    return {
      bridge: c.bridge,
      container_iface_prefix: c.ifacePrefix,
      ...(c.ignored.length ? { ignored_options: c.ignored.map((i) => i.key).join(',') } : {}),
    };
  }

  ifacePrefix(net: Network): string {
    return this.cfg(net).ifacePrefix;
  }

  defaultHostIp(net: Network): string {
    return this.cfg(net).hostBindingIpv4;
  }

  async checkNetwork(req: { id: string; internal: boolean; options: DriverOptions }): Promise<DriverOptions> {
    const c = bridgeConfig(req.id, req.options);
    const existing = await linkByName(this.ctx.rtnl, c.bridge);
    if (existing) {
      const owner = existing.alias?.startsWith('tnet:') ? `tnet (${existing.alias})` : 'something other than tnet';
      throw conflict(`bridge name "${c.bridge}" is already taken by a ${existing.kind ?? 'link'} owned by ${owner}`, `bridge "${c.bridge}"`);
    }
    // Accepted, as Docker's bridge accepts keys it does not know (compose driver_opts), but said.
    for (const i of c.ignored) this.ctx.log.warn({ network: req.id.slice(0, 12), option: i.key }, `bridge option "${i.key}" ignored: ${i.why}`);
    return req.options;
  }

  async createNetwork(net: Network, t: Txn): Promise<void> {
    const c = this.cfg(net);
    const h = this.ctx.rtnl;
    // The kernel ignores an alias on RTM_NEWLINK, so the bridge exists untagged for a moment. The
    // intent row names it (c.bridge, from the network's id or its recorded options) and
    // checkNetwork found the name free before that row was written: a bridge of that name with no
    // tag is this network's, and deleteNetwork and restore treat it so.
    await t.step(
      `bridge ${c.bridge}`,
      async () => {
        await linkAdd(h, { kind: 'bridge', name: c.bridge, mtu: c.mtu, up: true, mac: bridgeMac(net.id) });
        failpoint('create-network:bridge-untagged');
        await linkSetAlias(h, c.bridge, this.tag('network', net.id));
      },
      () => linkDelIfExists(h, c.bridge),
    );
    await this.configureBridge(net, c);
    const fnet = this.fwNet(net);
    if (this.live.size === 0) this.ctx.nft.apply(`create table ${this.fw.table}`, this.fw.rebuild([], new Map()));
    await t.step(
      `firewall for ${c.bridge}`,
      () => this.ctx.nft.apply(`add network ${net.name}`, this.fw.addNetwork(fnet)),
      () => this.ctx.nft.apply(`remove network ${net.name}`, this.fw.deleteNetwork(fnet)),
    );
    this.live.add(net.id);
    t.onRollback('forget network', () => this.dropLive(net.id));
  }

  /** The last network gone takes tnet's table with it: the host is left as it was found. */
  private dropLive(id: string): void {
    this.live.delete(id);
    if (this.live.size === 0) this.ctx.nft.apply(`delete table ${this.fw.table}`, this.fw.dropTable());
  }

  /** Addresses, forwarding and localnet routing of a bridge that exists. */
  private async configureBridge(net: Network, c: BridgeConfig): Promise<void> {
    const h = this.ctx.rtnl;
    const br = await linkGet(h, c.bridge);
    this.bridgeIndexes.set(c.bridge, br.index);
    const adds: Promise<void>[] = [];
    for (const ip of [net.ipv4, net.ipv6]) {
      if (ip?.gateway) adds.push(addrAdd(h, br.index, br.name, cidr(`${ip.gateway}/${ip.subnet.prefix}`)));
    }
    await Promise.all(adds);
    // Published ports reached on 127.0.0.1 are DNATed out of this bridge with a loopback source.
    sysctlSet(`net.ipv4.conf.${c.bridge}.route_localnet`, '1');
    if (!net.internal) this.enableForwarding(net.ipv6 !== undefined);
  }

  /** Routing between the bridge and the outside, as dockerd does: set once, never unset. */
  private enableForwarding(v6: boolean): void {
    if (!this.forwardingOn[4]) {
      sysctlSet('net.ipv4.ip_forward', '1');
      this.forwardingOn[4] = true;
    }
    if (v6 && !this.forwardingOn[6]) {
      sysctlSet('net.ipv6.conf.all.forwarding', '1');
      this.forwardingOn[6] = true;
    }
  }

  async deleteNetwork(net: Network): Promise<void> {
    const c = this.cfg(net);
    try {
      this.ctx.nft.apply(`remove network ${net.name}`, this.fw.deleteNetwork(this.fwNet(net)));
    } catch (e) {
      this.ctx.log.debug({ err: e, network: net.name }, 'firewall entries already gone');
    }
    const br = await linkByName(this.ctx.rtnl, c.bridge);
    // Never delete a link that is not ours, even if it has our bridge's name.
    if (br && this.isOurs(br, net)) await linkDelIfExists(this.ctx.rtnl, c.bridge);
    this.bridgeIndexes.delete(c.bridge);
    this.dropLive(net.id);
  }

  /**
   * Whether a link named as the network's bridge is the network's: tagged with it, or an untagged
   * bridge (a crash between its creation and its tag; see createNetwork).
   */
  private isOurs(l: { alias: string | undefined; kind: string | undefined }, net: Network): boolean {
    return l.alias === this.tag('network', net.id) || (l.alias === undefined && l.kind === 'bridge');
  }

  async join(net: Network, ep: Endpoint, target: JoinTarget, t: Txn): Promise<Attachment> {
    const c = this.cfg(net);
    const h = this.ctx.rtnl;
    const hostIfname = this.hostIfname(ep);
    const gateways = net.internal ? {} : { gateway4: net.ipv4?.gateway, gateway6: net.ipv6?.gateway };
    const peer =
      target.kind === 'handoff'
        ? { name: `tnc${ep.id.slice(0, 11)}`, mac: ep.mac, mtu: c.mtu }
        : { name: target.ifname, ns: target.ns, mac: ep.mac, mtu: c.mtu };
    const veth = (master: number) =>
      linkAdd(h, { kind: 'veth', name: hostIfname, master, mtu: c.mtu, up: true, alias: this.tag('endpoint', ep.id), peer });
    const created = await t.step(
      `veth ${hostIfname}`,
      async () => {
        try {
          return await veth(await this.bridgeIndex(c.bridge));
        } catch (e) {
          // A cached index of a bridge that was deleted and made again behind our back.
          if (!isErrno(e, 'ENODEV')) throw e;
          return await veth(await this.bridgeIndex(c.bridge, true));
        }
      },
      () => linkDelIfExists(h, hostIfname),
    );
    // An endpoint made again with its ports (the reconcile) keeps the hairpin its ports need.
    if (ep.ports.length) await this.hairpin(ep);
    if (target.kind === 'handoff') return { where: 'handoff', srcName: peer.name, ...gateways, staticRoutes: [] };
    return { where: 'sandbox', ifindex: created.peerIndex, ...gateways, staticRoutes: [] };
  }

  async endpointIntact(_net: Network, ep: Endpoint): Promise<boolean> {
    const l = await linkByName(this.ctx.rtnl, this.hostIfname(ep));
    return l !== undefined && l.alias === this.tag('endpoint', ep.id) && l.master !== undefined;
  }

  /**
   * The bridge's ifindex, looked up once per bridge rather than once per endpoint (a round trip
   * each). `fresh` looks again: after the bridge is made, and when the cached one is gone.
   */
  private async bridgeIndex(bridge: string, fresh = false): Promise<number> {
    let index = fresh ? undefined : this.bridgeIndexes.get(bridge);
    if (index === undefined) {
      index = (await linkGet(this.ctx.rtnl, bridge)).index;
      this.bridgeIndexes.set(bridge, index);
    }
    return index;
  }

  async leave(_net: Network, ep: Endpoint, how: { sandboxGoing: boolean }): Promise<void> {
    // Deleting the namespace takes the veth with it, far cheaper than deleting links one by one.
    if (how.sandboxGoing) return;
    await linkDelIfExists(this.ctx.rtnl, this.hostIfname(ep));
  }

  private publishes(ep: Endpoint, ports: readonly PortMapping[]): fw.Publish[] {
    const out: fw.Publish[] = [];
    for (const p of ports) {
      if (p.hostIp === '::1') continue; // the proxy's (proxySpecs)
      const v6Host = p.hostIp.includes(':');
      const target = v6Host ? ep.ipv6 : ep.ipv4;
      if (target) out.push({ proto: p.proto, hostIp: p.hostIp, hostPort: p.hostPort, target: target.toString(), containerPort: p.containerPort });
      // Every-address mappings also answer on IPv6 when the container has an IPv6 address.
      if (p.hostIp === '' && ep.ipv6) out.push({ proto: p.proto, hostIp: '', hostPort: p.hostPort, target: ep.ipv6.toString(), containerPort: p.containerPort });
    }
    return out;
  }

  /**
   * What the userland proxy serves, as Docker's docker-proxy does, where NAT cannot: the IPv6
   * side of a mapping to a container without IPv6 (every IPv6 address of the host, or the one
   * given), and [::1] (IPv6 has no route_localnet: DNAT from loopback cannot leave the host).
   * Nothing for IPv4 host addresses: those are the kernel's NAT alone.
   */
  private proxySpecs(ep: Endpoint, ports: readonly PortMapping[]): ProxySpec[] {
    const out: ProxySpec[] = [];
    for (const p of ports) {
      if (p.proto !== 'tcp' && p.proto !== 'udp') continue;
      const base = { proto: p.proto, hostPort: p.hostPort, targetPort: p.containerPort };
      if (p.hostIp === '') {
        if (ep.ipv6) out.push({ ...base, hostIp: '::1', target: ep.ipv6.toString(), optional: true });
        else if (ep.ipv4) out.push({ ...base, hostIp: '::', target: ep.ipv4.toString(), optional: true });
      } else if (p.hostIp.includes(':')) {
        const target = p.hostIp === '::1' ? (ep.ipv6 ?? ep.ipv4) : ep.ipv6 ? undefined : ep.ipv4;
        if (target) out.push({ ...base, hostIp: p.hostIp, target: target.toString(), optional: false });
      }
    }
    return out;
  }

  /**
   * Hairpin mode on an endpoint's bridge port: its own published port reached through a host
   * address is DNATed back into the port it left by. Not fatal: without it only that one path
   * fails, every other way to the port works.
   */
  private async hairpin(ep: Endpoint): Promise<void> {
    await linkSetHairpin(this.ctx.rtnl, this.hostIfname(ep), true).catch((err) =>
      this.ctx.log.warn({ err, endpoint: ep.name }, 'hairpin mode not set: the container cannot reach its own published port through a host address'),
    );
  }

  async programExternalConnectivity(net: Network, ep: Endpoint, ports: readonly PortMapping[], t: Txn): Promise<void> {
    const list = this.publishes(ep, ports);
    const proxied = this.proxySpecs(ep, ports);
    if (list.length === 0 && proxied.length === 0) return;
    await this.hairpin(ep);
    if (list.length) {
      await t.step(
        `publish ports of ${ep.name}`,
        () => this.ctx.nft.apply(`publish ports of endpoint ${ep.name} on ${net.name}`, this.fw.publish(ep.id, list)),
        () => this.ctx.nft.apply(`unpublish ports of endpoint ${ep.name}`, this.fw.unpublish(ep.id, list)),
      );
    }
    if (proxied.length) {
      await t.step(
        `proxy ports of ${ep.name}`,
        () => this.proxies.start(ep.id, proxied),
        async () => this.proxies.stop(ep.id),
      );
    }
  }

  async revokeExternalConnectivity(net: Network, ep: Endpoint, ports: readonly PortMapping[]): Promise<void> {
    this.proxies.stop(ep.id);
    const list = this.publishes(ep, ports);
    if (list.length === 0) return;
    try {
      this.ctx.nft.apply(`unpublish ports of endpoint ${ep.name} on ${net.name}`, this.fw.unpublish(ep.id, list));
    } catch (e) {
      this.ctx.log.debug({ err: e, endpoint: ep.name }, 'published ports already gone');
    }
  }

  /** `tnet doctor`: each network's bridge (there, tagged as its own, up) and this instance's firewall table. */
  async diagnose(nets: readonly Network[], eps: readonly Endpoint[]): Promise<DriverFinding[]> {
    const out: DriverFinding[] = [];
    const links = new Map((await linkList(this.ctx.rtnl)).map((l) => [l.name, l]));
    for (const net of nets) {
      const bridge = this.cfg(net).bridge;
      const l = links.get(bridge);
      if (!l) out.push({ problem: 'missing', object: `bridge ${bridge}`, network: net, detail: "the network's bridge does not exist" });
      else if (l.alias !== this.tag('network', net.id)) out.push({ problem: 'wrong', object: `bridge ${bridge}`, network: net, detail: `it is not tagged as this network's (alias ${l.alias ?? 'none'})` });
      else if (!l.up) out.push({ problem: 'wrong', object: `bridge ${bridge}`, network: net, detail: 'it is down' });
    }
    // The table exists exactly while a bridge network does, and names each bridge and each
    // endpoint that publishes IPv4 ports (IPv6 ones go through the userland proxy).
    const table = `${fw.FAMILY} ${this.fw.table}`;
    let ruleset: string | undefined;
    try {
      ruleset = JSON.stringify(this.ctx.nft.list(`list table ${table}`));
    } catch {
      ruleset = undefined;
    }
    if (nets.length && ruleset === undefined) out.push({ problem: 'missing', object: `nft table ${table}`, detail: `${nets.length} bridge network(s) have no firewall table (no NAT, no isolation)` });
    if (!nets.length && ruleset !== undefined) out.push({ problem: 'stray', object: `nft table ${table}`, detail: 'no bridge network of this instance needs it' });
    if (ruleset === undefined) return out;
    for (const net of nets) {
      const bridge = this.cfg(net).bridge;
      if (!ruleset.includes(`"${bridge}"`)) out.push({ problem: 'missing', object: `nft rules for ${bridge}`, network: net, detail: "the firewall table has no rules for this network's bridge" });
    }
    for (const e of eps) {
      const v4 = e.ports.filter((p) => !p.hostIp.includes(':'));
      if (e.ipv4 && v4.length && !ruleset.includes(`"${e.ipv4}"`))
        out.push({ problem: 'missing', object: `nft rules publishing ${v4.map((p) => `${p.hostPort}/${p.proto}`).join(', ')}`, endpoint: e, detail: 'the published ports have no DNAT rule' });
    }
    return out;
  }

  async restore(nets: readonly Network[], eps: readonly Endpoint[]): Promise<void> {
    const h = this.ctx.rtnl;
    const links = await linkList(h);
    const byName = new Map(links.map((l) => [l.name, l]));
    // Links tagged by this instance and wanted by no record are gone already (the core's reconcile).
    // Recreate bridges that are missing (after a reboot), and their addresses.
    for (const net of nets) {
      const c = this.cfg(net);
      const br = byName.get(c.bridge);
      if (br && this.isOurs(br, net)) {
        if (br.alias === undefined) await linkSetAlias(h, c.bridge, this.tag('network', net.id));
        await this.configureBridge(net, c).catch((e) => this.ctx.log.debug({ err: e }, 'bridge addresses already set'));
        continue;
      }
      this.ctx.log.info({ network: net.name, bridge: c.bridge }, 'reconcile: recreating bridge');
      await linkAdd(h, { kind: 'bridge', name: c.bridge, mtu: c.mtu, up: true, alias: this.tag('network', net.id), mac: bridgeMac(net.id) });
      await this.configureBridge(net, c);
    }
    // The firewall is a function of the store: rebuild tnet's table in one transaction.
    const netById = new Map(nets.map((n) => [n.id, n]));
    const published = new Map(eps.filter((e) => netById.has(e.networkId)).map((e) => [e.id, this.publishes(e, e.ports)]));
    this.live.clear();
    for (const n of nets) this.live.add(n.id);
    if (nets.length) this.ctx.nft.apply(`rebuild table ${this.fw.table}`, this.fw.rebuild(nets.map((n) => this.fwNet(n)), published));
    else this.ctx.nft.apply(`delete table ${this.fw.table}`, this.fw.dropTable());
    // The proxies of the published ports handed in, and the hairpin of their ports (a state
    // written before hairpin was set). A port something else took meanwhile is logged, not fatal.
    this.proxies.closeAll();
    for (const e of eps) {
      if (!netById.has(e.networkId) || e.ports.length === 0) continue;
      if (byName.get(this.hostIfname(e))?.alias === this.tag('endpoint', e.id)) await this.hairpin(e);
      await this.proxies
        .start(e.id, this.proxySpecs(e, e.ports))
        .catch((err) => this.ctx.log.error({ err, endpoint: e.name }, 'reconcile: a published port cannot be served on IPv6'));
    }
  }
}
