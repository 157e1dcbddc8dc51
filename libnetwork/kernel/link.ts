import { openSync, closeSync } from 'node:fs';
import { AttrStream, FlagsNew, ifla, rt } from 'netlink';
import { KernelError, isErrno } from './error.js';
import { ifnameProblem } from './ifname.js';
import { familyOf, ipBytes, macBytes, macString } from './inet.js';
import type { Netns } from './netns.js';
import { type Rtnl, withRtnl } from './rtnl.js';

/** What every link kind can be created with. */
interface LinkCommon {
  readonly name: string;
  readonly mtu?: number;
  readonly mac?: string;
  /** Interface alias: tnet writes its ownership tag here (`ip link` shows it as "alias"). */
  readonly alias?: string;
  /** ifindex of the bridge this link is enslaved to at creation. */
  readonly master?: number;
  readonly up?: boolean;
}

export interface Bridge extends LinkCommon {
  readonly kind: 'bridge';
}

export interface VethPeer {
  readonly name: string;
  /** Born directly in this namespace: moving a link later costs ~17 ms in the kernel. */
  readonly ns?: Netns;
  readonly mac?: string;
  readonly mtu?: number;
  // No `up`: the kernel refuses (ENOTCONN) to bring a peer up while creating it in another
  // namespace; the caller sets it up with a handle in that namespace, where it works anyway.
}
export interface Veth extends LinkCommon {
  readonly kind: 'veth';
  readonly peer: VethPeer;
}

export interface Vxlan extends LinkCommon {
  readonly kind: 'vxlan';
  readonly vni: number;
  readonly local?: string;
  readonly port?: number;
  readonly underlay?: number; // ifindex
  readonly learning?: boolean;
  /** Answer ARP and neighbour solicitations from the device's own neighbour table (no flooding needed). */
  readonly proxy?: boolean;
}

export type MacvlanMode = 'private' | 'vepa' | 'bridge' | 'passthru';
export interface Macvlan extends LinkCommon {
  readonly kind: 'macvlan';
  readonly parent: number; // ifindex, in the namespace of the handle that creates it
  readonly mode: MacvlanMode;
  /**
   * Born directly in this namespace (IFLA_NET_NS_FD), its parent staying where it is: no move.
   * Its tag is then written with a handle in that namespace, and `up` is left to the caller there.
   */
  readonly ns?: Netns;
}

/** An 802.1Q sub-interface (`ip link add link eth0 name eth0.10 type vlan id 10`); absent when the kernel lacks CONFIG_VLAN_8021Q. */
export interface Vlan extends LinkCommon {
  readonly kind: 'vlan';
  readonly parent: number; // ifindex
  readonly vid: number;
}

/** A dummy link (a parent with no wire); absent when the kernel lacks CONFIG_DUMMY. */
export interface Dummy extends LinkCommon {
  readonly kind: 'dummy';
}

export type LinkSpec = Bridge | Veth | Vxlan | Macvlan | Vlan | Dummy;

/** A link as the kernel reports it. */
export interface Link {
  readonly index: number;
  readonly name: string;
  readonly kind: string | undefined;
  readonly mtu: number | undefined;
  readonly mac: string | undefined;
  readonly alias: string | undefined;
  readonly master: number | undefined;
  readonly up: boolean;
}

// IFLA_INFO_* and per-kind data attribute numbers (include/uapi/linux/if_link.h, veth.h).
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const VETH_INFO_PEER = 1;
const IFLA_BR_FORWARD_DELAY = 1;
const IFLA_BR_STP_STATE = 5;
const IFLA_VXLAN_PORT = 15;
const IFLA_VLAN_ID = 1;

const u32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
};
const u16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(n);
  return b;
};
const be16 = (n: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
};
const bytes = (s: AttrStream) => Buffer.concat(s.bufs);

function linkinfo(kind: string, data?: (out: AttrStream) => void): Buffer {
  const s = new AttrStream();
  s.push(IFLA_INFO_KIND, Buffer.from(kind));
  if (data) {
    const d = new AttrStream();
    data(d);
    s.push(IFLA_INFO_DATA, bytes(d));
  }
  return bytes(s);
}

const macvlanModes: Record<MacvlanMode, number> = { private: 1, vepa: 2, bridge: 4, passthru: 8 };

