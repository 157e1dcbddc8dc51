/**
 * The Docker face: what the remote NetworkDriver and IpamDriver calls
 * (../shared/reference/docker-plugin.md) mean in tnet's CNM verbs. server.ts parses HTTP and maps
 * errors; this file turns Docker's wire shapes into controller calls and back. It writes no state
 * of its own: the controller is the only writer.
 *
 * Who owns what:
 * - dockerd owns the lifecycle of Docker networks and endpoints (owner 'docker'), and hands over
 *   the IDs. It never replays CreateNetwork or RequestPool, so the controller commits every row
 *   before a call returns.
 * - Addresses come from an IPAM that is not the network driver: dockerd's own ("LocalDefault"
 *   address space) or tnet's IpamDriver ("tnet-local"). A Docker network's addresses are
 *   'external': CreateEndpoint only records the ones it is given, and the network's subnets are
 *   still recorded as tnet pools, so lab networks never overlap Docker's.
 * - Endpoints of Docker networks have no sandbox row: dockerd owns the sandbox (SandboxKey) and
 *   moves the interface itself.
 */
import { execFile } from 'node:child_process';
import type { Controller } from '../controller.js';
import { TnetError, busy, conflict, invalid, isTnetError, notFound } from '../errors.js';
import { IpAddr } from '../ipam/address.js';
import type { Pool } from '../ipam/ipam.js';
import { log } from '../log.js';
import type { Endpoint, Network, PortRequest, Proto } from '../model.js';
import { ENABLE_IPV6, EXPOSED_PORTS, GENERIC, INTERNAL, MAC_ADDRESS, PORT_MAP } from '../netlabel.js';
import { OverlayIpam, TNET_NETWORK, isOverlayPool } from './overlay.js';

// ------------------------------------------------------------------ the wire (Go field names)

export interface IpamData {
  readonly AddressSpace?: string;
  /** CIDR, e.g. "10.99.0.0/24" */
  readonly Pool: string;
  /** CIDR with the gateway's address, e.g. "10.99.0.1/24" */
  readonly Gateway?: string;
  /** name -> CIDR */
  readonly AuxAddresses?: Readonly<Record<string, string>> | null;
}

export interface CreateNetworkRequest {
  readonly NetworkID: string;
  readonly Options?: Readonly<Record<string, unknown>> | null;
  readonly IPv4Data?: readonly IpamData[] | null;
  readonly IPv6Data?: readonly IpamData[] | null;
}

export interface NetworkRef {
  readonly NetworkID: string;
}
export interface EndpointRef extends NetworkRef {
  readonly EndpointID: string;
}

export interface EndpointInterface {
  readonly Address?: string;
  readonly AddressIPv6?: string;
  readonly MacAddress?: string;
}

export interface CreateEndpointRequest extends EndpointRef {
  readonly Interface?: EndpointInterface | null;
  readonly Options?: Readonly<Record<string, unknown>> | null;
}

export interface CreateEndpointResponse {
  readonly Interface?: EndpointInterface;
}

export interface JoinRequest extends EndpointRef {
  readonly SandboxKey: string;
  readonly Options?: Readonly<Record<string, unknown>> | null;
}

export interface StaticRouteWire {
  readonly Destination: string;
  /** 0 = next hop, 1 = connected */
  readonly RouteType: 0 | 1;
  readonly NextHop?: string;
}

export interface JoinResponse {
  readonly InterfaceName: { readonly SrcName: string; readonly DstPrefix: string };
  readonly Gateway?: string;
  readonly GatewayIPv6?: string;
  readonly StaticRoutes?: readonly StaticRouteWire[];
  readonly DisableGatewayService?: boolean;
}

export interface ProgramRequest extends EndpointRef {
  readonly Options?: Readonly<Record<string, unknown>> | null;
}

export interface RequestPoolRequest {
  readonly AddressSpace?: string;
  readonly Pool?: string;
  readonly SubPool?: string;
  readonly Options?: Readonly<Record<string, string>> | null;
  readonly V6?: boolean;
}
export interface RequestPoolResponse {
  readonly PoolID: string;
  readonly Pool: string;
  readonly Data: Readonly<Record<string, string>>;
}
export interface RequestAddressRequest {
  readonly PoolID: string;
  readonly Address?: string;
  readonly Options?: Readonly<Record<string, string>> | null;
}
export interface RequestAddressResponse {
  readonly Address: string;
  readonly Data: Readonly<Record<string, string>>;
}
export interface ReleaseAddressRequest {
  readonly PoolID: string;
  readonly Address: string;
}

