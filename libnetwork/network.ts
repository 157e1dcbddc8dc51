/**
 * Networks: create (with an owner, given ids and pools for another engine's networks) and delete,
 * each an undoable transaction recorded before the kernel work. See core.ts for what they share.
 */
import { DEFAULT_DRIVER } from '../drivers/index.js';
import { expandOptions } from './driverapi.js';
import { DOCKER_ID, type Core, explain, ownedElsewhere, readyNetwork } from './core.js';
import { forgetEndpoint, teardownEndpoint } from './endpoint.js';
import { busy, conflict, invalid, isTnetError } from './errors.js';
import { failpoint } from './failpoint.js';
import { IpAddr } from './ipam/address.js';
import type { Pool } from './ipam/ipam.js';
import { Subnet } from './ipam/subnet.js';
import { log } from './log.js';
import type { AddressSource, IpConfig, Network, Owner } from './model.js';
import { checkName, short } from './names.js';
import { newId } from './store/state.js';
import { transaction } from './txn.js';
import { createGlobalNetwork, deleteGlobalNetwork } from './global-network.js';

/** One family's addressing of a new network. */
export interface SubnetRequest {
  readonly subnet?: string;
  readonly gateway?: string;
  readonly ipRange?: string;
  readonly auxAddresses?: Readonly<Record<string, string>>;
}

export interface NetworkRequest {
  /** Required, except for Docker's networks (named after their id). */
  readonly name?: string;
  /** An id a face hands in (Docker's NetworkID); default a new one. */
  readonly id?: string;
  readonly owner?: Owner;
  readonly driver?: string;
  readonly subnet?: string;
  readonly gateway?: string;
  readonly ipRange?: string;
  readonly auxAddresses?: Readonly<Record<string, string>>;
  readonly ipv6?: boolean;
  readonly subnet6?: string;
  readonly gateway6?: string;
  readonly ipRange6?: string;
  readonly auxAddresses6?: Readonly<Record<string, string>>;
  readonly internal?: boolean;
  /** Driver options: full keys or the driver's short forms. */
  readonly options?: Readonly<Record<string, string>>;
  readonly labels?: Readonly<Record<string, string>>;
  /**
   * 'external': another IPAM (dockerd's, or tnet's IpamDriver on dockerd's behalf) hands out the
   * addresses in `addressSpace`. The network then only records its subnets: it takes a reference
   * on tnet's identical shared pool if there is one, else reserves the subnet so nothing else
   * of tnet's overlaps it.
   */
  readonly addresses?: AddressSource;
  readonly addressSpace?: string;
}

/** The owner text of a network's own pools: what a half-made network's pools are found by. */
const poolOwner = (n: Pick<Network, 'id' | 'name'>) => `network ${n.name} ${short(n.id)}`;

