/**
 * Encrypted overlay networks (`-o encrypted`), as libnetwork does them (drivers/overlay/encryption.go):
 * the VXLAN UDP datagrams of an encrypted network go between hosts in ESP transport mode, AEAD
 * rfc4106(gcm(aes)) with a 64-bit ICV, keys from the cluster's key ring (keys.ts).
 *
 * Three layers, each a small piece here:
 * - nftables, per encrypted VNI, in a table of tnet's own (`tnet.ipsec`, `tnet-SCOPE.ipsec`):
 *     output       (type route)  udp dport 4789 @th,96,24 VNI   meta mark set 0xd0c4e3
 *     postrouting                 ...same match, marked, rt ipsec missing          drop
 *     input                       udp dport 4789 @th,96,24 VNI   meta ipsec missing drop
 *   The mark is what the XFRM policy selects on: only encrypted networks' traffic goes through
 *   IPsec. The route chain makes the kernel look the route (and the policy) up again after the
 *   mark is set. The postrouting drop is what keeps a marked datagram from leaving in clear
 *   when no policy or no SA applies (libnetwork had no such rule: a missing policy sent
 *   cleartext); the input drop refuses cleartext VXLAN of an encrypted VNI (libnetwork's
 *   `--pol none` DROP). These rules go in before the VNI's vxlan device exists (addNetwork
 *   first: libnetwork's 2023 fix f1945d37, fail closed) and each change is one transaction.
 * - XFRM policies, per remote host: `dir out` src/dst host prefixes `proto udp dport 4789`
 *   `mark 0xd0c4e3/0xffffffff`, template ESP transport with the primary key's SPI.
 * - XFRM states (SAs), per remote host: one to receive with every key of the ring, one to send
 *   with the primary. A rotation installs the new receive SA and the new send SA, swaps the
 *   policy's template in place (one XFRM_MSG_UPDPOLICY: never a moment without a policy), then
 *   removes the old send SA and the dropped key's receive SA (encryption.go's sequence
 *   −rSA0, +rSA3, +fSA2, +fSP2/−fSP1, −fSA1, with the removals last).
 *
 * This kernel (6.18 here) has XFRM and nft's ipsec matches but no ESP and no GCM: SAs cannot be
 * added. encryptionUnsupported() says so, and the overlay driver refuses `-o encrypted` with that
 * reason. The plane can still program everything but the SAs (`states: false`), which is what
 * the tests run here; with the policy in place and no SA, marked traffic is dropped, not sent.
 */
import { TnetError } from '../../libnetwork/errors.js';
import {
  type Netns,
  Nft,
  type NftCommand,
  type XfrmCommand,
  familyOf,
  ipBytes,
  xfrmApply,
  xfrmPolicyDel,
  xfrmPolicyList,
  xfrmPolicyUpdate,
  xfrmStateAdd,
  xfrmStateDel,
  xfrmStateFlush,
  xfrmStateProbe,
} from '../../libnetwork/kernel/index.js';
import type { EncryptionKey, KeyRing } from './keys.js';

/** libnetwork's packet mark and SA reqid for encrypted overlay traffic (both 0xD0C4E3). */
export const IPSEC_MARK = 0xd0c4e3;
export const IPSEC_REQID = 0xd0c4e3;
export const VXLAN_PORT = 4789;
/** The AEAD and its ICV length, as libnetwork sets them. */
export const AEAD = 'rfc4106(gcm(aes))';
export const ICV_BITS = 64;

const probes = new Map<4 | 6, Promise<string | undefined>>();

/**
 * Whether this kernel can run IPsec ESP with AES-GCM for an IPv4 (or IPv6) underlay: undefined
 * when it can, else the reason, for people. Probed once per process (~10 ms) by adding an SA in
 * a throwaway network namespace, so nothing is changed anywhere.
 */
export function encryptionUnsupported(family: 4 | 6 = 4): Promise<string | undefined> {
  let p = probes.get(family);
  if (!p) {
    p = probe(family);
    probes.set(family, p);
  }
  return p;
}