/** What the plugin face needs of the NetworkDriver side (the real one is DockerNetworks). */
export interface NetworkDriverApi {
  capabilities(): { Scope: 'local' | 'global'; ConnectivityScope: 'local' | 'global' };
  /** dockerd (re)activated the plugin: it may have (re)made its firewall chains. */
  activated?(): Promise<void>;
  createNetwork(r: CreateNetworkRequest): Promise<void>;
  deleteNetwork(r: NetworkRef): Promise<void>;
  createEndpoint(r: CreateEndpointRequest): Promise<CreateEndpointResponse>;
  endpointOperInfo(r: EndpointRef): Promise<{ Value: Record<string, unknown> }>;
  deleteEndpoint(r: EndpointRef): Promise<void>;
  join(r: JoinRequest): Promise<JoinResponse>;
  leave(r: EndpointRef): Promise<void>;
  programExternalConnectivity(r: ProgramRequest): Promise<void>;
  revokeExternalConnectivity(r: EndpointRef): Promise<void>;
}

/** What the plugin face needs of the IpamDriver side (the real one is DockerIpam). */
export interface IpamDriverApi {
  capabilities(): { RequiresMACAddress: boolean; RequiresRequestReplay: boolean };
  defaultAddressSpaces():
    | { LocalDefaultAddressSpace: string; GlobalDefaultAddressSpace: string }
    | Promise<{ LocalDefaultAddressSpace: string; GlobalDefaultAddressSpace: string }>;
  requestPool(r: RequestPoolRequest): Promise<RequestPoolResponse>;
  releasePool(r: { PoolID: string }): Promise<void>;
  requestAddress(r: RequestAddressRequest): Promise<RequestAddressResponse>;
  releaseAddress(r: ReleaseAddressRequest): Promise<void>;
}

// ------------------------------------------------------------------ small parsers

/** Docker's keys for the gateway request and the generic driver options. */
export const REQUEST_ADDRESS_TYPE = 'RequestAddressType';
export const GATEWAY_REQUEST = 'com.docker.network.gateway';
/** tnet's IpamDriver address spaces: distinct from dockerd's own "LocalDefault"/"GlobalDefault". */
export const LOCAL_ADDRESS_SPACE = 'tnet-local';
export const GLOBAL_ADDRESS_SPACE = 'tnet-global';

const PROTOS: Readonly<Record<number, Proto>> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };
const PROTO_NUMBERS: Readonly<Record<Proto, number>> = { tcp: 6, udp: 17, sctp: 132 };

/** "10.99.0.1/24" -> 10.99.0.1 (dockerd sends gateways and endpoint addresses as CIDR). */
export function addressOfCidr(text: string, what: string): { address: IpAddr; prefix: number } {
  const m = /^([^/]+)\/(\d{1,3})$/.exec(text);
  if (!m) throw invalid(`${what} "${text}" is not an address with a prefix length (like 10.0.0.2/24)`, what);
  const address = IpAddr.parse(m[1]!);
  const prefix = Number(m[2]);
  if (prefix > (address.family === 4 ? 32 : 128)) throw invalid(`${what} "${text}" has a prefix length longer than the address`, what);
  return { address, prefix };
}

/** Go's strconv.ParseBool plus real JSON booleans (dockerd sends both shapes in Options). */
function truthy(v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  if (typeof v === 'string') return ['1', 't', 'T', 'true', 'TRUE', 'True'].includes(v);
  return false;
}

/** `-o k=v` options: a map of strings (a value of another type is refused, not guessed). */
function genericOptions(options: Readonly<Record<string, unknown>> | null | undefined): Record<string, string> {
  const g = options?.[GENERIC];
  if (g === undefined || g === null) return {};
  if (typeof g !== 'object' || Array.isArray(g)) throw invalid(`option ${GENERIC} must be a map of driver options`, `option ${GENERIC}`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(g as Record<string, unknown>)) {
    if (typeof v === 'string') out[k] = v;
    else if (typeof v === 'number' || typeof v === 'boolean') out[k] = String(v);
    else throw invalid(`driver option "${k}" must be a string`, `option ${k}`);
  }
  return out;
}

