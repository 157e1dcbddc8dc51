/**
 * The Docker face of tnet's overlay networks: the `tnet-overlay` NetworkDriver and the part of the
 * `tnet` IpamDriver that hands out a tnet overlay's addresses.
 *
 * dockerd 20.10 refuses a remote driver of global scope outside swarm ("This node is not a swarm
 * manager"), and swarm refuses legacy plugins (../shared/reference/overlay.md section 4). So the
 * overlay reaches Docker as a local-scope driver (ConnectivityScope "global", which dockerd
 * accepts outside swarm): on each host, `docker network create -d tnet-overlay --ipam-driver tnet
 * --ipam-opt tnet.network=NAME NAME` makes a Docker network of that host (its own NetworkID) over
 * the one tnet overlay NAME, which exists once for the whole cluster (`tnet network create -d
 * overlay NAME`, on any host). tnet does the cross-host part itself: the overlay's record, VNI and
 * addresses live in the global store, and each endpoint's peer record reaches the other hosts.
 *
 * Nothing is recorded for the mapping, so nothing can be lost: the IpamDriver hands dockerd the
 * overlay's own pool (PoolID = the global pool's id, the subnet = the overlay's), so dockerd's
 * addresses come from the cluster's allocator, unique across hosts; an endpoint's address then
 * names its overlay (global subnets never overlap), and the endpoint row names it from there on.
 * A Docker NetworkID is never needed after CreateNetwork, which only checks the request.
 *
 * An overlay has no gateway unless it was created with one: the pool is returned with Docker's
 * gateway key set to 0.0.0.0/0 (::/0), so dockerd asks for no gateway address (Calico's way), and
 * Join says DisableGatewayService, so dockerd adds no docker_gwbridge either: the container's
 * only route on the overlay is its subnet, as with `tnet connect`.
 */
import type { Controller } from '../controller.js';
import { invalid, isTnetError, notFound } from '../errors.js';
import { IpAddr } from '../ipam/address.js';
import { Subnet } from '../ipam/subnet.js';
import { log } from '../log.js';
import type { Endpoint, IpConfig, Network } from '../model.js';
import { GENERIC, MAC_ADDRESS, TNET_NETWORK } from '../netlabel.js';
import type {
  CreateEndpointRequest, CreateEndpointResponse, CreateNetworkRequest, EndpointRef, JoinRequest, JoinResponse, NetworkDriverApi, NetworkRef,
  ProgramRequest, RequestAddressRequest, RequestAddressResponse, RequestPoolRequest, RequestPoolResponse, ReleaseAddressRequest,
} from './docker.js';
import { GATEWAY_REQUEST, REQUEST_ADDRESS_TYPE, addressOfCidr, parsePortMap } from './docker.js';
import { containerNames } from './docker-api.js';

/** The option naming the tnet overlay: `--ipam-opt tnet.network=NAME` (required), `-o tnet.network=NAME` (optional, checked). */
export { TNET_NETWORK };
/** The tnet driver behind `-d tnet-overlay`. */
export const OVERLAY_DRIVER = 'overlay';
/** How often and how long the container's name is asked of dockerd after a Join. */
const NAME_RETRY_MS = 200;
const NAME_TRIES = 50;
/** What dockerd reads as "the pool has no gateway": the default route's prefix (Calico's trick). */
const NO_GATEWAY = { 4: '0.0.0.0/0', 6: '::/0' } as const;

const short = (id: string) => id.slice(0, 12);
const HOW = `create the Docker network with --ipam-driver tnet --ipam-opt ${TNET_NETWORK}=NAME, where NAME is a tnet overlay network (tnet network create -d overlay NAME, once, on any host)`;

/** A ready tnet overlay network by name. */
function overlayByName(c: Controller, name: string): Network {
  if (!c.cluster && !overlays(c).length)
    throw invalid(`tnet overlay network "${name}": this tnet daemon has not joined a global store (started without --store etcd://HOST:PORT, or the store is not reachable yet: see its log)`, 'store');
  const net = c.findNetwork(name, '');
  if (!net || net.name !== name || net.driver !== OVERLAY_DRIVER) {
    const why = net && net.name === name ? `"${name}" is a ${net.driver} network, not an overlay` : `there is no tnet overlay network "${name}" on this host`;
    throw notFound(`${why}: create it once, on any host, with tnet network create -d overlay ${name} (a host started with --store sees it within a second)`, `network "${name}"`);
  }
  if (net.state !== 'ready') throw notFound(`tnet overlay network "${name}" is being ${net.state === 'creating' ? 'created' : 'deleted'}`, `network "${name}"`);
  return net;
}