async function probe(family: 4 | 6): Promise<string | undefined> {
  const [src, dst] = family === 4 ? ['192.0.2.1', '192.0.2.2'] : ['2001:db8::1', '2001:db8::2'];
  const esp = family === 4 ? 'INET_ESP' : 'INET6_ESP';
  const refused = await xfrmStateProbe({
    src,
    dst,
    spi: 0x100,
    reqid: IPSEC_REQID,
    aead: { name: AEAD, key: Buffer.alloc(20), icvBits: ICV_BITS },
  });
  if (refused === undefined) return undefined;
  const said = refused.replace(/^Error: /, '');
  // The kernel checks the algorithm before the protocol: "AEAD algorithm not found" is missing
  // GCM (or crypto at all), "type not found" is GCM present but no ESP.
  if (/AEAD algorithm not found/i.test(said)) return `IPsec ESP with AES-GCM is unsupported on this kernel (no CRYPTO_GCM / ${esp}: '${said}')`;
  if (/type not found/i.test(said)) return `IPsec ESP with AES-GCM is unsupported on this kernel (no ${esp}: '${said}')`;
  return `IPsec ESP with AES-GCM could not be checked on this host ('${said}'): encrypted networks need root and iproute2's ip`;
}

/** Go's 16-byte form of an address (net.ParseIP): IPv4 as ::ffff:a.b.c.d. */
const V4_IN_V6 = Buffer.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
const ip16 = (ip: string): Buffer => (familyOf(ip) === 4 ? Buffer.concat([V4_IN_V6, ipBytes(ip)]) : ipBytes(ip));

/**
 * The SPI of the SA from `src` to `dst` for key `tag`: FNV-1a-32 over src, tag (4 bytes big
 * endian) and dst, as libnetwork's buildSPI (which hashes Go's 16-byte addresses, so IPv4 is
 * hashed as ::ffff:a.b.c.d here too: the same SPIs as libnetwork for the same hosts and tags).
 */
export function buildSpi(src: string, dst: string, tag: number): number {
  const t = Buffer.alloc(4);
  t.writeUInt32BE(tag >>> 0);
  let h = 0x811c9dc5;
  for (const b of [ip16(src), t, ip16(dst)]) {
    for (const byte of b) {
      h ^= byte;
      h = Math.imul(h, 0x01000193) >>> 0;
    }
  }
  return h >>> 0;
}

/** The nft table of an instance's encrypted networks. A dot never appears in a scope, so no bridge table clashes. */
export const ipsecTableName = (scope: string) => (scope ? `tnet-${scope}.ipsec` : 'tnet.ipsec');

const FAMILY = 'inet';
const payload = (protocol: string, field: string) => ({ payload: { protocol, field } });
const eq = (left: unknown, right: unknown) => ({ match: { op: '==', left, right } });

/** The whole table for these VNIs (replacing what was there): one transaction, no moment without the drops. */
export function ipsecRules(table: string, vnis: readonly number[]): NftCommand[] {
  const T = { family: FAMILY, table };
  const tableObj = { family: FAMILY, name: table };
  const chain = (name: string, type: string, hook: string, prio: number): NftCommand => ({ add: { chain: { ...T, name, type, hook, prio, policy: 'accept' } } });
  const rule = (ch: string, comment: string, ...expr: unknown[]): NftCommand => ({ add: { rule: { ...T, chain: ch, comment, expr } } });
  const cmds: NftCommand[] = [
    { add: { table: tableObj } },
    { delete: { table: tableObj } },
    { add: { table: tableObj } },
    // mangle priority, route type: a changed mark makes the kernel look the route and the XFRM
    // policy up again (iptables' mangle OUTPUT does the same).
    chain('output', 'route', 'output', -150),
    chain('postrouting', 'filter', 'postrouting', -150),
    chain('input', 'filter', 'input', -150),
  ];
  for (const vni of [...vnis].sort((a, b) => a - b)) {
    // The VNI is bits 32..55 of the VXLAN header, right after the 8-byte UDP header: @th,96,24.
    const vxlan = [eq(payload('udp', 'dport'), VXLAN_PORT), eq({ payload: { base: 'th', offset: 96, len: 24 } }, vni)];
    const c = `vni ${vni}`;
    cmds.push(
      rule('output', c, ...vxlan, { mangle: { key: { meta: { key: 'mark' } }, value: IPSEC_MARK } }),
      rule('postrouting', c, ...vxlan, eq({ meta: { key: 'mark' } }, IPSEC_MARK), eq({ rt: { key: 'ipsec' } }, false), { drop: null }),
      rule('input', c, ...vxlan, eq({ meta: { key: 'ipsec' } }, false), { drop: null }),
    );
  }
  return cmds;
}