/** `com.docker.network.portmap` -> what to publish. Refuses what cannot be published, changing nothing. */
export function parsePortMap(options: Readonly<Record<string, unknown>> | null | undefined): PortRequest[] {
  const raw = options?.[PORT_MAP];
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw invalid(`option ${PORT_MAP} must be a list of port bindings`, `option ${PORT_MAP}`);
  return raw.map((b: unknown, i) => {
    if (!b || typeof b !== 'object') throw invalid(`port binding #${i + 1} is not an object`, `option ${PORT_MAP}`);
    const o = b as Record<string, unknown>;
    const proto = PROTOS[o.Proto as number];
    if (!proto) throw invalid(`port binding #${i + 1}: protocol ${JSON.stringify(o.Proto)} is not 6 (tcp), 17 (udp) or 132 (sctp)`, `option ${PORT_MAP}`);
    const int = (k: string, min: number) => {
      const v = o[k] ?? 0;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > 65535)
        throw invalid(`port binding #${i + 1}: ${k} ${JSON.stringify(v)} is not a port number`, `option ${PORT_MAP}`);
      return v;
    };
    const hostIp = o.HostIP ?? '';
    if (typeof hostIp !== 'string') throw invalid(`port binding #${i + 1}: HostIP must be a string`, `option ${PORT_MAP}`);
    const containerPort = int('Port', 1);
    const hostPort = int('HostPort', 0);
    const hostPortEnd = int('HostPortEnd', 0);
    if (hostPortEnd !== 0 && hostPortEnd < hostPort)
      throw invalid(`port binding #${i + 1}: host port range ${hostPort}-${hostPortEnd} is empty`, `option ${PORT_MAP}`);
    let ip = hostIp;
    if (ip === '0.0.0.0' || ip === '::') ip = '';
    if (ip !== '') IpAddr.parse(ip);
    return { proto, containerPort, hostIp: ip, hostPort, hostPortEnd: hostPortEnd === hostPort ? 0 : hostPortEnd };
  });
}

/** `com.docker.network.endpoint.macaddress` is base64 of the 6 bytes. */
function macFromOption(v: unknown): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw invalid(`option ${MAC_ADDRESS} must be a base64 string`, `option ${MAC_ADDRESS}`);
  const b = Buffer.from(v, 'base64');
  if (b.length !== 6) throw invalid(`option ${MAC_ADDRESS} is not 6 bytes of base64`, `option ${MAC_ADDRESS}`);
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

const short = (id: string) => id.slice(0, 12);

/** The owner of the pools Docker's IpamDriver hands out: the only pools that face acts on. */
const DOCKER_OWNER = 'docker';

/**
 * Runs `fn`; on a conflict (an address or host port taken), releases what dockerd let go while
 * tnet could not hear it (Controller.releaseStale) and, if anything was, runs `fn` once more.
 */
async function retryAfterStale<T>(c: Controller, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    if (!isTnetError(e, 'conflict') || (await c.releaseStale('docker')).length === 0) throw e;
    return fn();
  }
}

// ------------------------------------------------------------------ the IpamDriver

/**
 * tnet's IPAM as Docker's IpamDriver. Pools are shared (identical requests return the same pool,
 * reference-counted) and have no gateway of their own: dockerd asks for the gateway with
 * RequestAddress. Every allocation is a row in the state database before the answer leaves, so a
 * plugin restart (even kill -9) hands out nothing twice. RequestAddress names no owner, so
 * allocations are never released behind dockerd's back.
 */
export class DockerIpam implements IpamDriverApi {
  /** Pools of a tnet overlay (`--ipam-opt tnet.network=NAME`): addresses from the cluster (overlay.ts). */
  private readonly overlay: OverlayIpam;

  constructor(private readonly c: Controller) {
    this.overlay = new OverlayIpam(c);
  }

  capabilities() {
    return { RequiresMACAddress: false, RequiresRequestReplay: false };
  }

  defaultAddressSpaces() {
    return { LocalDefaultAddressSpace: LOCAL_ADDRESS_SPACE, GlobalDefaultAddressSpace: GLOBAL_ADDRESS_SPACE };
  }