function kindData(spec: LinkSpec, openFds: number[]): Buffer {
  switch (spec.kind) {
    case 'bridge':
      // STP off and no forward delay: a container's port forwards the moment it is up.
      return linkinfo('bridge', (d) => {
        d.push(IFLA_BR_STP_STATE, u32(0));
        d.push(IFLA_BR_FORWARD_DELAY, u32(0));
      });
    case 'veth': {
      const p = spec.peer;
      const peer = new AttrStream();
      peer.emit(rt.formatLink({}));
      const attrs: ifla.LinkAttrs = { ifname: p.name };
      if (p.ns) {
        const fd = openSync(p.ns.path, 'r');
        openFds.push(fd);
        attrs.netNsFd = fd;
      }
      if (p.mac) attrs.address = macBytes(p.mac);
      if (p.mtu) attrs.mtu = p.mtu;
      peer.emit(ifla.formatLinkAttrs(attrs));
      return linkinfo('veth', (d) => d.push(VETH_INFO_PEER, bytes(peer)));
    }
    case 'vxlan':
      return linkinfo('vxlan', (d) => {
        const v: ifla.Vxlan = { id: spec.vni, learning: spec.learning ? 1 : 0, ...(spec.proxy ? { proxy: 1 } : {}) };
        if (spec.local && familyOf(spec.local) === 6) v.local6 = ipBytes(spec.local);
        else if (spec.local) v.local = ipBytes(spec.local);
        if (spec.underlay) v.link = spec.underlay;
        d.emit(ifla.formatVxlan(v));
        d.push(IFLA_VXLAN_PORT, be16(spec.port ?? 4789));
      });
    case 'macvlan':
      return linkinfo('macvlan', (d) => d.emit(ifla.formatMacvlan({ mode: macvlanModes[spec.mode] })));
    case 'vlan':
      return linkinfo('vlan', (d) => d.push(IFLA_VLAN_ID, u16(spec.vid)));
    case 'dummy':
      return linkinfo('dummy');
  }
}

function describe(spec: LinkSpec): string {
  return `${spec.kind} "${spec.name}"`;
}

/** What the kernel made: the link's index and, for a veth, its peer's index in the peer's namespace. */
export interface CreatedLink {
  readonly index: number | undefined;
  readonly peerIndex: number | undefined;
}

const NLM_F_ECHO = 8;

/**
 * Creates a link (RTM_NEWLINK, create-exclusive), set up in the same message where possible.
 * The request asks for an echo of the new link (kernels since 6.2 send it), so callers learn the
 * indexes without a lookup; undefined where the kernel did not echo.
 */
export async function linkAdd(h: Rtnl, spec: LinkSpec): Promise<CreatedLink> {
  const problem = ifnameProblem(spec.name);
  if (problem) throw new KernelError('link add', describe(spec), `name ${problem}`);
  if (spec.kind === 'veth') {
    const pp = ifnameProblem(spec.peer.name);
    if (pp) throw new KernelError('link add', describe(spec), `peer name ${pp}`);
  }
  const fds: number[] = [];
  try {
    const attrs: ifla.LinkAttrs = { ifname: spec.name, linkinfo: kindData(spec, fds) };
    if (spec.mtu) attrs.mtu = spec.mtu;
    if (spec.mac) attrs.address = macBytes(spec.mac);
    if (spec.master) attrs.master = spec.master;
    if (spec.kind === 'macvlan' || spec.kind === 'vlan') attrs.link = u32(spec.parent);
    const bornIn = spec.kind === 'macvlan' ? spec.ns : undefined;
    if (bornIn) {
      const fd = openSync(bornIn.path, 'r');
      fds.push(fd);
      attrs.netNsFd = fd;
    }
    const flags = spec.up && !bornIn ? { up: true as const } : {};
    const created = h.call('link add', describe(spec), () =>
      h.sock.newLink({ flags, change: flags }, attrs, { flags: FlagsNew.CREATE | FlagsNew.EXCL | NLM_F_ECHO }),
    );
    // RTM_NEWLINK ignores IFLA_IFALIAS on a new device: the tag takes a second message. It is sent
    // right behind the first (the kernel handles one socket's requests in order), saving a round trip.
    // A link born in another namespace is tagged there, by a handle in it, once it exists: the
    // same name may well exist here (every sandbox has an eth0).
    const tagged = spec.alias && !bornIn ? linkSetAlias(h, spec.name, spec.alias) : undefined;
    tagged?.catch(() => undefined); // if the link was not made, that error is the one to report
    const [echo] = await created;
    try {
      await tagged;
      if (spec.alias && bornIn) await withRtnl(bornIn, (s) => linkSetAlias(s, spec.name, spec.alias!));
    } catch (e) {
      // An untagged link would be nobody's: take it back rather than leave it.
      if (bornIn) await withRtnl(bornIn, (s) => linkDelIfExists(s, spec.name)).catch(() => undefined);
      else await linkDelIfExists(h, spec.name).catch(() => undefined);
      throw e;
    }
    const peer = spec.kind === 'veth' ? echo?.attrs.link : undefined;
    return { index: echo?.data.index, peerIndex: typeof peer === 'number' ? peer : Buffer.isBuffer(peer) ? peer.readUInt32LE(0) : undefined };
  } finally {
    for (const fd of fds) closeSync(fd);
  }
}

