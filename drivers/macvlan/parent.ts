/**
 * A macvlan network's parent: an interface the user named (used as it is, never deleted), an
 * 802.1Q sub-interface tnet makes for a name like eth0.10, or, without a parent, a link tnet
 * makes and owns (an internal segment: a dummy where the kernel has one, else a bridge with no
 * ports, which carries bridge-mode siblings just as well; measured here, see macvlan.md).
 */
import { invalid, notFound, unsupported } from '../../libnetwork/errors.js';
import { type Link, type Rtnl, isErrno, linkAdd, linkByName, linkDelIfExists } from '../../libnetwork/kernel/index.js';
import { PARENT, type VlanParent, vlanParent } from './options.js';

/** What tnet made as a network's parent (recorded, so a reboot brings it back and a delete takes only it). */
export type MadeParent = { readonly name: string; readonly kind: 'dummy' | 'bridge' } | { readonly name: string; readonly kind: 'vlan'; readonly vlan: VlanParent };

/** An existing link refused as a parent, and why; undefined when it can be one. */
export function parentProblem(l: Link): string | undefined {
  if (l.name === 'lo' || l.index === 1) return 'loopback interface is not a valid macvlan parent link';
  return undefined;
}

/**
 * Checks a parent the user named before anything is recorded: an existing usable link, or a
 * sub-interface name whose base exists. Returns the VLAN to make, if any.
 */
export async function checkParent(h: Rtnl, name: string): Promise<VlanParent | undefined> {
  const l = await linkByName(h, name);
  if (l) {
    const problem = parentProblem(l);
    if (problem) throw invalid(problem, `option ${PARENT}`);
    return undefined;
  }
  const vlan = vlanParent(name);
  if (!(await linkByName(h, vlan.base)))
    throw notFound(`-o parent interface was not found on the host: ${vlan.base} (needed to make the 802.1Q sub-interface ${name})`, `link "${vlan.base}"`);
  return vlan;
}

/**
 * Makes the internal segment's parent: a dummy, or where the kernel has none, a bridge with no
 * ports. (A kind the kernel lacks is refused with EOPNOTSUPP, which the netlink package names ENOTSUP.)
 */
export async function makeOwnParent(h: Rtnl, name: string, alias: string): Promise<MadeParent> {
  try {
    await linkAdd(h, { kind: 'dummy', name, up: true, alias });
    return { name, kind: 'dummy' };
  } catch (e) {
    if (!isErrno(e, 'EOPNOTSUPP', 'ENOTSUP')) throw e;
  }
  await linkAdd(h, { kind: 'bridge', name, up: true, alias });
  return { name, kind: 'bridge' };
}

/** Makes an 802.1Q sub-interface; a kernel without 802.1Q gets a clear "unsupported" (exit 5 at the CLI). */
export async function makeVlanParent(h: Rtnl, name: string, vlan: VlanParent, alias: string): Promise<MadeParent> {
  const base = await linkByName(h, vlan.base);
  if (!base) throw notFound(`-o parent interface was not found on the host: ${vlan.base}`, `link "${vlan.base}"`);
  try {
    await linkAdd(h, { kind: 'vlan', name, parent: base.index, vid: vlan.vid, up: true, alias });
  } catch (e) {
    if (isErrno(e, 'EOPNOTSUPP', 'ENOTSUP'))
      throw unsupported(
        `cannot make the parent ${name}: 802.1Q VLAN sub-interfaces are not supported on this kernel (CONFIG_VLAN_8021Q is not set); ` +
          'name an existing interface as the parent, or make the VLAN interface another way',
        `link "${name}"`,
      );
    throw e;
  }
  return { name, kind: 'vlan', vlan };
}

/** Makes again what tnet made (after a reboot); the same kinds the first time chose. */
export async function remakeParent(h: Rtnl, made: MadeParent, alias: string): Promise<void> {
  if (made.kind === 'vlan') await makeVlanParent(h, made.name, made.vlan, alias);
  else await linkAdd(h, { kind: made.kind, name: made.name, up: true, alias });
}

/** Deletes a parent tnet made, only when the link of that name still carries tnet's tag for it. */
export async function deleteMadeParent(h: Rtnl, made: MadeParent, isOurs: (alias: string | undefined) => boolean): Promise<void> {
  const l = await linkByName(h, made.name);
  if (l && isOurs(l.alias)) await linkDelIfExists(h, made.name);
}