  async requestPool(r: RequestPoolRequest): Promise<RequestPoolResponse> {
    if (r.Options?.[TNET_NETWORK] !== undefined) return this.overlay.requestPool(r);
    const subnet = r.Pool || undefined;
    if (r.SubPool && !subnet) throw invalid(`a sub-pool (--ip-range ${r.SubPool}) needs an explicit pool (--subnet)`, `sub-pool "${r.SubPool}"`);
    const pool = await this.c.requestPool({
      addressSpace: r.AddressSpace || LOCAL_ADDRESS_SPACE,
      subnet,
      ipRange: r.SubPool || undefined,
      v6: subnet ? undefined : r.V6 === true,
      noGateway: true,
      shared: true,
      options: r.Options ?? {},
      owner: DOCKER_OWNER,
    });
    if (pool.owner !== DOCKER_OWNER) {
      // An identical shared request of another face's pool: give the reference back, touch nothing.
      await this.c.releasePool(pool.id);
      throw conflict(`pool ${pool.subnet} is in use by another tnet network or lab`, `pool "${subnet ?? pool.subnet}"`);
    }
    if (subnet && r.V6 !== undefined && pool.v6 !== r.V6) {
      await this.c.releasePool(pool.id);
      throw invalid(`pool ${pool.subnet} is IPv${pool.v6 ? 6 : 4} but an IPv${r.V6 ? 6 : 4} pool was requested`, `pool "${subnet}"`);
    }
    return { PoolID: pool.id, Pool: pool.subnet.toString(), Data: {} };
  }

  /**
   * A pool this face handed out. Any other (a lab's, a tnet network's, whose ids show in messages)
   * is, for Docker, no pool at all: the same "not found" as an id that never existed, and nothing
   * is requested or released in it.
   */
  private async own(poolId: string): Promise<Pool> {
    const pool = await this.c.pool(poolId).catch((e: unknown) => {
      if (isTnetError(e, 'not-found')) return undefined;
      throw e;
    });
    if (!pool || pool.owner !== DOCKER_OWNER) throw notFound(`no IPAM pool with id "${poolId}"`, `pool "${poolId}"`);
    return pool;
  }

  async releasePool(r: { PoolID: string }): Promise<void> {
    if (isOverlayPool(this.c, r.PoolID)) return this.overlay.releasePool(r);
    await this.own(r.PoolID);
    await this.c.releasePool(r.PoolID);
  }

  async requestAddress(r: RequestAddressRequest): Promise<RequestAddressResponse> {
    if (isOverlayPool(this.c, r.PoolID)) return this.overlay.requestAddress(r);
    const pool = await this.own(r.PoolID);
    const gateway = r.Options?.[REQUEST_ADDRESS_TYPE] === GATEWAY_REQUEST;
    let address: IpAddr;
    if (r.Address) {
      // A static address (`--ip`) still held by a container that went while tnet was down is released first.
      address = await retryAfterStale(this.c, () => this.c.requestAddress(pool.id, { address: r.Address, owner: gateway ? 'gateway' : undefined }));
    } else if (gateway) {
      // The subnet's first address, as dockerd's own IPAM gives it, else the first free one.
      const first = IpAddr.of(pool.subnet.family, pool.subnet.network + 1n);
      try {
        address = await this.c.requestAddress(pool.id, { address: first.toString(), owner: 'gateway' });
      } catch (e) {
        if (!isTnetError(e, 'conflict') && !isTnetError(e, 'invalid-argument')) throw e;
        address = await this.c.requestAddress(pool.id, { owner: 'gateway' });
      }
    } else {
      address = await retryAfterStale(this.c, () => this.c.requestAddress(pool.id, {}));
    }
    return { Address: `${address}/${pool.subnet.prefix}`, Data: {} };
  }

  async releaseAddress(r: ReleaseAddressRequest): Promise<void> {
    if (isOverlayPool(this.c, r.PoolID)) return this.overlay.releaseAddress(r);
    await this.own(r.PoolID);
    try {
      await this.c.releaseAddress(r.PoolID, r.Address);
    } catch (e) {
      // Idempotent, as dockerd may retry a release whose answer it lost.
      if (!isTnetError(e, 'not-found') || !(await this.c.pool(r.PoolID).then(() => true, () => false))) throw e;
    }
  }
}