/** Deletes a link by name. A veth's peer goes with it. */
export async function linkDel(h: Rtnl, name: string): Promise<void> {
  await h.call('link del', `link "${name}"`, () => h.sock.delLink({}, { ifname: name }));
}

/** Deletes a link by name; true if it was there. For undo and cleanup paths. */
export async function linkDelIfExists(h: Rtnl, name: string): Promise<boolean> {
  try {
    await linkDel(h, name);
    return true;
  } catch (e) {
    if (isErrno(e, 'ENODEV', 'ENOENT')) return false;
    throw e;
  }
}

function toLink(m: { data: rt.Link; attrs: ifla.LinkAttrs }): Link {
  let kind: string | undefined;
  if (m.attrs.linkinfo) {
    try {
      kind = ifla.parseInfo(m.attrs.linkinfo).kind?.replace(/\0+$/, '');
    } catch {
      kind = undefined;
    }
  }
  return {
    index: m.data.index ?? 0,
    name: m.attrs.ifname ?? '',
    kind,
    mtu: m.attrs.mtu,
    mac: macString(m.attrs.address),
    alias: m.attrs.ifalias,
    master: m.attrs.master,
    up: Boolean(m.data.flags?.up),
  };
}

export async function linkList(h: Rtnl): Promise<Link[]> {
  const msgs = await h.dump('link list', 'links', (s) => s.getLinks());
  return msgs.map(toLink);
}

export async function linkByName(h: Rtnl, name: string): Promise<Link | undefined> {
  try {
    const msgs = await h.sock.getLink({}, { ifname: name });
    return msgs[0] ? toLink(msgs[0]) : undefined;
  } catch (e) {
    if (isErrno(e, 'ENODEV', 'ENOENT')) return undefined;
    throw new KernelError('link get', `link "${name}"${h.where}`, String((e as Error).message), e);
  }
}

/** Like linkByName, but a missing link is an error naming it. */
export async function linkGet(h: Rtnl, name: string): Promise<Link> {
  const l = await linkByName(h, name);
  if (!l) throw new KernelError('link get', `link "${name}"${h.where}`, 'ENODEV');
  return l;
}

async function linkSet(h: Rtnl, op: string, name: string, data: rt.Link, attrs: ifla.LinkAttrs): Promise<void> {
  await h.call(op, `link "${name}"`, () => h.sock.setLink(data, { ifname: name, ...attrs }));
}

export const linkSetUp = (h: Rtnl, name: string) =>
  linkSet(h, 'link set up', name, { flags: { up: true }, change: { up: true } }, {});
export const linkSetDown = (h: Rtnl, name: string) =>
  linkSet(h, 'link set down', name, { flags: {}, change: { up: true } }, {});
export const linkSetMaster = (h: Rtnl, name: string, master: number) =>
  linkSet(h, 'link set master', name, {}, { master });
export const linkSetMtu = (h: Rtnl, name: string, mtu: number) => linkSet(h, 'link set mtu', name, {}, { mtu });
export const linkSetAlias = (h: Rtnl, name: string, alias: string) =>
  linkSet(h, 'link set alias', name, {}, { ifalias: alias });
/** Sets a link's MAC address (`ip link set dev NAME address MAC`). */
export const linkSetMac = (h: Rtnl, name: string, mac: string) =>
  linkSet(h, 'link set address', name, {}, { address: macBytes(mac) });

// IFLA_INFO_SLAVE_KIND / _DATA and IFLA_BRPORT_MODE (include/uapi/linux/if_link.h).
const IFLA_INFO_SLAVE_KIND = 4;
const IFLA_INFO_SLAVE_DATA = 5;
const IFLA_BRPORT_MODE = 4;

/**
 * Hairpin mode on a bridge port (`ip link set dev PORT type bridge_slave hairpin on`): the bridge
 * may send a frame back out the port it came in on. A published port reached from its own
 * container through a host address is DNATed back into the same bridge, and br_netfilter bridges
 * it (not routes it) to the container's own port.
 */
export async function linkSetHairpin(h: Rtnl, name: string, on: boolean): Promise<void> {
  const data = new AttrStream();
  data.push(IFLA_BRPORT_MODE, Buffer.from([on ? 1 : 0]));
  const info = new AttrStream();
  info.push(IFLA_INFO_SLAVE_KIND, Buffer.from('bridge'));
  info.push(IFLA_INFO_SLAVE_DATA, bytes(data));
  await h.call('link set hairpin', `link "${name}"`, () => h.sock.newLink({}, { ifname: name, linkinfo: bytes(info) }, {}));
}
