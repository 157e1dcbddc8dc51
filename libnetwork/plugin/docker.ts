/**
 * The Docker-facing operations on the core: what the remote NetworkDriver and IpamDriver calls
 * (../shared/reference/docker-plugin.md) mean for tnet's networks, endpoints and pools. The plugin
 * face (libnetwork/plugin/) only parses HTTP and maps errors; everything Docker-specific that
 * touches state is here.
 *
 * Who owns what:
 * - dockerd owns the lifecycle of Docker networks and endpoints, and hands over the IDs. It never
 *   replays CreateNetwork or RequestPool, so every row is committed before a call returns.
 * - Addresses come from an IPAM that is not the network driver: dockerd's own IPAM ("LocalDefault"
 *   address space) or tnet's IpamDriver ("tnet-local"). The network driver never allocates an
 *   address; CreateEndpoint only records the one it is given.
 * - A network's IPv4/IPv6 subnet is still recorded as a tnet IPAM pool, so lab networks never
 *   overlap Docker's: either tnet's IpamDriver pool (the network takes its own reference on it, so
 *   the pool lives while dockerd or the network holds it) or a "mirror" pool that reserves the
 *   subnet and nothing in it (dockerd's IPAM allocates the addresses).
 * - Endpoints of Docker networks have no sandbox row: dockerd owns the sandbox (SandboxKey) and
 *   moves the interface itself. Their rows are written 'ready' at once (CreateEndpoint does no
 *   kernel work), so the reconcile at start never releases addresses dockerd still holds.
 */
import { execFile } from 'node:child_process';
import { bridgeConfig } from '../drivers/bridge/options.js';
import type { Controller } from './controller.js';
import type { JoinInfo } from './driver.js';
import { TnetError, busy, conflict, invalid, isTnetError, notFound } from './errors.js';
import { IpAddr } from './ipam/address.js';
import type { Ipam, Pool } from './ipam/ipam.js';
import { Subnet } from './ipam/subnet.js';
import { isErrno, linkDelIfExists } from './kernel/index.js';
import { log } from './log.js';
import type { Endpoint, IpConfig, Network, PortRequest, Proto } from './model.js';
import { ENABLE_IPV6, EXPOSED_PORTS, GENERIC, INTERNAL, MAC_ADDRESS, PORT_MAP, canonicalOptions } from './netlabel.js';
import { macFor } from './sandbox.js';
import { transaction } from './txn.js';
import { checkPortFree, choosePorts } from './ports.js';
export { hostRoutes } from './hostroutes.js';

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
  return canonicalOptions(out);
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

function checkMac(mac: string): string {
  const m = mac.toLowerCase();
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(m)) throw invalid(`MAC address "${mac}" is not of the form 02:42:ac:11:00:02`, `mac "${mac}"`);
  if ((parseInt(m.slice(0, 2), 16) & 1) === 1) throw invalid(`MAC address "${mac}" is a multicast address`, `mac "${mac}"`);
  return m;
}

const short = (id: string) => id.slice(0, 12);

// ------------------------------------------------------------------ the IpamDriver

/**
 * tnet's IPAM as Docker's IpamDriver. Pools are shared (identical requests return the same pool,
 * reference-counted) and have no gateway of their own: dockerd asks for the gateway with
 * RequestAddress. Every allocation is a row in the state database before the answer leaves, so a
 * plugin restart (even kill -9) hands out nothing twice. RequestAddress names no owner, so
 * allocations are never released behind dockerd's back.
 */
export class DockerIpam implements IpamDriverApi {
  constructor(
    private readonly ipam: Ipam,
    /** Subnets an auto-chosen pool must avoid: the host's routes. */
    private readonly hostRoutes: () => Promise<Subnet[]> = async () => [],
  ) {}

  capabilities() {
    return { RequiresMACAddress: false, RequiresRequestReplay: false };
  }

  defaultAddressSpaces() {
    return { LocalDefaultAddressSpace: LOCAL_ADDRESS_SPACE, GlobalDefaultAddressSpace: GLOBAL_ADDRESS_SPACE };
  }

