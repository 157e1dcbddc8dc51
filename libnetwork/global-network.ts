/**
 * Global-scope networks (overlay): the record, its VNI and its pools live in the cluster's store
 * (ipam/global.ts), created and deleted there in one transaction by whichever host is asked, and
 * every host mirrors the record into its local state (cluster.ts follows the store). The mirror
 * is what the local verbs, views and the reconcile see: a global network is a local row whose
 * addresses come from the cluster's allocator.
 */
import type { Core } from './core.js';
import { DOCKER_ID, explain } from './core.js';
import { expandOptions } from './driverapi.js';
import { TnetError, conflict, invalid } from './errors.js';
import { forgetEndpoint, teardownEndpoint } from './endpoint.js';
import { IpAddr } from './ipam/address.js';
import type { GlobalNetwork } from './ipam/global.js';
import type { PoolRequest } from './ipam/ipam.js';
import { Subnet } from './ipam/subnet.js';
import { failpoint } from './failpoint.js';
import { log } from './log.js';
import type { IpConfig, Network, Owner } from './model.js';
import { checkName, short } from './names.js';
import { DNS_ADDRESS, VXLANID_LIST } from './netlabel.js';
import type { NetworkRequest } from './network.js';
import { newId } from './store/state.js';
import { transaction } from './txn.js';

/** The cluster, or the error that says why a global network cannot be made or changed now. */
export function clusterOf(core: Core, what: string) {
  const c = core.cluster();
  if (c) return c;
  if (core.vtep === undefined) {
    throw invalid(
      `${what}: global networks span hosts and need the global store: start the daemon with --store etcd://HOST:PORT (or TNET_STORE)`,
      'store',
    );
  }
  throw new TnetError('unavailable', `${what}: the global store has not been reached yet; retry when it is back (see the daemon's log)`, { object: 'store' });
}

/**
 * Creates a global network in the store (unique name and VNI across hosts, pools from the global
 * address space) and mirrors it here at once; the other hosts mirror it from their watch.
 */
export async function createGlobalNetwork(core: Core, req: NetworkRequest): Promise<Network> {
  const name = checkName('network', req.name);
  const { cluster, sync } = clusterOf(core, `network "${name}"`);
  const owner = req.owner ?? '';
  if (owner === 'docker') throw invalid(`network "${name}": Docker's networks are local-scope; a global network is created with tnet network create`, `network "${name}"`);
  if (req.id !== undefined && !DOCKER_ID.test(req.id)) throw invalid(`network ID ${JSON.stringify(req.id)} is not 64 lowercase hex digits`, `network ${String(req.id)}`);
  if (req.addresses === 'external') throw invalid(`network "${name}": a global network's addresses come from the cluster's IPAM`, `network "${name}"`);
  const local = core.state.findNetwork(name, '');
  if (local?.name === name) throw conflict(`network "${name}" already exists${core.isGlobal(local) ? '' : ' on this host'}`, `network "${name}"`);
  const factory = core.registry.factory(req.driver ?? '');
  // The id every host mirrors it under, chosen here so the driver checks the network it will make.
  const id = req.id ?? newId();
  const options = await core.driver(factory.type).checkNetwork({ id, name, internal: req.internal ?? false, options: expandOptions(factory, req.options ?? {}) });
  if (!req.ipv6 && (req.subnet6 || req.gateway6 || req.ipRange6)) throw invalid('an IPv6 subnet, gateway or range needs IPv6 enabled (--ipv6)', `network "${name}"`);
  const avoid = await core.taken();
  const pool = (family: 4 | 6, subnet?: string, gateway?: string, ipRange?: string, aux?: Readonly<Record<string, string>>): PoolRequest => {
    if (subnet && Subnet.parse(subnet).family !== family) throw invalid(`subnet ${subnet} is not IPv${family}${family === 4 ? '; give an IPv6 one with --subnet6 and --ipv6' : ''}`, `network "${name}"`);
    // No gateway unless one is asked for: an overlay is one flat segment with no router of
    // tnet's on it. A gateway given is reserved for whoever routes (a lab's router node), and
    // the endpoints' default routes go through it.
    return { subnet, ipRange, v6: family === 6, ...(gateway ? { gateway } : { noGateway: true }), auxAddresses: aux, avoid: subnet ? [] : avoid };
  };
  const pools = [pool(4, req.subnet, req.gateway, req.ipRange, req.auxAddresses)];
  if (req.ipv6) pools.push(pool(6, req.subnet6, req.gateway6, req.ipRange6, req.auxAddresses6));
  const vni = options[VXLANID_LIST] ? Number(options[VXLANID_LIST]) : undefined;
  const g = await cluster.networks.create({
    name, driver: factory.type, vni, pools, host: cluster.host,
    options, internal: req.internal ?? false,
    id,
    labels: req.labels ?? {},
    owner,
  });
  // From here the network exists for every host: a crash leaves it created (this host mirrors it
  // when it joins again), as a committed create should.
  failpoint('create-network:pools');
  try {
    const net = await sync.adopt(g);
    if (!net) throw conflict(`network "${name}" was created in the store but cannot be mirrored on this host (see the daemon's log)`, `network "${name}"`);
    failpoint('create-network:made');
    return net;
  } catch (e) {
    await cluster.networks.delete(name).catch((e2: unknown) => log.error({ err: e2, network: name }, 'the global record of a network that failed here is left'));
    throw explain(e);
  }
}