export async function createNetwork(core: Core, req: NetworkRequest): Promise<Network> {
  const owner = req.owner ?? '';
  if (req.id !== undefined && !DOCKER_ID.test(req.id))
    throw invalid(`network ID ${JSON.stringify(req.id)} is not 64 lowercase hex digits`, `network ${String(req.id)}`);
  const id = req.id ?? newId();
  const name = req.name === undefined && owner === 'docker' ? dockerName(core, id) : checkName('network', req.name);
  const factory = core.registry.factory(req.driver ?? DEFAULT_DRIVER);
  if (factory.scope === 'global') return createGlobalNetwork(core, { ...req, driver: factory.type });
  const driver = core.driver(factory.type);
  return core.locks.exclusive(`network-name:${owner}:${name.toLowerCase()}`, () =>
    core.locks.exclusive(id, async () => {
      if (core.state.findNetwork(name, owner)?.name === name) throw conflict(`network "${name}" already exists`, `network "${name}"`);
      // A network's name is a DNS zone (`w.web`), and DNS ignores case (names.ts dnsNameClash).
      const twin = core.state.networks().find((n) => n.owner === owner && n.name !== name && n.name.toLowerCase() === name.toLowerCase());
      if (twin) throw conflict(`network "${name}" differs only in case from network "${twin.name}"; DNS names ignore case, so their names (NAME.${name}) would be one`, `network "${name}"`);
      if (core.state.network(id)) throw conflict(`network ${short(id)} already exists`, `network ${short(id)}`);
      const internal = req.internal ?? false;
      const options = await driver.checkNetwork({ id, name, internal, options: expandOptions(factory, req.options ?? {}) });
      if (!req.ipv6 && (req.subnet6 || req.gateway6 || req.ipRange6))
        throw invalid('an IPv6 subnet, gateway or range needs IPv6 enabled (--ipv6)', `network "${name}"`);
      const addresses = req.addresses ?? 'tnet';
      if (addresses === 'tnet' && req.subnet && Subnet.parse(req.subnet).family === 6)
        throw invalid(`subnet ${req.subnet} is IPv6; give it with --subnet6 and --ipv6`, `network "${name}"`);
      // The intent first, without pools: a crash before the pools are recorded leaves a row that
      // names their owner, and the reconcile releases them.
      const intent: Network = {
        id, name, owner, driver: factory.type, state: 'creating', internal, ipv4: undefined, ipv6: undefined,
        options, labels: req.labels ?? {}, addresses, created: new Date().toISOString(),
      };
      core.state.unsynced(() => core.state.insertNetwork(intent));
      failpoint('create-network:intent');
      let net = intent;
      try {
        const v4 = { subnet: req.subnet, gateway: req.gateway, ipRange: req.ipRange, auxAddresses: req.auxAddresses };
        const v6 = { subnet: req.subnet6, gateway: req.gateway6, ipRange: req.ipRange6, auxAddresses: req.auxAddresses6 };
        const pool = (r: SubnetRequest, family: 4 | 6) =>
          addresses === 'external' ? externalPool(core, intent, r, family, req.addressSpace) : ownPool(core, intent, r, family);
        // `net` holds what is taken so far, so a failure below gives back a shared pool's reference too.
        net = { ...net, ipv4: await pool(v4, 4) };
        if (req.ipv6) net = { ...net, ipv6: await pool(v6, 6) };
        failpoint('create-network:pools');
        await transaction((t) => driver.createNetwork(net, t));
        failpoint('create-network:made');
      } catch (e) {
        await forgetNetwork(core, net);
        throw explain(e);
      }
      // The pools are recorded with the 'ready' flip: until then they are found by their owner text.
      core.state.tx(() => {
        core.state.setNetworkPools(id, net.ipv4, net.ipv6);
        core.state.setNetworkState(id, 'ready');
      });
      failpoint('create-network:ready');
      const ready = { ...net, state: 'ready' as const };
      core.events.emit('network', 'up', ready);
      return ready;
    }),
  );
}

/** dockerd keeps its networks' names; tnet shows them as docker-<short id> (the full id if that is taken). */
function dockerName(core: Core, id: string): string {
  const name = `docker-${short(id)}`;
  return core.state.findNetwork(name, 'docker')?.name === name ? id : name;
}

/** A pool of the network's own: the given subnet, or the first free default one. */
async function ownPool(core: Core, net: Network, r: SubnetRequest, family: 4 | 6): Promise<IpConfig | undefined> {
  const s = r.subnet ? Subnet.tryParse(r.subnet) : undefined;
  if (s) {
    // The cluster's subnets are not in this host's IPAM: a global network's subnet is everyone's.
    const g = core.state.networks().find((n) => core.isGlobal(n) && [n.ipv4?.subnet, n.ipv6?.subnet].some((x) => x?.overlaps(s)));
    if (g) throw conflict(`subnet ${s} overlaps global network "${g.name}" (${g.ipv4?.subnet ?? g.ipv6?.subnet}), which spans every host of the cluster`, `subnet "${s}"`);
  }
  const avoid = r.subnet ? [] : await core.taken();
  const pool = await core.ipam.requestPool({
    subnet: r.subnet, ipRange: r.ipRange, gateway: r.gateway, auxAddresses: r.auxAddresses, v6: family === 6, avoid, owner: poolOwner(net),
    durable: false, // the network's 'ready' commit carries it to disk
  });
  return { poolId: pool.id, subnet: pool.subnet, gateway: pool.gateway };
}

/**
 * The pool a network whose addresses come from another IPAM is recorded in. tnet's IpamDriver
 * made it: the network takes its own reference (an identical shared request). Another IPAM made
 * it: a pool that reserves the subnet (and gateway and aux addresses) and hands nothing out.
 */