export interface EncryptionPlaneOptions {
  /** The instance's scope (its table name). */
  readonly scope: string;
  /** Where the VXLAN sockets live (the vxlan devices' creating namespace); default: here. */
  readonly ns?: Netns;
  /** An nft handle in `ns` (the driver's); default: one of the plane's own, closed by close(). */
  readonly nft?: Nft;
  /**
   * Program the SAs (default true). false: everything but the SAs, for a kernel without ESP (the
   * tests on this machine); marked traffic then matches a policy without an SA and is dropped.
   */
  readonly states?: boolean;
}

/** What is programmed towards one remote host. */
export interface Programmed {
  /** Tag of the key this host sends with (the policy's template, the send SA). */
  readonly primary: number;
  /** Tags of the receive SAs. */
  readonly rx: ReadonlySet<number>;
}

const sa = (src: string, dst: string, k: EncryptionKey) => ({
  src,
  dst,
  spi: buildSpi(src, dst, k.tag),
  reqid: IPSEC_REQID,
  aead: { name: AEAD, key: k.aeadKey(), icvBits: ICV_BITS },
});

const policy = (src: string, dst: string, tag: number) => ({
  src,
  dst,
  dport: VXLAN_PORT,
  mark: { value: IPSEC_MARK, mask: 0xffffffff },
  spi: buildSpi(src, dst, tag),
  reqid: IPSEC_REQID,
});

/** Towards remotes that left: the policy first (then nothing selects the SAs), then the send SA and the receive SAs. */
function withdraw(local: string, gone: readonly (readonly [string, Programmed])[], states: boolean): XfrmCommand[] {
  const cmds: XfrmCommand[] = [];
  for (const [r, cur] of gone) {
    cmds.push(xfrmPolicyDel(policy(local, r, cur.primary)));
    if (states) {
      cmds.push(xfrmStateDel({ src: local, dst: r, spi: buildSpi(local, r, cur.primary) }));
      for (const tag of cur.rx) cmds.push(xfrmStateDel({ src: r, dst: local, spi: buildSpi(r, local, tag) }));
    }
  }
  return cmds;
}

/**
 * The XFRM commands, in order, that take the kernel from `current` to `remotes` with `ring`, and
 * what is programmed after them. Per remote: receive SAs for new keys, the send SA of a new
 * primary, the policy's template swapped in place, then the old send SA and the receive SAs of
 * dropped keys; remotes that left are withdrawn last. `states` false: policies only.
 */