  async requestPool(r: RequestPoolRequest): Promise<RequestPoolResponse> {
    const subnet = r.Pool || undefined;
    const avoid = subnet ? [] : await this.hostRoutes();
    if (r.SubPool && !subnet) throw invalid(`a sub-pool (--ip-range ${r.SubPool}) needs an explicit pool (--subnet)`, `sub-pool "${r.SubPool}"`);
    const pool = this.ipam.requestPool({
      addressSpace: r.AddressSpace || LOCAL_ADDRESS_SPACE,
      subnet,
      ipRange: r.SubPool || undefined,
      v6: subnet ? undefined : r.V6 === true,
      noGateway: true,
      shared: true,
      avoid,
      options: r.Options ?? {},
      owner: 'docker',
    });
    if (subnet && r.V6 !== undefined && pool.v6 !== r.V6) {
      this.ipam.releasePool(pool.id);
      throw invalid(`pool ${pool.subnet} is IPv${pool.v6 ? 6 : 4} but an IPv${r.V6 ? 6 : 4} pool was requested`, `pool "${subnet}"`);
    }
    return { PoolID: pool.id, Pool: pool.subnet.toString(), Data: {} };
  }

  async releasePool(r: { PoolID: string }): Promise<void> {
    this.ipam.releasePool(r.PoolID);
  }

  async requestAddress(r: RequestAddressRequest): Promise<RequestAddressResponse> {
    const pool = this.ipam.getPool(r.PoolID);
    const gateway = r.Options?.[REQUEST_ADDRESS_TYPE] === GATEWAY_REQUEST;
    let address: IpAddr;
    if (r.Address) {
      address = this.ipam.requestAddress(pool.id, { address: r.Address, owner: gateway ? 'gateway' : undefined });
    } else if (gateway) {
      // The subnet's first address, as dockerd's own IPAM gives it, else the first free one.
      const first = IpAddr.of(pool.subnet.family, pool.subnet.network + 1n);
      try {
        address = this.ipam.requestAddress(pool.id, { address: first.toString(), owner: 'gateway' });
      } catch (e) {
        if (!isTnetError(e, 'conflict') && !isTnetError(e, 'invalid-argument')) throw e;
        address = this.ipam.requestAddress(pool.id, { owner: 'gateway' });
      }
    } else {
      address = this.ipam.requestAddress(pool.id, {});
    }
    return { Address: `${address}/${pool.subnet.prefix}`, Data: {} };
  }

  async releaseAddress(r: ReleaseAddressRequest): Promise<void> {
    try {
      this.ipam.releaseAddress(r.PoolID, r.Address);
    } catch (e) {
      // Idempotent, as dockerd may retry a release whose answer it lost.
      if (!isTnetError(e, 'not-found') || !this.hasPool(r.PoolID)) throw e;
    }
  }

