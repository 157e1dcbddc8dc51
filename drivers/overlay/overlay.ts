/**
 * The overlay driver: one layer-2 segment across every host of the cluster, VXLAN over the
 * hosts' underlay. Per network and host, a Linux bridge (no address: the segment has no router
 * of tnet's) with the network's VXLAN device as a port; per endpoint a veth on the bridge. The
 * VXLAN device neither learns nor floods: the core hands the driver the remote endpoints from the
 * cluster's peer table, and each becomes a permanent neighbour entry (the device answers ARP and
 * neighbour solicitations itself: `proxy`) and a permanent FDB entry (its MAC -> its host's
 * VTEP). That is libnetwork's data plane, programmed from etcd instead of gossip (overlay.md).
 *
 * The kernel objects live in the host namespace, like the bridge driver's: one VXLAN socket per
 * host (UDP 4789), VNIs unique per namespace as the kernel requires.
 */
import type {
  Attachment, Driver, DriverContext, DriverFactory, DriverFinding, DriverOptions, JoinTarget,
} from '../../libnetwork/driverapi.js';
import { TnetError, conflict, invalid } from '../../libnetwork/errors.js';
import {
  Netns, addrAdd, addrList, cidr, fdbDel, fdbForgetLearned, fdbList, fdbSet, isErrno, linkSetUp, netnsAdd, netnsDel, netnsExists, netnsList, withRtnl, linkAdd, linkByName, linkDelIfExists, linkGet, linkList, linkSetAlias,
  neighDel, neighList, neighSet, sysctlSet,
} from '../../libnetwork/kernel/index.js';
import type { Endpoint, Network } from '../../libnetwork/model.js';
import { DNS_ADDRESS, VXLANID_LIST } from '../../libnetwork/netlabel.js';
import type { Peer } from '../../libnetwork/store/peers.js';
import { type Txn, transaction } from '../../libnetwork/txn.js';
import { encryptionUnsupported } from './encryption.js';
import {
  ALIASES, KNOWN_OPTIONS, VXLAN_OVERHEAD, VXLAN_PORT, bridgeName, dnsNetnsName, dnsVethName, handoffName, hostVethName, overlayConfig, vxlanName,
} from './options.js';

export const overlayDriver: DriverFactory = {
  type: 'overlay',
  scope: 'global',
  options: { keys: KNOWN_OPTIONS, aliases: ALIASES },
  create: (ctx) => new OverlayDriver(ctx),
};

/** An entry already gone is what a removal wants. */
const gone = (e: unknown) => {
  if (!isErrno(e, 'ENOENT', 'ESRCH', 'ENODEV')) throw e;
};

/** A bridge's own MAC, fixed from the network's id (the bridge driver's reason: a port leaving must not change it). */
const bridgeMac = (networkId: string) => `0a:${networkId.slice(0, 10).match(/../g)!.join(':')}`;

export class OverlayDriver implements Driver {
  /** The ifindex of each network's VXLAN device, looked up once. */
  private readonly vxlans = new Map<string, number>();
  /** The remote endpoints the core handed over, per network id: what the static entries must be (doctor, repair). */
  private readonly remotes = new Map<string, Map<string, Peer>>();

  constructor(private readonly ctx: DriverContext) {}

  private tag(kind: 'network' | 'endpoint', id: string, part?: string): string {
    return this.ctx.tags.of(kind, id, part);
  }

  private vni(net: Network): number {
    const v = Number(net.options[VXLANID_LIST]);
    if (!Number.isInteger(v) || v <= 0) throw new TnetError('internal', `overlay network "${net.name}" has no VNI recorded`, { object: `network "${net.name}"` });
    return v;
  }

  private vtep(what: string): string {
    const v = this.ctx.vtep;
    if (!v) throw invalid(`${what}: this host has no tunnel endpoint: start the daemon with --store (and --advertise-addr)`, 'store');
    return v.toString();
  }