// ------------------------------------------------------------------ DOCKER-USER

type Exec = (file: string, args: readonly string[], input?: string) => Promise<{ code: number; out: string }>;

const execTool: Exec = (file, args, input) =>
  new Promise((resolve) => {
    const child = execFile(file, [...args], { timeout: 10_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127) : 0;
      resolve({ code, out: `${stdout}${stderr}` });
    });
    if (input !== undefined) child.stdin?.end(input);
  });

/**
 * dockerd's default `--iptables=true` sets the FORWARD policy to DROP. With iptables-nft an accept
 * in tnet's own nftables chain does not override a drop in another base chain, so tnet adds its
 * bridges to dockerd's documented place for admin rules, DOCKER-USER, and lets its own chain decide
 * (ICC, isolation between tnet networks, published ports). Per tnet bridge, in this order:
 *
 *   -i BR ! -o BR -m conntrack ! --ctstate DNAT -j DOCKER-ISOLATION-STAGE-2
 *                                              dockerd's networks stay isolated from tnet's, published ports excepted
 *   -i BR -j ACCEPT                            (stage 2 drops what goes out to a Docker bridge)
 *   -o BR -j ACCEPT                            tnet's chain admits only replies and published ports
 *
 * Only when DOCKER-USER exists (dockerd made it): without it the FORWARD policy is not dockerd's to
 * drop. Each rule carries a comment with tnet's owner tag, so tnet touches exactly its own.
 */
export class DockerUserChain {
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly tag: string,
    private readonly exec: Exec = execTool,
  ) {}

  /** Makes tnet's rules in DOCKER-USER (IPv4 and IPv6) exactly the set above for these bridges. */
  sync(bridges: readonly string[]): Promise<void> {
    const run = this.queue.then(() => this.syncNow(bridges));
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** The rules of one bridge, in order, as iptables-save prints them (comment unquoted). */
  private rules(bridge: string, stage2: boolean): string[] {
    const c = `-m comment --comment ${this.tag}bridge:${bridge}`;
    return [
      ...(stage2 ? [`-i ${bridge} ! -o ${bridge} -m conntrack ! --ctstate DNAT ${c} -j ${ISOLATION_STAGE_2}`] : []),
      `-i ${bridge} ${c} -j ACCEPT`,
      `-o ${bridge} ${c} -j ACCEPT`,
    ];
  }

  private async syncNow(bridges: readonly string[]): Promise<void> {
    for (const [save, restore] of [
      ['iptables-save', 'iptables-restore'],
      ['ip6tables-save', 'ip6tables-restore'],
    ] as const) {
      const dump = await this.exec(save, ['-t', 'filter']);
      if (dump.code !== 0 || !/^:DOCKER-USER /m.test(dump.out)) continue;
      const stage2 = new RegExp(`^:${ISOLATION_STAGE_2} `, 'm').test(dump.out);
      // tnet's rules now, by bridge, in chain order (comments unquoted).
      const have = new Map<string, string[]>();
      for (const l of dump.out.split('\n')) {
        if (!l.startsWith('-A DOCKER-USER ') || !l.includes(this.tag)) continue;
        const spec = l.slice('-A DOCKER-USER '.length).replace(/--comment "([^"]*)"/, '--comment $1');
        const bridge = /--comment \S*bridge:(\S+)/.exec(spec)?.[1] ?? '';
        have.set(bridge, [...(have.get(bridge) ?? []), spec]);
      }
      const quote = (spec: string) => spec.replace(/--comment (\S+)/, '--comment "$1"');
      const lines: string[] = [];
      const wanted = new Set(bridges);
      for (const [bridge, specs] of have) {
        const want = wanted.has(bridge) ? this.rules(bridge, stage2) : [];
        if (want.join('\n') === specs.join('\n')) continue;
        for (const spec of specs) lines.push(`-D DOCKER-USER ${quote(spec)}`);
      }
      for (const bridge of wanted) {
        const want = this.rules(bridge, stage2);
        if (have.get(bridge)?.join('\n') === want.join('\n')) continue;
        // Inserted at the top, last first, so that they end up in order and before dockerd's RETURN.
        for (const spec of [...want].reverse()) lines.push(`-I DOCKER-USER 1 ${quote(spec)}`);
      }
      if (lines.length === 0) continue;
      const r = await this.exec(restore, ['-w', '--noflush'], `*filter\n${lines.join('\n')}\nCOMMIT\n`);
      if (r.code !== 0) log.warn({ tool: restore, out: r.out.trim() }, 'could not update DOCKER-USER for tnet bridges');
      else log.debug({ tool: restore, changes: lines.length }, 'DOCKER-USER updated for tnet bridges');
    }
  }
}