/** A global record as this host's row (pools in the cluster's allocator). */
function rowOf(g: GlobalNetwork): Network {
  const ip = (family: 4 | 6): IpConfig | undefined => {
    const p = g.pools.find((x) => Subnet.parse(x.subnet).family === family);
    return p ? { poolId: p.poolId, subnet: Subnet.parse(p.subnet), gateway: p.gateway ? IpAddr.parse(p.gateway) : undefined } : undefined;
  };
  return {
    id: g.id, name: g.name, owner: (g.owner ?? '') as Owner, driver: g.driver, state: 'creating', internal: g.internal ?? false,
    ipv4: ip(4), ipv6: ip(6), options: { ...g.options, [VXLANID_LIST]: String(g.vni), ...(g.dns ? { [DNS_ADDRESS]: g.dns } : {}) }, labels: g.labels ?? {}, addresses: 'tnet', created: g.created ?? new Date().toISOString(),
  };
}

/**
 * Mirrors a global network on this host: its row and the driver's kernel objects. Idempotent.
 * Undefined when it cannot be: a local network of this host already has its name (logged).
 */
export async function mirrorGlobalNetwork(core: Core, g: GlobalNetwork): Promise<Network | undefined> {
  const owner = (g.owner ?? '') as Owner;
  return core.locks.exclusive(`network-name:${owner}:${g.name.toLowerCase()}`, () =>
    core.locks.exclusive(g.id, async () => {
      const have = core.state.network(g.id);
      if (have?.state === 'ready') return have;
      const clash = core.state.findNetwork(g.name, owner);
      if (clash && clash.id !== g.id) {
        log.error({ network: g.name, local: short(clash.id) }, `global network "${g.name}" is not usable on this host: a network of this host has its name; rename or remove it, then restart the daemon`);
        return undefined;
      }
      const d = core.driver(g.driver);
      const net = have ?? rowOf(g);
      if (!have) core.state.unsynced(() => core.state.insertNetwork(net));
      try {
        await transaction((t) => d.createNetwork(net, t));
      } catch (e) {
        core.state.tx(() => core.state.deleteNetwork(net.id));
        throw explain(e);
      }
      core.state.tx(() => core.state.setNetworkState(net.id, 'ready'));
      const ready = { ...net, state: 'ready' as const };
      core.events.emit('network', 'up', ready);
      log.info({ network: g.name, vni: g.vni, by: g.createdBy }, 'global network mirrored on this host');
      return ready;
    }),
  );
}

/**
 * The global network is gone from the store: this host's endpoints on it go (their sandboxes
 * lose the interface), then its kernel objects and its row.
 */
export async function unmirrorGlobalNetwork(core: Core, name: string, owner: Owner = ''): Promise<void> {
  const net0 = core.state.findNetwork(name, owner);
  if (!net0 || net0.name !== name || !core.isGlobal(net0)) return;
  await core.locks.exclusive(net0.id, async () => {
    const net = core.state.network(net0.id);
    if (!net) return;
    for (const ep of core.state.endpointsOfNetwork(net.id)) {
      log.warn({ network: name, endpoint: short(ep.id) }, 'the global network was removed elsewhere: removing its endpoint here');
      await teardownEndpoint(core, net, ep, { sandboxGoing: false });
      await forgetEndpoint(core, net, ep);
      core.events.emit('endpoint', 'down', ep, net, ep.sandboxId ? core.state.sandbox(ep.sandboxId) : undefined);
    }
    await dropMirror(core, net);
  });
}

/** The mirror's kernel objects and row go (the caller holds the network's lock). */
async function dropMirror(core: Core, net: Network): Promise<void> {
  await core.cluster()?.sync.unfollow(net.name);
  await core.driver(net.driver).deleteNetwork(net);
  core.state.tx(() => core.state.deleteNetwork(net.id));
  core.events.emit('network', 'down', net);
}

/**
 * Deletes a global network (the caller holds its lock and checked this host has no endpoints on
 * it): refused by the store while any other host has endpoints (its peer records name them).
 * Then removed here at once; the other hosts follow their watch.
 */
export async function deleteGlobalNetwork(core: Core, net: Network): Promise<void> {
  const { cluster } = clusterOf(core, `network "${net.name}"`);
  await cluster.networks.delete(net.name);
  await dropMirror(core, net);
}