  /**
   * The MTU of the network on this host: the one asked for, or the underlay's (the link holding
   * the VTEP address) minus what VXLAN adds, for an IPv4 or an IPv6 underlay.
   */
  private async mtu(net: Network): Promise<number> {
    const asked = overlayConfig(net.options).mtu;
    if (asked) return asked;
    const vtep = this.vtep(`network "${net.name}"`);
    const family = vtep.includes(':') ? 6 : 4;
    const addr = (await addrList(this.ctx.rtnl)).find((a) => a.address === vtep);
    const links = await linkList(this.ctx.rtnl);
    const underlay = links.find((l) => l.index === addr?.ifindex);
    if (!underlay?.mtu) {
      this.ctx.log.warn({ vtep }, 'no link of this host holds the VTEP address: overlay MTU from a 1500-byte underlay');
      return 1500 - VXLAN_OVERHEAD[family];
    }
    return underlay.mtu - VXLAN_OVERHEAD[family];
  }

  inspect(net: Network): Record<string, string> {
    const c = overlayConfig(net.options);
    return {
      vni: String(this.vni(net)),
      bridge: bridgeName(net.id),
      vxlan: vxlanName(this.vni(net)),
      ...(this.ctx.vtep ? { vtep: this.ctx.vtep.toString() } : {}),
      ...(c.dns ? { dns_address: c.dns, dns_netns: dnsNetnsName(net.id, this.ctx.scope) } : {}),
      ...(c.ignored.length ? { ignored_options: c.ignored.join(',') } : {}),
    };
  }

  hostIfname(ep: Pick<Endpoint, 'id'>): string {
    return hostVethName(ep.id);
  }

  async checkNetwork(req: { id: string; name?: string; internal: boolean; options: DriverOptions }): Promise<DriverOptions> {
    const c = overlayConfig(req.options);
    if (c.encrypted) {
      // Never an unencrypted network that was asked to be encrypted. The key ring (keys.ts) and
      // the policies and marking (encryption.ts) are built; the SAs need a kernel with ESP and
      // AES-GCM, and until the data path has run on one the driver refuses there too.
      const what = `encrypted overlay network${req.name ? ` "${req.name}"` : ''}`;
      const why = (await encryptionUnsupported(this.ctx.vtep?.family ?? 4)) ?? 'the encrypted data path is not enabled in this version (it has not run on a kernel with ESP yet)';
      throw new TnetError('unsupported', `${what}: ${why}`, { object: 'option encrypted' });
    }
    if (req.options[DNS_ADDRESS] !== undefined) throw invalid(`option ${DNS_ADDRESS} is the cluster's to choose (the last free address of the subnet)`, `option ${DNS_ADDRESS}`);
    for (const k of c.ignored) this.ctx.log.warn({ option: k }, `overlay option "${k}" ignored`);
    return req.options;
  }

  async createNetwork(net: Network, t: Txn): Promise<void> {
    const h = this.ctx.rtnl;
    const br = bridgeName(net.id);
    const vx = vxlanName(this.vni(net));
    const local = this.vtep(`network "${net.name}"`);
    const mtu = await this.mtu(net);
    const holder = await linkByName(h, vx);
    if (holder && holder.alias !== this.tag('network', net.id, 'vxlan')) {
      throw conflict(`VXLAN device name "${vx}" (VNI ${this.vni(net)}) is already taken on this host by ${holder.alias ?? 'something other than tnet'}`, `link "${vx}"`);
    }
    await t.step(
      `bridge ${br}`,
      async () => {
        await linkAdd(h, { kind: 'bridge', name: br, mtu, up: true, mac: bridgeMac(net.id) });
        await linkSetAlias(h, br, this.tag('network', net.id));
      },
      () => linkDelIfExists(h, br),
    );
    // The host takes no part in the segment: no IPv6 link-local address on the bridge, so the
    // host never answers or solicits on a network it has no address in.
    try {
      sysctlSet(`net.ipv6.conf.${br}.disable_ipv6`, '1');
    } catch (e) {
      this.ctx.log.debug({ err: e }, 'IPv6 is off on this host already');
    }
    const master = (await linkGet(h, br)).index;
    await t.step(
      `vxlan ${vx}`,
      async () => {
        const made = await linkAdd(h, {
          kind: 'vxlan', name: vx, vni: this.vni(net), local, port: VXLAN_PORT, learning: false, proxy: true,
          mtu, master, up: true, alias: this.tag('network', net.id, 'vxlan'),
        });
        if (made.index !== undefined) this.vxlans.set(net.id, made.index);
      },
      async () => {
        this.vxlans.delete(net.id);
        await linkDelIfExists(h, vx);
      },
    );
    await this.makeDnsPort(net, master, mtu, t);
  }