const ISOLATION_STAGE_2 = 'DOCKER-ISOLATION-STAGE-2';

// ------------------------------------------------------------------ the NetworkDriver

export interface DockerNetworksOptions {
  /** Which tnet driver this plugin name serves (bridge now; overlay and macvlan later). */
  readonly driver?: string;
  /** Manage DOCKER-USER accept rules for tnet bridges (default true). */
  readonly dockerUser?: boolean;
}

/** Docker networks over the Controller's verbs: the NetworkDriver calls, one method each. */
export class DockerNetworks implements NetworkDriverApi {
  private readonly driverType: string;
  readonly dockerUser: DockerUserChain | undefined;
  /** Join latency is the container start's: these run only off that path. */
  private readonly onNetwork = (_change: 'up' | 'down', net: Network) => {
    // Docker networks sync inside their own call (the answer waits for it); lab networks here.
    if (net.owner !== 'docker') void this.syncDockerUser().catch((e) => log.warn({ err: e }, 'DOCKER-USER sync failed'));
  };

  constructor(
    private readonly c: Controller,
    opts: DockerNetworksOptions = {},
  ) {
    this.driverType = opts.driver ?? 'bridge';
    if (!c.driverTypes().includes(this.driverType)) // refuses an unknown driver now, not at the first call
      throw invalid(`driver "${this.driverType}" is not supported; supported drivers are ${c.driverTypes().join(', ')}`, `driver "${this.driverType}"`);
    this.dockerUser = opts.dockerUser === false ? undefined : new DockerUserChain(c.tags.prefix);
    // Lab networks made through the CLI need the same accept rules when dockerd drops forwarding.
    c.on('network', this.onNetwork);
  }

  /** Stops listening to the controller. */
  close(): void {
    this.c.off('network', this.onNetwork);
  }

  capabilities() {
    return { Scope: 'local' as const, ConnectivityScope: 'local' as const };
  }

  /** dockerd (re)activated tnet, or tnet started: what dockerd let go meanwhile is released. */
  async activated(): Promise<void> {
    await this.c.releaseStale('docker');
    await this.syncDockerUser();
  }

  /** DOCKER-USER accept rules for every tnet bridge network (lab and Docker alike). */
  async syncDockerUser(): Promise<void> {
    if (!this.dockerUser) return;
    const bridges = this.c
      .networks()
      .filter((n) => n.state !== 'deleting')
      .map((n) => this.c.networkDetails(n).bridge)
      .filter((b): b is string => b !== undefined);
    await this.dockerUser.sync(bridges);
  }

  private checkId(id: unknown, what: 'network' | 'endpoint'): string {
    if (typeof id !== 'string' || !/^[0-9a-f]{64}$/.test(id))
      throw invalid(`${what} ID ${JSON.stringify(id)} is not a Docker ID (64 lowercase hex digits)`, `${what} ${String(id)}`);
    return id;
  }

  /** A ready Docker network of this face, or a not-found error naming it. */
  private net(id: string): Network {
    const n = this.c.findNetwork(this.checkId(id, 'network'));
    if (!n || n.owner !== 'docker' || n.id !== id) throw notFound(`network ${short(id)} is not a tnet network (unknown NetworkID ${id})`, `network ${short(id)}`);
    if (n.state !== 'ready') throw busy(`network ${short(id)} is being ${n.state === 'creating' ? 'created' : 'deleted'}`, `network ${short(id)}`);
    return n;
  }

  private endpoint(net: Network, id: string): Endpoint {
    const e = this.c.findEndpoint(this.checkId(id, 'endpoint'));
    if (!e || e.networkId !== net.id)
      throw notFound(`endpoint ${short(id)} does not exist on network ${short(net.id)} (unknown EndpointID ${id})`, `endpoint ${short(id)}`);
    return e;
  }

  // ---------------------------------------------------------------- networks