async function externalPool(core: Core, net: Network, r: SubnetRequest, family: 4 | 6, space = ''): Promise<IpConfig | undefined> {
  if (!r.subnet) return undefined;
  let subnet: Subnet;
  try {
    subnet = Subnet.parse(r.subnet);
  } catch (e) {
    throw invalid(`IPv${family} pool "${r.subnet}" is not a subnet: ${(e as Error).message}`, `pool "${r.subnet}"`);
  }
  if (subnet.family !== family) throw invalid(`pool ${subnet} is not IPv${family}`, `pool "${r.subnet}"`);
  const gateway = r.gateway ? IpAddr.parse(r.gateway) : undefined;
  if (gateway && !subnet.contains(gateway)) throw invalid(`gateway ${gateway} is not in subnet ${subnet}`, `gateway "${r.gateway}"`);
  const ours = (await core.ipam.listPools()).find((p) => p.shared && p.addressSpace === space && p.subnet.equals(subnet));
  let pool: Pool;
  if (ours) {
    pool = await core.ipam.requestPool({
      addressSpace: ours.addressSpace, subnet: ours.subnet.toString(), ipRange: ours.range.toString(),
      ...(ours.gateway ? { gateway: ours.gateway.toString() } : { noGateway: true }),
      auxAddresses: Object.fromEntries(Object.entries(ours.auxAddresses).map(([k, a]) => [k, a.toString()])),
      shared: true,
    });
  } else {
    const aux: Record<string, string> = {};
    for (const [k, v] of Object.entries(r.auxAddresses ?? {})) if (!gateway?.equals(IpAddr.parse(v))) aux[k] = v;
    pool = await core.ipam.requestPool({
      addressSpace: `${net.owner || 'external'}:${space || 'unknown'}`, subnet: subnet.toString(),
      ...(gateway ? { gateway: gateway.toString() } : { noGateway: true }),
      auxAddresses: aux, owner: poolOwner(net),
    });
  }
  return { poolId: pool.id, subnet, gateway };
}

/** Drops a network's row and its pools (a failed create, a delete, an interrupted one). */
export async function forgetNetwork(core: Core, net: Network): Promise<void> {
  if (core.isGlobal(net)) {
    // Its pools are the cluster's record's: they go with it (GlobalNetworks.delete), not with a mirror.
    core.state.tx(() => core.state.deleteNetwork(net.id));
    return;
  }
  const ids = new Set([net.ipv4?.poolId, net.ipv6?.poolId].filter((p): p is string => p !== undefined));
  for (const p of await core.ipam.listPools({ owner: poolOwner(net) })) ids.add(p.id);
  for (const id of ids) {
    try {
      await core.ipam.releasePool(id);
    } catch (e) {
      if (!isTnetError(e, 'not-found')) throw e;
    }
  }
  failpoint('network:pools-released');
  core.state.tx(() => core.state.deleteNetwork(net.id));
}

/**
 * Deletes a network. `owner`: the face acting (a network is deleted only by its owner's face).
 * `removeEndpoints`: endpoints still on it go with it (dockerd removes its endpoints first, so
 * any left are stale: a DeleteEndpoint lost while tnet was down); otherwise they make it busy.
 */
export async function deleteNetwork(core: Core, ref: string, opts: { owner?: Owner; removeEndpoints?: boolean } = {}): Promise<void> {
  const owner = opts.owner ?? '';
  const found = readyNetwork(core, ref, opts.owner === undefined ? undefined : owner);
  await core.locks.exclusive(found.id, async () => {
    const net = readyNetwork(core, found.id);
    if (net.owner !== owner) throw ownedElsewhere('network', net.name, net.owner);
    const eps = core.state.endpointsOfNetwork(net.id);
    if (eps.length > 0 && !opts.removeEndpoints) {
      const who = eps.map((e) => (e.sandboxId ? core.state.sandbox(e.sandboxId)?.name : undefined) ?? e.name);
      throw busy(
        `network "${net.name}" still has ${eps.length} endpoint(s) (${who.slice(0, 5).join(', ')}${who.length > 5 ? ', ...' : ''}); disconnect them first`,
        `network "${net.name}"`,
      );
    }
    if (core.isGlobal(net)) return deleteGlobalNetwork(core, net);
    const d = core.driver(net.driver);
    for (const ep of eps) {
      log.info({ network: net.name, endpoint: short(ep.id) }, 'removing a stale endpoint with its network');
      await teardownEndpoint(core, net, ep, { sandboxGoing: false });
      await forgetEndpoint(core, net, ep);
    }
    core.state.unsynced(() => core.state.setNetworkState(net.id, 'deleting'));
    failpoint('delete-network:deleting');
    await d.deleteNetwork(net);
    failpoint('delete-network:driver-done');
    await forgetNetwork(core, net);
    core.events.emit('network', 'down', net);
  });
}