  private hasPool(id: string): boolean {
    try {
      this.ipam.getPool(id);
      return true;
    } catch {
      return false;
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
 *   -i BR ! -o BR -j DOCKER-ISOLATION-STAGE-2   dockerd's own networks stay isolated from tnet's
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
      ...(stage2 ? [`-i ${bridge} ! -o ${bridge} ${c} -j ${ISOLATION_STAGE_2}`] : []),
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

/** Docker networks over the Controller: the NetworkDriver calls, one method each. */
export class DockerNetworks implements NetworkDriverApi {
  private readonly driverType: string;
  readonly dockerUser: DockerUserChain | undefined;
  /** Join latency is the container start's: these run only off that path. */
  private readonly onNetwork = (_change: 'up' | 'down', net: Network) => {
    // Docker networks sync inside their own call (the answer waits for it); lab networks here.
    if (!net.docker) void this.syncDockerUser().catch((e) => log.warn({ err: e }, 'DOCKER-USER sync failed'));
  };

  constructor(
    private readonly c: Controller,
    opts: DockerNetworksOptions = {},
  ) {
    this.driverType = opts.driver ?? 'bridge';
    c.driver(this.driverType); // refuses an unknown driver now, not at the first call
    this.dockerUser = opts.dockerUser === false ? undefined : new DockerUserChain(c.host.tagPrefix);
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

  async activated(): Promise<void> {
    await this.syncDockerUser();
  }

  /** DOCKER-USER accept rules for every tnet bridge network (lab and Docker alike). */
  async syncDockerUser(): Promise<void> {
    if (!this.dockerUser) return;
    const bridges = this.c.state
      .networks()
      .filter((n) => n.driver === 'bridge' && n.state !== 'deleting')
      .map((n) => bridgeConfig(n.id, n.options).bridge);
    await this.dockerUser.sync(bridges);
  }

  private checkId(id: unknown, what: 'network' | 'endpoint'): string {
    if (typeof id !== 'string' || !/^[0-9a-f]{64}$/.test(id))
      throw invalid(`${what} ID ${JSON.stringify(id)} is not a Docker ID (64 lowercase hex digits)`, `${what} ${String(id)}`);
    return id;
  }

  /** A ready Docker network of this face, or a not-found error naming it. */
  private net(id: string): Network {
    const n = this.c.state.network(this.checkId(id, 'network'));
    if (!n || !n.docker) throw notFound(`network ${short(id)} is not a tnet network (unknown NetworkID ${id})`, `network ${short(id)}`);
    if (n.state !== 'ready') throw busy(`network ${short(id)} is being ${n.state === 'creating' ? 'created' : 'deleted'}`, `network ${short(id)}`);
    return n;
  }

  private endpoint(net: Network, id: string): Endpoint {
    const e = this.c.state.endpoint(this.checkId(id, 'endpoint'));
    if (!e || e.networkId !== net.id)
      throw notFound(`endpoint ${short(id)} does not exist on network ${short(net.id)} (unknown EndpointID ${id})`, `endpoint ${short(id)}`);
    return e;
  }

  // ---------------------------------------------------------------- networks

  async createNetwork(r: CreateNetworkRequest): Promise<void> {
    const id = this.checkId(r.NetworkID, 'network');
    const driver = this.c.driver(this.driverType);
    await this.c.locks.exclusive(id, async () => {
      const existing = this.c.state.network(id);
      if (existing) {
        // dockerd retries a call whose answer it lost: the same network again is not an error.
        if (existing.docker && existing.state === 'ready') return;
        throw conflict(`network ${short(id)} already exists in tnet (${existing.state})`, `network ${short(id)}`);
      }
      const internal = truthy(r.Options?.[INTERNAL]);
      const v4 = r.IPv4Data ?? [];
      const v6 = r.IPv6Data ?? [];
      if (v4.length > 1 || v6.length > 1)
        throw invalid('a tnet network takes at most one IPv4 and one IPv6 subnet (--subnet given more than once per family)', `network ${short(id)}`);
      if (v6.length && !truthy(r.Options?.[ENABLE_IPV6]) && r.Options?.[ENABLE_IPV6] !== undefined)
        throw invalid('IPv6 data was given for a network without IPv6 enabled', `network ${short(id)}`);
      const options = await driver.checkNetwork({ id, internal, options: genericOptions(r.Options) });
      const net = this.c.state.tx(() => {
        const ipv4 = v4[0] ? this.networkPool(id, v4[0], 4) : undefined;
        const ipv6 = v6[0] ? this.networkPool(id, v6[0], 6) : undefined;
        let name = `docker-${short(id)}`;
        if (this.c.state.findNetwork(name)?.name === name) name = id;
        const n: Network = {
          id, name, driver: driver.type, state: 'creating', internal, ipv4, ipv6,
          options, labels: {}, docker: true, created: new Date().toISOString(),
        };
        this.c.state.insertNetwork(n);
        return n;
      });
      try {
        await transaction((t) => driver.createNetwork(net, t));
      } catch (e) {
        this.c.state.tx(() => this.c.forgetNetwork(net));
        throw this.c.explain(e);
      }
      this.c.state.setNetworkState(id, 'ready');
      const ready = { ...net, state: 'ready' as const };
      this.c.emit('network', 'up', ready);
      await this.syncDockerUser();
    });
  }

  /**
   * The pool a Docker network's subnet is recorded in. tnet's IpamDriver made it: the network
   * takes its own reference (an identical shared request). dockerd's IPAM made it: a mirror pool
   * that reserves the subnet (and gateway and aux addresses) and hands nothing out.
   */
  private networkPool(id: string, d: IpamData, family: 4 | 6): IpConfig {
    let subnet: Subnet;
    try {
      subnet = Subnet.parse(d.Pool);
    } catch (e) {
      throw invalid(`IPv${family} pool "${d.Pool}" is not a subnet: ${(e as Error).message}`, `pool "${d.Pool}"`);
    }
    if (subnet.family !== family) throw invalid(`pool ${subnet} is not IPv${family}`, `pool "${d.Pool}"`);
    const gateway = d.Gateway ? addressOfCidr(d.Gateway, 'gateway').address : undefined;
    if (gateway && !subnet.contains(gateway)) throw invalid(`gateway ${gateway} is not in subnet ${subnet}`, `gateway "${d.Gateway}"`);
    const space = d.AddressSpace ?? '';
    const ours = this.c.ipam.listPools().find((p) => p.shared && p.addressSpace === space && p.subnet.equals(subnet));
    let pool: Pool;
    if (ours) {
      pool = this.c.ipam.requestPool({
        addressSpace: ours.addressSpace, subnet: ours.subnet.toString(), ipRange: ours.range.toString(),
        ...(ours.gateway ? { gateway: ours.gateway.toString() } : { noGateway: true }),
        auxAddresses: Object.fromEntries(Object.entries(ours.auxAddresses).map(([k, a]) => [k, a.toString()])),
        shared: true,
      });
    } else {
      const aux: Record<string, string> = {};
      for (const [k, v] of Object.entries(d.AuxAddresses ?? {})) {
        const a = v.includes('/') ? addressOfCidr(v, `aux address "${k}"`).address : IpAddr.parse(v);
        if (!gateway?.equals(a)) aux[k] = a.toString();
      }
      pool = this.c.ipam.requestPool({
        addressSpace: `docker:${space || 'unknown'}`, subnet: subnet.toString(),
        ...(gateway ? { gateway: gateway.toString() } : { noGateway: true }),
        auxAddresses: aux, owner: `docker network ${short(id)}`,
      });
    }
    return { poolId: pool.id, subnet, gateway };
  }

  async deleteNetwork(r: NetworkRef): Promise<void> {
    const id = this.checkId(r.NetworkID, 'network');
    const found = this.c.state.network(id);
    if (!found || !found.docker) throw notFound(`network ${short(id)} is not a tnet network (unknown NetworkID ${id})`, `network ${short(id)}`);
    await this.c.locks.exclusive(id, async () => {
      const net = this.c.state.network(id);
      if (!net) return;
      const d = this.c.driver(net.driver);
      // dockerd removes its endpoints before the network: any left here are stale (a
      // DeleteEndpoint lost while the plugin was down), and go with it.
      for (const ep of this.c.state.endpointsOfNetwork(id)) {
        log.info({ network: short(id), endpoint: short(ep.id) }, 'removing a stale endpoint with its network');
        await d.revokeExternalConnectivity(net, ep, ep.ports);
        await d.leave(net, ep, false);
        this.c.state.deleteEndpoint(ep.id);
      }
      this.c.state.setNetworkState(id, 'deleting');
      await d.deleteNetwork(net);
      this.c.state.tx(() => this.c.forgetNetwork(net));
      this.c.emit('network', 'down', net);
      await this.syncDockerUser();
    });
  }

  // ---------------------------------------------------------------- endpoints

  async createEndpoint(r: CreateEndpointRequest): Promise<CreateEndpointResponse> {
    const net = this.net(r.NetworkID);
    const id = this.checkId(r.EndpointID, 'endpoint');
    return this.c.locks.shared(net.id, async () => {
      const iface = r.Interface ?? {};
      const ipv4 = this.endpointAddress(net, net.ipv4, iface.Address, 4);
      const ipv6 = this.endpointAddress(net, net.ipv6, iface.AddressIPv6, 6);
      const given = iface.MacAddress ? checkMac(iface.MacAddress) : macFromOption(r.Options?.[MAC_ADDRESS]);
      if (given !== undefined) checkMac(given);
      parsePortMap(r.Options); // bad bindings fail here, before anything is recorded
      const existing = this.c.state.endpoint(id);
      if (existing) {
        if (existing.networkId !== net.id) throw conflict(`endpoint ${short(id)} already exists on another network`, `endpoint ${short(id)}`);
        return iface.MacAddress ? {} : { Interface: { MacAddress: existing.mac } };
      }
      const mac = given ?? macFor(ipv4?.value, id);
      const ep: Endpoint = {
        id, name: short(id), networkId: net.id, sandboxId: undefined, state: 'ready', ipv4, ipv6, mac,
        hostIfname: `tn${short(id)}`, ifname: 'eth', aliases: [], ports: [], gatewayProvider: false,
        created: new Date().toISOString(),
      };
      try {
        this.c.state.unsynced(() => this.c.state.insertEndpoint(ep)); // dockerd keeps its own record: see State.unsynced
      } catch (e) {
        if (/UNIQUE constraint failed: endpoints.host_ifname/.test(String(e)))
          throw conflict(`endpoint ${short(id)}: another endpoint has the same 12-digit ID prefix`, `endpoint ${short(id)}`);
        throw e;
      }
      this.c.emit('endpoint', 'up', ep, net, undefined);
      // Only the fields dockerd left empty: setting a given one makes it roll the endpoint back.
      return iface.MacAddress ? {} : { Interface: { MacAddress: mac } };
    });
  }

  private endpointAddress(net: Network, ip: IpConfig | undefined, cidrText: string | undefined, family: 4 | 6): IpAddr | undefined {
    if (!cidrText) return undefined;
    const what = family === 4 ? 'Address' : 'AddressIPv6';
    const { address, prefix } = addressOfCidr(cidrText, what);
    if (address.family !== family) throw invalid(`${what} ${cidrText} is not IPv${family}`, what);
    if (!ip) throw invalid(`network ${short(net.id)} has no IPv${family} subnet for ${cidrText}`, what);
    if (!ip.subnet.contains(address) || prefix !== ip.subnet.prefix)
      throw invalid(`${what} ${cidrText} is not in the network's subnet ${ip.subnet}`, what);
    return address;
  }

  async endpointOperInfo(r: EndpointRef): Promise<{ Value: Record<string, unknown> }> {
    const net = this.net(r.NetworkID);
    const ep = this.endpoint(net, r.EndpointID);
    const portmap = ep.ports.map((p) => ({
      Proto: PROTO_NUMBERS[p.proto], IP: (p.hostIp.includes(':') ? ep.ipv6 : ep.ipv4)?.toString() ?? '', Port: p.containerPort,
      HostIP: p.hostIp, HostPort: p.hostPort, HostPortEnd: p.hostPort,
    }));
    return {
      Value: {
        [MAC_ADDRESS]: ep.mac,
        [PORT_MAP]: portmap,
        [EXPOSED_PORTS]: ep.ports.map((p) => ({ Proto: PROTO_NUMBERS[p.proto], Port: p.containerPort })),
        'tnet.host_interface': ep.hostIfname,
        'tnet.bridge': bridgeConfig(net.id, net.options).bridge,
      },
    };
  }

  async deleteEndpoint(r: EndpointRef): Promise<void> {
    const net = this.net(r.NetworkID);
    const ep = this.endpoint(net, r.EndpointID);
    await this.c.locks.shared(net.id, async () => {
      const d = this.c.driver(net.driver);
      await d.revokeExternalConnectivity(net, ep, ep.ports);
      await d.leave(net, ep, false);
      // Not Controller.forgetEndpoint: the addresses are the IPAM's (dockerd releases them itself).
      this.c.state.deleteEndpoint(ep.id);
      this.c.emit('endpoint', 'down', ep, net, undefined);
    });
  }

  async join(r: JoinRequest): Promise<JoinResponse> {
    const net = this.net(r.NetworkID);
    const ep = this.endpoint(net, r.EndpointID);
    if (typeof r.SandboxKey !== 'string' || !r.SandboxKey.startsWith('/'))
      throw invalid(`SandboxKey ${JSON.stringify(r.SandboxKey)} is not a namespace path`, `endpoint ${short(ep.id)}`);
    return this.c.locks.shared(net.id, async () => {
      const d = this.c.driver(net.driver);
      let info: JoinInfo;
      try {
        info = await transaction((t) => d.join(net, ep, { kind: 'external' }, t));
      } catch (e) {
        if (!isErrno(e, 'EEXIST')) throw this.c.explain(e);
        // A Join retried after a lost answer: the old host end goes, a fresh pair is made.
        await linkDelIfExists(this.c.host.rtnl, ep.hostIfname);
        info = await transaction((t) => d.join(net, ep, { kind: 'external' }, t)).catch((e2: unknown) => {
          throw this.c.explain(e2);
        });
      }
      if (!info.srcName) throw new TnetError('internal', `driver ${net.driver} gave no interface for dockerd to move`);
      return {
        InterfaceName: { SrcName: info.srcName, DstPrefix: 'eth' },
        ...(info.gateway4 ? { Gateway: info.gateway4.toString() } : {}),
        ...(info.gateway6 ? { GatewayIPv6: info.gateway6.toString() } : {}),
        StaticRoutes: info.staticRoutes.map((s) => ({
          Destination: s.destination, RouteType: s.nextHop ? 0 : 1, ...(s.nextHop ? { NextHop: s.nextHop } : {}),
        })),
        DisableGatewayService: false,
      };
    });
  }

  async leave(r: EndpointRef): Promise<void> {
    const net = this.net(r.NetworkID);
    const ep = this.endpoint(net, r.EndpointID);
    await this.c.locks.shared(net.id, () => this.c.driver(net.driver).leave(net, ep, false));
  }

  async programExternalConnectivity(r: ProgramRequest): Promise<void> {
    const net = this.net(r.NetworkID);
    const ep0 = this.endpoint(net, r.EndpointID);
    const requests = parsePortMap(r.Options);
    if (net.internal || requests.length === 0 || ep0.ports.length > 0) return;
    await this.c.locks.shared(net.id, async () => {
      const defaultHostIp = bridgeConfig(net.id, net.options).hostBindingIpv4;
      const ports = await choosePorts(this.c.state, requests.map((q) => (q.hostIp === '' ? { ...q, hostIp: defaultHostIp } : q)));
      const ep = this.c.state.tx(() => {
        const cur = this.endpoint(net, ep0.id);
        if (cur.ports.length > 0) return undefined; // programmed by a concurrent call
        for (const p of ports) checkPortFree(this.c.state, p);
        for (const p of ports) this.c.state.insertPort(cur.id, p);
        return { ...cur, ports };
      });
      if (!ep) return;
      try {
        await transaction((t) => this.c.driver(net.driver).programExternalConnectivity(net, ep, ports, t));
      } catch (e) {
        this.c.state.deletePorts(ep.id);
        throw this.c.explain(e);
      }
    });
  }

  async revokeExternalConnectivity(r: EndpointRef): Promise<void> {
    const net = this.net(r.NetworkID);
    const ep = this.endpoint(net, r.EndpointID);
    if (ep.ports.length === 0) return;
    await this.c.locks.shared(net.id, async () => {
      await this.c.driver(net.driver).revokeExternalConnectivity(net, ep, ep.ports);
      this.c.state.deletePorts(ep.id);
    });
  }
}