function overlays(c: Controller): Network[] {
  return c.networks({ owner: '' }).filter((n) => n.driver === OVERLAY_DRIVER && n.state === 'ready');
}

/** The overlay and family a pool id belongs to, or undefined (a pool of tnet's local IPAM). */
export function overlayOfPool(c: Controller, poolId: string): { net: Network; family: 4 | 6; cfg: IpConfig } | undefined {
  for (const net of overlays(c)) {
    if (net.ipv4?.poolId === poolId) return { net, family: 4, cfg: net.ipv4 };
    if (net.ipv6?.poolId === poolId) return { net, family: 6, cfg: net.ipv6 };
  }
  return undefined;
}

/**
 * Whether the IpamDriver call is about an overlay's pool: one of a mirrored overlay, or one that
 * was (the cluster's pool ids are `g-<uuid>`, ipam/global.ts; the local ones bare UUIDs), whose
 * overlay `tnet network rm` removed while a Docker network over it stayed.
 */
export function isOverlayPool(c: Controller, poolId: string): boolean {
  return poolId.startsWith('g-') || overlayOfPool(c, poolId) !== undefined;
}

/** The overlay whose subnet holds `a` (global subnets do not overlap). */
function overlayOfAddress(c: Controller, a: IpAddr): Network | undefined {
  return overlays(c).find((n) => (a.family === 4 ? n.ipv4 : n.ipv6)?.subnet.contains(a));
}

// ------------------------------------------------------------------ the IpamDriver part

/**
 * The `tnet` IpamDriver for pools of a tnet overlay (DockerIpam hands these calls here): the
 * overlay's pool, and addresses from the cluster's allocator, owned by `docker@<this host>`.
 */
export class OverlayIpam {
  constructor(private readonly c: Controller) {}

  /** Who holds the addresses dockerd asks for on this host (RequestAddress names no endpoint). */
  private get owner(): string {
    return `docker@${this.c.cluster?.host ?? this.c.instance}`;
  }

  requestPool(r: RequestPoolRequest): RequestPoolResponse {
    const name = r.Options?.[TNET_NETWORK] ?? '';
    const net = overlayByName(this.c, name);
    const family = r.V6 === true ? 6 : 4;
    const cfg = family === 4 ? net.ipv4 : net.ipv6;
    if (!cfg) throw invalid(`tnet overlay network "${name}" has no IPv${family} subnet${family === 6 ? ' (it was created without --ipv6)' : ''}`, `network "${name}"`);
    if (r.Pool && Subnet.parse(r.Pool).toString() !== cfg.subnet.toString())
      throw invalid(`--subnet ${r.Pool} is not the subnet of tnet overlay network "${name}" (${cfg.subnet}); leave --subnet out`, `network "${name}"`);
    if (r.SubPool) throw invalid(`--ip-range is not supported on a tnet overlay: its addresses are shared by every host (set the range with tnet network create --ip-range)`, `network "${name}"`);
    const gateway = cfg.gateway ? `${cfg.gateway}/${cfg.subnet.prefix}` : NO_GATEWAY[family];
    return { PoolID: cfg.poolId, Pool: cfg.subnet.toString(), Data: { [GATEWAY_REQUEST]: gateway } };
  }

  /** The pool is the overlay's own, which outlives every Docker network over it: nothing to release. */
  releasePool(_r: { PoolID: string }): void {}