  /**
   * The network's DNS address on this host (the same on every host, reserved by the cluster): a
   * small namespace on the bridge holds it, and tnet's DNS serves it there (dns/service.ts), so an
   * engine's containers (Docker's `--dns`) reach tnet's names without the host namespace joining
   * the segment. The VXLAN device never answers for it (no peer has it), so each host's
   * containers reach their own host's.
   */
  private async makeDnsPort(net: Network, master: number, mtu: number, t: Txn): Promise<void> {
    const dns = overlayConfig(net.options).dns;
    if (!dns || !net.ipv4) return;
    const h = this.ctx.rtnl;
    const name = dnsNetnsName(net.id, this.ctx.scope);
    const veth = dnsVethName(net.id);
    const ns = await t.step(`netns ${name}`, async () => netnsAdd(name), () => netnsDel(name));
    await t.step(
      `veth ${veth}`,
      () => linkAdd(h, { kind: 'veth', name: veth, master, mtu, up: true, alias: this.tag('network', net.id, 'dns'), peer: { name: 'eth0', ns, mtu } }),
      () => linkDelIfExists(h, veth),
    );
    await withRtnl(ns, async (nh) => {
      await linkSetUp(nh, 'lo');
      const eth0 = await linkGet(nh, 'eth0');
      await addrAdd(nh, eth0.index, 'eth0', cidr(`${dns}/${net.ipv4!.subnet.prefix}`));
      await linkSetUp(nh, 'eth0');
    });
  }

  private async removeDnsPort(net: Network): Promise<void> {
    await linkDelIfExists(this.ctx.rtnl, dnsVethName(net.id));
    const name = dnsNetnsName(net.id, this.ctx.scope);
    if (netnsExists(name)) netnsDel(name);
  }

  async deleteNetwork(net: Network): Promise<void> {
    const h = this.ctx.rtnl;
    this.vxlans.delete(net.id);
    this.remotes.delete(net.id);
    await this.removeDnsPort(net);
    for (const name of [vxlanName(this.vni(net)), bridgeName(net.id)]) {
      const l = await linkByName(h, name);
      // Never a link that is not this network's, even with its name (an untagged bridge: a crash before its tag).
      const ours = l?.alias !== undefined && this.ctx.tags.owner(l.alias) === this.tag('network', net.id);
      if (l && (ours || (l.alias === undefined && l.kind === 'bridge'))) await linkDelIfExists(h, name);
    }
  }

  async join(net: Network, ep: Endpoint, target: JoinTarget, t: Txn): Promise<Attachment> {
    const h = this.ctx.rtnl;
    const hostIfname = hostVethName(ep.id);
    // The bridge was made with the network's MTU on this host (every port has it): no dump of
    // the host's links and addresses per endpoint.
    const br = await linkGet(h, bridgeName(net.id));
    const mtu = br.mtu ?? (await this.mtu(net));
    const master = br.index;
    const peer =
      target.kind === 'handoff'
        ? { name: handoffName(ep.id), mac: ep.mac, mtu }
        : { name: target.ifname, ns: target.ns, mac: ep.mac, mtu };
    const created = await t.step(
      `veth ${hostIfname}`,
      () => linkAdd(h, { kind: 'veth', name: hostIfname, master, mtu, up: true, alias: this.tag('endpoint', ep.id), peer }),
      () => linkDelIfExists(h, hostIfname),
    );
    // The MAC follows the address (02:42 + IPv4): one that lived on another host a moment ago may
    // still be learned on the VXLAN port, and this endpoint's frames would go into the tunnel.
    await this.forgetLearned(net, ep.mac);
    const gateways = net.internal ? {} : { gateway4: net.ipv4?.gateway, gateway6: net.ipv6?.gateway };
    if (target.kind === 'handoff') return { where: 'handoff', srcName: peer.name, ...gateways, staticRoutes: [] };
    return { where: 'sandbox', ifindex: created.peerIndex, ...gateways, staticRoutes: [] };
  }