export function planRemotes(
  local: string,
  current: ReadonlyMap<string, Programmed>,
  remotes: readonly string[],
  ring: KeyRing,
  states: boolean,
): { cmds: XfrmCommand[]; next: Map<string, Programmed> } {
  const inRing = new Set(ring.tags);
  const primary = ring.primary;
  const cmds: XfrmCommand[] = [];
  const next = new Map<string, Programmed>();
  for (const r of remotes) {
    const cur = current.get(r);
    if (states) {
      for (const k of ring.keys) if (!cur?.rx.has(k.tag)) cmds.push(xfrmStateAdd(sa(r, local, k)));
      if (cur?.primary !== primary.tag) cmds.push(xfrmStateAdd(sa(local, r, primary)));
    }
    // One XFRM_MSG_UPDPOLICY: never a moment without the policy.
    if (cur?.primary !== primary.tag) cmds.push(xfrmPolicyUpdate(policy(local, r, primary.tag)));
    if (states && cur) {
      if (cur.primary !== primary.tag) cmds.push(xfrmStateDel({ src: local, dst: r, spi: buildSpi(local, r, cur.primary) }));
      for (const tag of cur.rx) if (!inRing.has(tag)) cmds.push(xfrmStateDel({ src: r, dst: local, spi: buildSpi(r, local, tag) }));
    }
    next.set(r, { primary: primary.tag, rx: inRing });
  }
  cmds.push(...withdraw(local, [...current].filter(([r]) => !next.has(r)), states));
  return { cmds, next };
}

/**
 * The IPsec side of a host's encrypted overlay networks. The overlay driver calls addNetwork
 * before making an encrypted network's vxlan, removeNetwork after deleting it, setRemotes whenever
 * the set of remote VTEPs with endpoints on encrypted networks, or the key ring, changes, and
 * close() at the end (reset() at start-up removes what a crashed instance left).
 */
export class EncryptionPlane {
  readonly table: string;
  private readonly nft: Nft;
  private readonly ownNft: boolean;
  private readonly ns: Netns | undefined;
  private readonly states: boolean;
  private readonly vnis = new Set<number>();
  private readonly remotes = new Map<string, Programmed>();
  private local: string | undefined;
  /** A batch failed part way: what is in the kernel is not known, start the next one from a flush. */
  private dirty = false;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(opts: EncryptionPlaneOptions) {
    this.table = ipsecTableName(opts.scope);
    this.ns = opts.ns;
    this.states = opts.states ?? true;
    this.ownNft = opts.nft === undefined;
    this.nft = opts.nft ?? Nft.open(opts.ns);
  }

  private live(): void {
    if (this.closed) throw new TnetError('internal', `the encrypted overlay plane of table ${this.table} is closed`);
  }

  /** VNIs whose rules are in. */
  get networks(): number[] {
    return [...this.vnis].sort((a, b) => a - b);
  }

  /** Remote VTEPs with a policy, and the tag each sends with. */
  get programmed(): ReadonlyMap<string, number> {
    return new Map([...this.remotes].map(([r, p]) => [r, p.primary]));
  }

  /** The mark and drop rules of an encrypted VNI: before its vxlan device exists. Idempotent. */
  addNetwork(vni: number): void {
    this.live();
    if (!Number.isInteger(vni) || vni < 0 || vni > 0xffffff) throw new TnetError('invalid-argument', `VNI ${vni} is not between 0 and 16777215`);
    if (this.vnis.has(vni)) return;
    this.nft.apply(`add the IPsec rules of VNI ${vni} to table ${this.table}`, ipsecRules(this.table, [...this.vnis, vni]));
    this.vnis.add(vni);
  }

  /** Removes a VNI's rules (after its vxlan device is gone); with the last one, the table. */
  removeNetwork(vni: number): void {
    if (!this.vnis.has(vni)) return;
    const rest = [...this.vnis].filter((v) => v !== vni);
    if (rest.length === 0) this.nft.apply(`delete table ${this.table}`, this.dropTable());
    else this.nft.apply(`remove the IPsec rules of VNI ${vni} from table ${this.table}`, ipsecRules(this.table, rest));
    this.vnis.delete(vni);
  }