  async createNetwork(r: CreateNetworkRequest): Promise<void> {
    const id = this.checkId(r.NetworkID, 'network');
    const existing = this.c.findNetwork(id);
    if (existing?.id === id) {
      // dockerd retries a call whose answer it lost: the same network again is not an error.
      if (existing.owner === 'docker' && existing.state === 'ready') return;
      throw conflict(`network ${short(id)} already exists in tnet (${existing.state})`, `network ${short(id)}`);
    }
    const v4 = r.IPv4Data ?? [];
    const v6 = r.IPv6Data ?? [];
    if (v4.length > 1 || v6.length > 1)
      throw invalid('a tnet network takes at most one IPv4 and one IPv6 subnet (--subnet given more than once per family)', `network ${short(id)}`);
    if (v6.length && !truthy(r.Options?.[ENABLE_IPV6]) && r.Options?.[ENABLE_IPV6] !== undefined)
      throw invalid('IPv6 data was given for a network without IPv6 enabled', `network ${short(id)}`);
    const spaces = new Set([v4[0]?.AddressSpace, v6[0]?.AddressSpace].filter((x) => x !== undefined));
    if (spaces.size > 1) throw invalid(`the IPv4 and IPv6 pools come from different address spaces (${[...spaces].join(', ')})`, `network ${short(id)}`);
    const a4 = subnetOf(v4[0], 4);
    const a6 = subnetOf(v6[0], 6);
    await this.c.createNetwork({
      id, owner: 'docker', driver: this.driverType, internal: truthy(r.Options?.[INTERNAL]), options: genericOptions(r.Options),
      addresses: 'external', addressSpace: [...spaces][0] ?? '',
      subnet: a4?.subnet, gateway: a4?.gateway, auxAddresses: a4?.aux,
      ipv6: v6.length > 0, subnet6: a6?.subnet, gateway6: a6?.gateway, auxAddresses6: a6?.aux,
    });
    await this.syncDockerUser();
  }

  async deleteNetwork(r: NetworkRef): Promise<void> {
    const id = this.checkId(r.NetworkID, 'network');
    const found = this.c.findNetwork(id);
    if (!found || found.id !== id || found.owner !== 'docker')
      throw notFound(`network ${short(id)} is not a tnet network (unknown NetworkID ${id})`, `network ${short(id)}`);
    // dockerd removes its endpoints before the network: any left here are stale (a DeleteEndpoint
    // lost while the plugin was down), and go with it.
    await this.c.deleteNetwork(id, { owner: 'docker', removeEndpoints: true });
    await this.syncDockerUser();
  }

  // ---------------------------------------------------------------- endpoints

  async createEndpoint(r: CreateEndpointRequest): Promise<CreateEndpointResponse> {
    const net = this.net(r.NetworkID);
    const id = this.checkId(r.EndpointID, 'endpoint');
    const iface = r.Interface ?? {};
    const ipv4 = endpointAddress(iface.Address, 4);
    const ipv6 = endpointAddress(iface.AddressIPv6, 6);
    for (const [a, cfg] of [[ipv4, net.ipv4], [ipv6, net.ipv6]] as const) {
      if (a && cfg && a.prefix !== cfg.subnet.prefix)
        throw invalid(`address ${a.address}/${a.prefix} is not in the network's subnet ${cfg.subnet}`, `endpoint ${short(id)}`);
    }
    const mac = iface.MacAddress || macFromOption(r.Options?.[MAC_ADDRESS]);
    parsePortMap(r.Options); // bad bindings fail here, before anything is recorded
    const ep = await this.c.createEndpoint(net.id, { id, ipv4: ipv4?.address, ipv6: ipv6?.address, mac });
    // Only the fields dockerd left empty: setting a given one makes it roll the endpoint back.
    return iface.MacAddress ? {} : { Interface: { MacAddress: ep.mac } };
  }