  async leave(_net: Network, ep: Endpoint, how: { sandboxGoing: boolean }): Promise<void> {
    if (how.sandboxGoing) return; // the namespace takes the veth with it
    await linkDelIfExists(this.ctx.rtnl, hostVethName(ep.id));
  }

  async endpointIntact(_net: Network, ep: Endpoint): Promise<boolean> {
    const l = await linkByName(this.ctx.rtnl, hostVethName(ep.id));
    return l !== undefined && l.alias === this.tag('endpoint', ep.id) && l.master !== undefined;
  }

  // ---------------------------------------------------------------- remote endpoints

  private async vxlanIndex(net: Network): Promise<number | undefined> {
    let i = this.vxlans.get(net.id);
    if (i === undefined) {
      i = (await linkByName(this.ctx.rtnl, vxlanName(this.vni(net))))?.index;
      if (i !== undefined) this.vxlans.set(net.id, i);
    }
    return i;
  }

  /** A remote endpoint: its addresses answered by the VXLAN device, its MAC tunnelled to its host. */
  private async program(vx: number, p: Peer): Promise<void> {
    const h = this.ctx.rtnl;
    // The FDB entry first: an answer to ARP for a MAC the device cannot reach yet would be sent into a void.
    await fdbSet(h, vx, p.mac, p.vtep);
    for (const ip of [p.ip, p.ip6]) if (ip) await neighSet(h, vx, ip, p.mac);
  }

  private async unprogram(vx: number, p: Peer): Promise<void> {
    const h = this.ctx.rtnl;
    for (const ip of [p.ip, p.ip6]) if (ip) await neighDel(h, vx, ip).catch(gone);
    await fdbDel(h, vx, p.mac, p.vtep).catch(gone);
    // and what the bridge learned of it on the tunnel port (libnetwork#1792: else up to 300 s)
    await fdbForgetLearned(h, vx, p.mac).catch(gone);
  }

  /** The bridge's learned entry for `mac` on the network's VXLAN port, if any, goes. */
  private async forgetLearned(net: Network, mac: string): Promise<void> {
    const vx = await this.vxlanIndex(net);
    if (vx !== undefined) await fdbForgetLearned(this.ctx.rtnl, vx, mac).catch(gone);
  }

  private known(net: Network): Map<string, Peer> {
    let m = this.remotes.get(net.id);
    if (!m) this.remotes.set(net.id, (m = new Map()));
    return m;
  }

  async addPeer(net: Network, peer: Peer): Promise<void> {
    this.known(net).set(peer.endpointId, peer);
    const vx = await this.vxlanIndex(net);
    if (vx !== undefined) await this.program(vx, peer);
  }

  async removePeer(net: Network, peer: Peer): Promise<void> {
    this.known(net).delete(peer.endpointId);
    const vx = await this.vxlanIndex(net);
    if (vx !== undefined) await this.unprogram(vx, peer);
  }