  /**
   * Makes the policies and SAs match: towards each of `remotes` (VTEPs of hosts with endpoints
   * on encrypted networks) from `local` (this host's VTEP), with `ring`'s keys. Operations run
   * one after another; each is one `ip -batch`.
   */
  setRemotes(local: string, remotes: readonly string[], ring: KeyRing): Promise<void> {
    this.live();
    const run = this.queue.then(() => this.apply(local, [...new Set(remotes)].filter((r) => r !== local), ring));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async apply(local: string, remotes: string[], ring: KeyRing): Promise<void> {
    if (this.states) {
      const why = await encryptionUnsupported(familyOf(local));
      if (why) throw new TnetError('unsupported', `encrypted overlay traffic from ${local}: ${why}`, { object: `VTEP ${local}` });
    }
    for (const r of remotes) {
      if (familyOf(r) !== familyOf(local)) throw new TnetError('invalid-argument', `remote VTEP ${r} is not of the family of this host's VTEP ${local}`, { object: `VTEP ${r}` });
    }
    if (this.dirty || (this.local !== undefined && this.local !== local)) {
      // After a failed batch (or a new local address) nothing programmed is trusted: start over.
      await this.clearKernel();
    }
    this.local = local;
    const primary = ring.primary;
    const { cmds, next } = planRemotes(local, this.remotes, remotes, ring, this.states);
    try {
      await xfrmApply(`encrypted overlay towards ${remotes.length} host(s) with key ${primary.tag}`, cmds, this.ns);
    } catch (e) {
      this.dirty = true;
      throw e;
    }
    this.remotes.clear();
    for (const [r, p] of next) this.remotes.set(r, p);
  }

  /** Removes the table if it is there ("add" first so the delete cannot fail). */
  private dropTable(): NftCommand[] {
    const table = { family: FAMILY, name: this.table };
    return [{ add: { table } }, { delete: { table } }];
  }

  /** Every encrypted-overlay policy (by its mark) and SA (by its reqid) in the namespace. */
  private async clearKernel(): Promise<void> {
    const ours = (await xfrmPolicyList(this.ns)).filter(
      (p) => p.dir === 'out' && p.mark?.value === IPSEC_MARK && p.mark.mask === 0xffffffff && p.proto === 'udp' && p.dport === VXLAN_PORT,
    );
    const cmds = ours.map((p) => xfrmPolicyDel({ src: p.src, dst: p.dst, dport: VXLAN_PORT, mark: { value: IPSEC_MARK, mask: 0xffffffff } }));
    cmds.push(xfrmStateFlush(IPSEC_REQID));
    await xfrmApply('remove the encrypted overlay policies and SAs', cmds, this.ns);
    this.remotes.clear();
    this.dirty = false;
  }

  /**
   * Removes what an earlier instance left in this namespace (a crash): every policy with the
   * encrypted-overlay mark, every SA with its reqid, and this instance's table. For the start-up
   * reconcile, before the networks are added again. Policies and SAs are per namespace, not per
   * instance: one instance per namespace runs encrypted networks (the daemon's).
   */
  async reset(): Promise<void> {
    this.live();
    const run = this.queue.then(async () => {
      await this.clearKernel();
      this.local = undefined;
      this.nft.apply(`delete table ${this.table}`, this.dropTable());
      this.vnis.clear();
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** Removes everything this plane made (goes on past an error and reports every one). */
  async close(): Promise<void> {
    if (this.closed) return;
    const errors: string[] = [];
    await this.queue;
    try {
      if (!this.dirty && this.local !== undefined && this.remotes.size > 0) {
        // Exactly what this plane made; if some of it is gone already (removed by hand, or by
        // another instance's reset), fall back to removing every encrypted-overlay policy and SA.
        await xfrmApply('remove the encrypted overlay policies and SAs', withdraw(this.local, [...this.remotes], this.states), this.ns).catch(() => this.clearKernel());
      } else if (this.dirty) await this.clearKernel();
      this.remotes.clear();
    } catch (e) {
      errors.push(String(e));
    }
    if (this.vnis.size > 0) {
      try {
        this.nft.apply(`delete table ${this.table}`, this.dropTable());
        this.vnis.clear();
      } catch (e) {
        errors.push(String(e));
      }
    }
    // Closed even after an error: a second close() must not free the nft context again.
    this.closed = true;
    if (this.ownNft) this.nft.close();
    if (errors.length) throw new TnetError('kernel', `closing the encrypted overlay plane: ${errors.join('; ')}`, { object: `table ${this.table}` });
  }
}