  async endpointOperInfo(r: EndpointRef): Promise<{ Value: Record<string, unknown> }> {
    const net = this.net(r.NetworkID);
    const ep = this.endpoint(net, r.EndpointID);
    const portmap = ep.ports.map((p) => ({
      Proto: PROTO_NUMBERS[p.proto], IP: (p.hostIp.includes(':') ? ep.ipv6 : ep.ipv4)?.toString() ?? '', Port: p.containerPort,
      HostIP: p.hostIp, HostPort: p.hostPort, HostPortEnd: p.hostPort,
    }));
    const details = this.c.networkDetails(net);
    return {
      Value: {
        [MAC_ADDRESS]: ep.mac,
        [PORT_MAP]: portmap,
        [EXPOSED_PORTS]: ep.ports.map((p) => ({ Proto: PROTO_NUMBERS[p.proto], Port: p.containerPort })),
        ...(ep.hostIfname ? { 'tnet.host_interface': ep.hostIfname } : {}),
        ...Object.fromEntries(Object.entries(details).map(([k, v]) => [`tnet.${k}`, v])),
      },
    };
  }

  // The controller refuses an endpoint that is not on the network, naming both.
  async deleteEndpoint(r: EndpointRef): Promise<void> {
    await this.c.deleteEndpoint(this.net(r.NetworkID).id, this.checkId(r.EndpointID, 'endpoint'));
  }

  async join(r: JoinRequest): Promise<JoinResponse> {
    const net = this.net(r.NetworkID);
    const ep = this.endpoint(net, r.EndpointID);
    if (typeof r.SandboxKey !== 'string' || !r.SandboxKey.startsWith('/'))
      throw invalid(`SandboxKey ${JSON.stringify(r.SandboxKey)} is not a namespace path`, `endpoint ${short(ep.id)}`);
    const a = await this.c.join(net.id, ep.id, r.SandboxKey);
    if (!a.srcName) throw new TnetError('internal', `driver ${net.driver} gave no interface for dockerd to move`);
    return {
      InterfaceName: { SrcName: a.srcName, DstPrefix: this.c.ifacePrefix(net) },
      ...(a.gateway4 ? { Gateway: a.gateway4.toString() } : {}),
      ...(a.gateway6 ? { GatewayIPv6: a.gateway6.toString() } : {}),
      StaticRoutes: a.staticRoutes.map((s) => ({
        Destination: s.destination, RouteType: s.nextHop ? 0 : 1, ...(s.nextHop ? { NextHop: s.nextHop } : {}),
      })),
      DisableGatewayService: false,
    };
  }

  async leave(r: EndpointRef): Promise<void> {
    await this.c.leave(this.net(r.NetworkID).id, this.checkId(r.EndpointID, 'endpoint'));
  }

  async programExternalConnectivity(r: ProgramRequest): Promise<void> {
    const net = this.net(r.NetworkID).id;
    const id = this.checkId(r.EndpointID, 'endpoint');
    const requests = parsePortMap(r.Options);
    // A host port still held by a container that went while tnet was down is released first.
    await retryAfterStale(this.c, () => this.c.publishPorts(net, id, requests));
  }

  async revokeExternalConnectivity(r: EndpointRef): Promise<void> {
    await this.c.unpublishPorts(this.net(r.NetworkID).id, this.checkId(r.EndpointID, 'endpoint'));
  }
}

/** One family's IpamData as the controller's subnet request (gateway and aux addresses without prefix lengths). */
function subnetOf(d: IpamData | undefined, family: 4 | 6): { subnet: string; gateway?: string; aux: Record<string, string> } | undefined {
  if (!d) return undefined;
  if (typeof d.Pool !== 'string') throw invalid(`IPv${family} pool ${JSON.stringify(d.Pool)} is not a subnet`, 'pool');
  const gateway = d.Gateway ? addressOfCidr(d.Gateway, 'gateway').address.toString() : undefined;
  const aux: Record<string, string> = {};
  for (const [k, v] of Object.entries(d.AuxAddresses ?? {})) {
    aux[k] = (v.includes('/') ? addressOfCidr(v, `aux address "${k}"`).address : IpAddr.parse(v)).toString();
  }
  return { subnet: d.Pool, gateway, aux };
}

/** An endpoint's address as dockerd sends it (CIDR), checked for its family. */
function endpointAddress(cidrText: string | undefined, family: 4 | 6): { address: IpAddr; prefix: number } | undefined {
  if (!cidrText) return undefined;
  const what = family === 4 ? 'Address' : 'AddressIPv6';
  const a = addressOfCidr(cidrText, what);
  if (a.address.family !== family) throw invalid(`${what} ${cidrText} is not IPv${family}`, what);
  return a;
}