  /**
   * The device's static entries become exactly `peers`: the entries already right are left alone
   * (a restarted daemon causes no blip), missing ones are added, and the rest removed (peers that
   * went while this host was not listening: a restart, an outage, a compaction).
   */
  async setPeers(net: Network, peers: readonly Peer[]): Promise<void> {
    this.remotes.set(net.id, new Map(peers.map((p) => [p.endpointId, p])));
    const vx = await this.vxlanIndex(net);
    if (vx === undefined) return;
    const h = this.ctx.rtnl;
    const neigh = new Map((await neighList(h, vx)).map((e) => [e.ip, e.mac]));
    const fdb = new Map((await fdbList(h, vx)).map((e) => [e.mac, e.ip]));
    const wantNeigh = new Map<string, string>();
    const wantFdb = new Map<string, string>();
    for (const p of peers) {
      wantFdb.set(p.mac, p.vtep);
      for (const ip of [p.ip, p.ip6]) if (ip) wantNeigh.set(ip, p.mac);
    }
    for (const [mac, vtep] of wantFdb) if (fdb.get(mac) !== vtep) await fdbSet(h, vx, mac, vtep);
    for (const [ip, mac] of wantNeigh) if (neigh.get(ip) !== mac) await neighSet(h, vx, ip, mac);
    for (const [ip] of neigh) if (!wantNeigh.has(ip)) await neighDel(h, vx, ip).catch(gone);
    for (const [mac, vtep] of fdb) {
      if (wantFdb.has(mac)) continue;
      await fdbDel(h, vx, mac, vtep).catch(gone);
      await fdbForgetLearned(h, vx, mac).catch(gone);
    }
  }

  // ---------------------------------------------------------------- restore and doctor

  /**
   * After a restart: the bridge and VXLAN device of every network are made again where missing
   * (a reboot), and left alone where present, static entries included: the data plane keeps
   * running until the cluster is reached and setPeers makes the entries exact.
   */
  async restore(nets: readonly Network[]): Promise<void> {
    const h = this.ctx.rtnl;
    this.vxlans.clear();
    const byName = new Map((await linkList(h)).map((l) => [l.name, l]));
    for (const net of nets) {
      const br = byName.get(bridgeName(net.id));
      const vx = byName.get(vxlanName(this.vni(net)));
      if (br?.alias === this.tag('network', net.id) && vx?.alias === this.tag('network', net.id, 'vxlan') && vx.master === br.index) {
        this.vxlans.set(net.id, vx.index);
        // Only the DNS port missing: made again alone (the endpoints' ports stay on the bridge).
        const dnsOk = !overlayConfig(net.options).dns || (netnsExists(dnsNetnsName(net.id, this.ctx.scope)) && byName.get(dnsVethName(net.id))?.master === br.index);
        if (!dnsOk) {
          this.ctx.log.info({ network: net.name }, "reconcile: making the overlay's DNS port again");
          await this.removeDnsPort(net);
          await transaction(async (t) => this.makeDnsPort(net, br.index, br.mtu ?? (await this.mtu(net)), t));
        }
        continue;
      }
      this.ctx.log.info({ network: net.name }, 'reconcile: making the overlay bridge and VXLAN device again');
      const known = this.remotes.get(net.id);
      await this.deleteNetwork(net);
      await transaction((t) => this.createNetwork(net, t));
      if (known) this.remotes.set(net.id, known);
    }
    // DNS namespaces of networks this instance no longer has (their veths went with the core's
    // removal of unwanted tagged links; a namespace is a file, not a link).
    const wanted = new Set(nets.map((n) => dnsNetnsName(n.id, this.ctx.scope)));
    const mine = this.ctx.scope ? (n: string) => n.startsWith(`tnd-${this.ctx.scope}-`) : (n: string) => /^tnd-[0-9a-f]{11}$/.test(n);
    for (const n of netnsList()) {
      if (!mine(n) || wanted.has(n)) continue;
      this.ctx.log.info({ netns: n }, 'reconcile: removing the DNS namespace of an overlay network this host no longer has');
      netnsDel(n);
    }
    // A live repair (`tnet doctor --repair`): the static entries become what the cluster said
    // last. At a start nothing is known yet: the cluster's first listing programs them.
    for (const net of nets) {
      const known = this.remotes.get(net.id);
      if (known) await this.setPeers(net, [...known.values()]);
    }
  }