  async requestAddress(r: RequestAddressRequest): Promise<RequestAddressResponse> {
    const { net, cfg } = this.pool(r.PoolID);
    if (r.Options?.[REQUEST_ADDRESS_TYPE] === GATEWAY_REQUEST) {
      // Only with --gateway (the pool named none, or its own): it must be the overlay's.
      if (cfg.gateway && (!r.Address || IpAddr.parse(r.Address).equals(cfg.gateway))) return { Address: `${cfg.gateway}/${cfg.subnet.prefix}`, Data: {} };
      throw invalid(
        `tnet overlay network "${net.name}" ${cfg.gateway ? `has the gateway ${cfg.gateway}, not ${r.Address}` : 'has no gateway'}; leave --gateway out (it is set with tnet network create --gateway)`,
        `network "${net.name}"`,
      );
    }
    const a = await this.c.requestGlobalAddress(net.id, r.PoolID, { address: r.Address || undefined, owner: this.owner });
    return { Address: `${a}/${cfg.subnet.prefix}`, Data: {} };
  }

  /**
   * Frees an address dockerd let go (the core leaves a Docker endpoint's addresses to this call,
   * as on Docker's local networks), unless it is not this host's Docker's any more (another host
   * took it meanwhile) or a live endpoint here has it. Idempotent.
   */
  async releaseAddress(r: ReleaseAddressRequest): Promise<void> {
    if (!overlayOfPool(this.c, r.PoolID)) return; // the overlay went, and its addresses with it
    const { net, cfg } = this.pool(r.PoolID);
    const a = IpAddr.parse(r.Address);
    if (cfg.gateway?.equals(a)) return;
    const held = (await this.c.globalAddressesOf(net.id, r.PoolID)).find((x) => x.address.equals(a));
    if (!held) return;
    if (held.owner !== this.owner) {
      log.warn({ network: net.name, address: a.toString(), owner: held.owner }, 'ReleaseAddress of an address dockerd of this host does not hold: left alone');
      return;
    }
    if (this.c.endpointsOfNetwork(net.id).some((e) => e.ipv4?.equals(a) || e.ipv6?.equals(a))) return;
    await this.c.releaseGlobalAddress(net.id, r.PoolID, a.toString()).catch((e: unknown) => {
      if (!isTnetError(e, 'not-found')) throw e;
    });
  }

  private pool(poolId: string): { net: Network; cfg: IpConfig } {
    const p = overlayOfPool(this.c, poolId);
    if (!p)
      throw notFound(
        `the tnet overlay of this Docker network is gone (pool ${poolId}; removed with tnet network rm?): remove the Docker network with docker network rm, and create it again over an overlay that exists`,
        `pool "${poolId}"`,
      );
    return p;
  }
}

// ------------------------------------------------------------------ the NetworkDriver

/** `-d tnet-overlay`: Docker networks over tnet overlays, one call each. */
export class DockerOverlay implements NetworkDriverApi {
  constructor(private readonly c: Controller) {
    if (!c.driverTypes().includes(OVERLAY_DRIVER))
      throw invalid(`driver "${OVERLAY_DRIVER}" is not supported; supported drivers are ${c.driverTypes().join(', ')}`, `driver "${OVERLAY_DRIVER}"`);
  }

  close(): void {}

  capabilities() {
    return { Scope: 'local' as const, ConnectivityScope: 'global' as const };
  }

  private checkId(id: unknown, what: 'network' | 'endpoint'): string {
    if (typeof id !== 'string' || !/^[0-9a-f]{64}$/.test(id))
      throw invalid(`${what} ID ${JSON.stringify(id)} is not a Docker ID (64 lowercase hex digits)`, `${what} ${String(id)}`);
    return id;
  }

  /**
   * Checks that the Docker network is over a tnet overlay and takes the overlay's addresses (from
   * tnet's IpamDriver); records nothing (see the file's comment).
   */
  async createNetwork(r: CreateNetworkRequest): Promise<void> {
    const id = this.checkId(r.NetworkID, 'network');
    const generic = (r.Options?.[GENERIC] ?? {}) as Record<string, unknown>;
    const v4 = r.IPv4Data?.[0];
    const named = generic[TNET_NETWORK];
    let net: Network | undefined;
    if (typeof named === 'string' && named !== '') net = overlayByName(this.c, named);
    else if (v4?.Pool) net = overlays(this.c).find((n) => n.ipv4?.subnet.toString() === Subnet.parse(v4.Pool).toString());
    if (!net) throw invalid(`network ${short(id)}: a tnet-overlay network is a view of a tnet overlay network: ${HOW}`, `network ${short(id)}`);
    for (const [data, cfg, family] of [[v4, net.ipv4, 4], [r.IPv6Data?.[0], net.ipv6, 6]] as const) {
      if (!data) continue;
      if (!cfg) throw invalid(`tnet overlay network "${net.name}" has no IPv${family} subnet`, `network "${net.name}"`);
      if (Subnet.parse(data.Pool).toString() !== cfg.subnet.toString())
        throw invalid(`network ${short(id)}: pool ${data.Pool} is not the subnet of tnet overlay network "${net.name}" (${cfg.subnet}): ${HOW}`, `network "${net.name}"`);
    }
    const ignored = Object.keys(generic).filter((k) => k !== TNET_NETWORK);
    if (ignored.length) log.warn({ network: net.name, ignored }, 'driver options of a tnet-overlay network are ignored: an overlay\'s options are set once, with tnet network create');
    log.info({ network: net.name, docker: short(id) }, 'Docker network over a tnet overlay');
  }