  /** The static entries against the remote endpoints the cluster reported (missing, stale, pointing elsewhere). */
  private async diagnoseEntries(net: Network, vx: number, name: string): Promise<DriverFinding[]> {
    const known = this.remotes.get(net.id);
    if (!known) return []; // the cluster has not been heard yet: nothing to compare with
    const out: DriverFinding[] = [];
    const neigh = new Map((await neighList(this.ctx.rtnl, vx)).map((e) => [e.ip, e.mac]));
    const fdb = new Map((await fdbList(this.ctx.rtnl, vx)).map((e) => [e.mac, e.ip]));
    const wantIps = new Set<string>();
    const wantMacs = new Set<string>();
    for (const p of known.values()) {
      wantMacs.add(p.mac);
      const where = fdb.get(p.mac);
      if (where === undefined) out.push({ problem: 'missing', object: `fdb ${p.mac} dev ${name}`, network: net, detail: `remote endpoint ${p.name} on host ${p.host} is unreachable: no tunnel entry to ${p.vtep}` });
      else if (where !== p.vtep) out.push({ problem: 'wrong', object: `fdb ${p.mac} dev ${name}`, network: net, detail: `it tunnels to ${where}, but ${p.name} is on ${p.vtep}` });
      for (const ip of [p.ip, p.ip6]) {
        if (!ip) continue;
        wantIps.add(ip);
        if (neigh.get(ip) !== p.mac) out.push({ problem: neigh.has(ip) ? 'wrong' : 'missing', object: `neigh ${ip} dev ${name}`, network: net, detail: `remote endpoint ${p.name} is not answered for (want ${p.mac}, have ${neigh.get(ip) ?? 'none'})` });
      }
    }
    for (const [ip, mac] of neigh) if (!wantIps.has(ip)) out.push({ problem: 'stray', object: `neigh ${ip} dev ${name}`, network: net, detail: `no remote endpoint has ${ip} (${mac}) any more` });
    for (const [mac, vtep] of fdb) if (!wantMacs.has(mac)) out.push({ problem: 'stray', object: `fdb ${mac} dev ${name}`, network: net, detail: `no remote endpoint has ${mac} (tunnelled to ${vtep}) any more` });
    return out;
  }

  async diagnose(nets: readonly Network[]): Promise<DriverFinding[]> {
    const out: DriverFinding[] = [];
    const links = new Map((await linkList(this.ctx.rtnl)).map((l) => [l.name, l]));
    for (const net of nets) {
      const br = links.get(bridgeName(net.id));
      const vx = links.get(vxlanName(this.vni(net)));
      if (!br) out.push({ problem: 'missing', object: `bridge ${bridgeName(net.id)}`, network: net, detail: "the overlay network's bridge does not exist" });
      if (!vx) out.push({ problem: 'missing', object: `vxlan ${vxlanName(this.vni(net))}`, network: net, detail: "the overlay network's VXLAN device does not exist: no traffic to other hosts" });
      else if (br && vx.master !== br.index) out.push({ problem: 'wrong', object: `vxlan ${vx.name}`, network: net, detail: 'it is not a port of the network\'s bridge' });
      else if (!vx.up) out.push({ problem: 'wrong', object: `vxlan ${vx.name}`, network: net, detail: 'it is down' });
      if (vx) out.push(...(await this.diagnoseEntries(net, vx.index, vx.name)));
      const dns = overlayConfig(net.options).dns;
      if (dns && (!netnsExists(dnsNetnsName(net.id, this.ctx.scope)) || links.get(dnsVethName(net.id))?.master !== br?.index))
        out.push({ problem: 'missing', object: `netns ${dnsNetnsName(net.id, this.ctx.scope)}`, network: net, detail: `the network's DNS address ${dns} is not served on this host (its namespace or its port on the bridge is gone)` });
    }
    return out;
  }
}