  /** Only the Docker network goes: the tnet overlay stays for the other hosts (tnet network rm removes it). */
  async deleteNetwork(r: NetworkRef): Promise<void> {
    this.checkId(r.NetworkID, 'network');
  }

  async createEndpoint(r: CreateEndpointRequest): Promise<CreateEndpointResponse> {
    const id = this.checkId(r.EndpointID, 'endpoint');
    const iface = r.Interface ?? {};
    const ipv4 = iface.Address ? addressOfCidr(iface.Address, 'Address') : undefined;
    const ipv6 = iface.AddressIPv6 ? addressOfCidr(iface.AddressIPv6, 'AddressIPv6') : undefined;
    const first = ipv4 ?? ipv6;
    const net = first ? overlayOfAddress(this.c, first.address) : undefined;
    if (!net) throw invalid(`endpoint ${short(id)}: address ${first ? `${first.address} is in no tnet overlay's subnet` : 'missing'}: ${HOW}`, `endpoint ${short(id)}`);
    for (const [a, cfg, family] of [[ipv4, net.ipv4, 4], [ipv6, net.ipv6, 6]] as const) {
      if (a && (a.address.family !== family || !cfg || a.prefix !== cfg.subnet.prefix || !cfg.subnet.contains(a.address)))
        throw invalid(`address ${a.address}/${a.prefix} is not in the subnet of tnet overlay network "${net.name}"`, `endpoint ${short(id)}`);
    }
    const mac = iface.MacAddress || macFromOption(r.Options?.[MAC_ADDRESS]);
    const ep = await this.c.createEndpoint(net.id, { id, ipv4: ipv4?.address, ipv6: ipv6?.address, mac });
    // Only the fields dockerd left empty: setting a given one makes it roll the endpoint back.
    return iface.MacAddress ? {} : { Interface: { MacAddress: ep.mac } };
  }

  /** The endpoint and its overlay; undefined when it is gone (its overlay was removed elsewhere, which took it). */
  private endpoint(id: string): { ep: Endpoint; net: Network } | undefined {
    const ep = this.c.findEndpoint(this.checkId(id, 'endpoint'));
    const net = ep ? this.c.findNetwork(ep.networkId) : undefined;
    if (!ep || !net || net.id !== ep.networkId || net.driver !== OVERLAY_DRIVER) return undefined;
    return { ep, net };
  }

  private known(id: string): { ep: Endpoint; net: Network } {
    const found = this.endpoint(id);
    if (!found) throw notFound(`endpoint ${short(id)} is not on a tnet overlay network (unknown EndpointID ${id})`, `endpoint ${short(id)}`);
    return found;
  }

  async endpointOperInfo(r: EndpointRef): Promise<{ Value: Record<string, unknown> }> {
    const { ep, net } = this.known(r.EndpointID);
    const details = this.c.networkDetails(net);
    return {
      Value: {
        [MAC_ADDRESS]: ep.mac,
        [TNET_NETWORK]: net.name,
        ...(ep.hostIfname ? { 'tnet.host_interface': ep.hostIfname } : {}),
        ...Object.fromEntries(Object.entries(details).map(([k, v]) => [`tnet.${k}`, v])),
      },
    };
  }

  /** Already gone (the overlay was removed on another host, which removed its endpoints here) is fine: dockerd cleans up. */
  async deleteEndpoint(r: EndpointRef): Promise<void> {
    const found = this.endpoint(r.EndpointID);
    if (!found) {
      log.info({ endpoint: short(r.EndpointID) }, 'DeleteEndpoint of an overlay endpoint tnet no longer has');
      return;
    }
    const { ep, net } = found;
    await this.c.deleteEndpoint(net.id, ep.id); // its addresses: dockerd's ReleaseAddress follows
  }

  async join(r: JoinRequest): Promise<JoinResponse> {
    const { ep, net } = this.known(r.EndpointID);
    if (typeof r.SandboxKey !== 'string' || !r.SandboxKey.startsWith('/'))
      throw invalid(`SandboxKey ${JSON.stringify(r.SandboxKey)} is not a namespace path`, `endpoint ${short(ep.id)}`);
    const a = await this.c.join(net.id, ep.id, r.SandboxKey);
    if (!a.srcName) throw invalid(`driver ${net.driver} gave no interface for dockerd to move`, `endpoint ${short(ep.id)}`);
    void this.learnNames(r.NetworkID, net, ep.id);
    return {
      InterfaceName: { SrcName: a.srcName, DstPrefix: this.c.ifacePrefix(net) },
      ...(a.gateway4 ? { Gateway: a.gateway4.toString() } : {}),
      ...(a.gateway6 ? { GatewayIPv6: a.gateway6.toString() } : {}),
      StaticRoutes: a.staticRoutes.map((s) => ({ Destination: s.destination, RouteType: s.nextHop ? 0 : 1, ...(s.nextHop ? { NextHop: s.nextHop } : {}) })),
      // No docker_gwbridge for an overlay without a gateway: it is one flat segment.
      DisableGatewayService: true,
    };
  }

  /**
   * The container's name and aliases, from dockerd's API once it lists the endpoint (it does so
   * after Join returns), for the DNS of every host: the other hosts' containers find it through
   * the overlay's DNS address (`docker run --dns`). Tried for a while, then given up (logged):
   * the endpoint keeps working under its id.
   */
  private async learnNames(dockerNetworkId: string, net: Network, endpointId: string): Promise<void> {
    try {
      for (let i = 0; i < NAME_TRIES; i++) {
        await new Promise((r) => setTimeout(r, NAME_RETRY_MS).unref());
        if (!this.endpoint(endpointId)) return; // gone meanwhile
        const names = await containerNames(dockerNetworkId, endpointId);
        if (!names) continue;
        await this.c.nameEndpoint(net.id, endpointId, names.name, names.aliases);
        log.info({ network: net.name, endpoint: short(endpointId), name: names.name }, 'overlay endpoint named after its container');
        return;
      }
      log.warn({ network: net.name, endpoint: short(endpointId) }, 'dockerd did not say whose the endpoint is (is DOCKER_HOST right?): other hosts know it by its id only');
    } catch (e) {
      // In the background of a Join that succeeded: never fatal (the controller may be closing).
      log.warn({ err: (e as Error).message, endpoint: short(endpointId) }, "the container's name could not be given to its overlay endpoint");
    }
  }

  async leave(r: EndpointRef): Promise<void> {
    const found = this.endpoint(r.EndpointID);
    if (found) await this.c.leave(found.net.id, found.ep.id);
  }

  /** Overlay endpoints are reached at their own address: `-p` is logged and ignored, as Docker's overlay does without swarm's routing mesh. */
  async programExternalConnectivity(r: ProgramRequest): Promise<void> {
    const { ep, net } = this.known(r.EndpointID);
    const requests = parsePortMap(r.Options);
    if (requests.length) await this.c.publishPorts(net.id, ep.id, requests);
  }

  async revokeExternalConnectivity(_r: EndpointRef): Promise<void> {}
}

/** `com.docker.network.endpoint.macaddress` is base64 of the 6 bytes. */
function macFromOption(v: unknown): string | undefined {
  if (typeof v !== 'string' || v === '') return undefined;
  const b = Buffer.from(v, 'base64');
  if (b.length !== 6) throw invalid(`option ${MAC_ADDRESS} is not 6 bytes of base64`, `option ${MAC_ADDRESS}`);
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}
