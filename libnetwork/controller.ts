import { EventEmitter } from 'node:events';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { BridgeDriver } from '../drivers/bridge/bridge.js';
import type { Driver } from './driver.js';
import { TnetError, busy, conflict, invalid, notFound } from './errors.js';
import { IpAddr } from './ipam/address.js';
import { Ipam } from './ipam/ipam.js';
import {
  KernelError, Netns, Nft, Rtnl, linkDelIfExists, linkSetUp, netnsAdd, netnsDel, netnsExists, routeAdd,
  withRtnl, linkByName,
} from './kernel/index.js';
import { KeyedLock } from './lock.js';
import { log } from './log.js';
import type { Endpoint, IpConfig, Network, PortRequest, Sandbox } from './model.js';
import { canonicalOptions } from './netlabel.js';
import { checkPortFree, choosePorts } from './ports.js';
import { hostRoutes } from './hostroutes.js';
import { checkName, macFor, netnsName } from './sandbox.js';
import { openDb, stateDir as defaultStateDir } from './store/db.js';
import { State, migrations as coreMigrations, newId } from './store/state.js';
import { transaction } from './txn.js';

export interface NetworkRequest {
  readonly name: string;
  readonly driver?: string;
  readonly subnet?: string;
  readonly gateway?: string;
  readonly ipRange?: string;
  readonly auxAddresses?: Readonly<Record<string, string>>;
  readonly ipv6?: boolean;
  readonly subnet6?: string;
  readonly gateway6?: string;
  readonly ipRange6?: string;
  readonly internal?: boolean;
  readonly options?: Readonly<Record<string, string>>;
  readonly labels?: Readonly<Record<string, string>>;
}

export interface ConnectRequest {
  readonly ip?: string;
  readonly ip6?: string;
  readonly mac?: string;
  readonly aliases?: readonly string[];
  readonly ports?: readonly PortRequest[];
}

export interface ControllerOptions {
  readonly stateDir?: string;
  /** Where lab sandboxes' resolv.conf goes (ip netns exec reads /etc/netns/NAME/). */
  readonly etcNetns?: string;
}

/** Events for listeners such as the DNS server: they learn records from here, never from the store. */
export interface ControllerEvents {
  endpoint: [change: 'up' | 'down', ep: Endpoint, net: Network, sb: Sandbox | undefined];
  network: [change: 'up' | 'down', net: Network];
  sandbox: [change: 'up' | 'down', sb: Sandbox];
}

const DNS_LABEL = /^[a-zA-Z0-9]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)*$/;

/**
 * The one entry point of the core: networks, sandboxes and the endpoints that join them.
 * Each operation records its intent, does the kernel work as undoable steps, then commits.
 */
export class Controller extends EventEmitter<ControllerEvents> {
  readonly state: State;
  readonly ipam: Ipam;
  readonly stateDir: string;
  readonly host: { rtnl: Rtnl; nft: Nft; tagPrefix: string };
  private readonly drivers: Map<string, Driver>;
  readonly locks = new KeyedLock();
  private readonly etcNetns: string;

  private constructor(dir: string, opts: ControllerOptions) {
    super();
    this.stateDir = dir;
    this.etcNetns = opts.etcNetns ?? '/etc/netns';
    const db = openDb(dir, coreMigrations);
    this.state = new State(db);
    this.ipam = new Ipam(db, { ulaSeed: this.state.instance });
    this.host = { rtnl: Rtnl.open(), nft: Nft.open(), tagPrefix: `tnet:${this.state.instance}:` };
    this.drivers = new Map([['bridge', new BridgeDriver(this.host)]]);
  }

  /** Opens the state under `stateDir` and reconciles the kernel with it. */
  static async open(opts: ControllerOptions = {}): Promise<Controller> {
    const c = new Controller(defaultStateDir(opts.stateDir), opts);
    await c.reconcile();
    return c;
  }

  close(): void {
    this.host.rtnl.close();
    this.host.nft.close();
    this.state.db.close();
  }

  driver(type: string): Driver {
    const d = this.drivers.get(type);
    if (!d) throw invalid(`unknown driver "${type}"; available: ${[...this.drivers.keys()].join(', ')}`, `driver "${type}"`);
    return d;
  }

  // ---------------------------------------------------------------- networks

  network(ref: string): Network {
    const n = this.state.findNetwork(ref);
    if (!n || n.state === 'creating') throw notFound(`network "${ref}" not found`, `network "${ref}"`);
    return n;
  }

  networks(): Network[] {
    return this.state.networks().filter((n) => n.state !== 'creating');
  }

  async createNetwork(req: NetworkRequest): Promise<Network> {
    const name = checkName('network', req.name);
    return this.locks.exclusive(`network-name:${name}`, async () => {
      if (this.state.findNetwork(name)?.name === name) throw conflict(`network "${name}" already exists`, `network "${name}"`);
      const id = newId();
      const internal = req.internal ?? false;
      const driver = this.driver(req.driver ?? 'bridge');
      const options = await driver.checkNetwork({ id, internal, options: canonicalOptions(req.options ?? {}) });
      if (!req.ipv6 && (req.subnet6 || req.gateway6 || req.ipRange6))
        throw invalid('an IPv6 subnet, gateway or range needs IPv6 enabled (--ipv6)', `network "${name}"`);
      const avoid = await hostRoutes(this.host.rtnl);
      // intents before kernel work, each with its allocations: see State.unsynced
      const net = this.state.unsynced(() => {
        const pool4 = this.ipam.requestPool({
          subnet: req.subnet, ipRange: req.ipRange, gateway: req.gateway, auxAddresses: req.auxAddresses, avoid, owner: name,
        });
        const pool6 = req.ipv6
          ? this.ipam.requestPool({ subnet: req.subnet6, ipRange: req.ipRange6, gateway: req.gateway6, v6: true, avoid, owner: name })
          : undefined;
        if (pool4.v6) throw invalid(`subnet ${pool4.subnet} is IPv6; give it with --subnet6 and --ipv6`, `network "${name}"`);
        const ipConf = (p: typeof pool4): IpConfig => ({ poolId: p.id, subnet: p.subnet, gateway: p.gateway });
        const n: Network = {
          id, name, driver: driver.type, state: 'creating', internal,
          ipv4: ipConf(pool4), ipv6: pool6 ? ipConf(pool6) : undefined,
          options, labels: req.labels ?? {}, docker: false, created: new Date().toISOString(),
        };
        this.state.insertNetwork(n);
        return n;
      });
      try {
        await transaction((t) => driver.createNetwork(net, t));
      } catch (e) {
        this.state.tx(() => this.forgetNetwork(net));
        throw this.explain(e);
      }
      this.state.setNetworkState(id, 'ready');
      const ready = { ...net, state: 'ready' as const };
      this.emit('network', 'up', ready);
      return ready;
    });
  }

  forgetNetwork(net: Network): void {
    this.state.deleteNetwork(net.id);
    for (const ip of [net.ipv4, net.ipv6]) if (ip) this.ipam.releasePool(ip.poolId);
  }

  async deleteNetwork(ref: string): Promise<void> {
    const found = this.network(ref);
    await this.locks.exclusive(found.id, async () => {
      const net = this.network(found.id);
      if (net.docker) throw invalid(`network "${net.name}" belongs to Docker; use docker network rm`, `network "${net.name}"`);
      const eps = this.state.endpointsOfNetwork(net.id);
      if (eps.length > 0) {
        const who = eps.map((e) => (e.sandboxId ? this.state.sandbox(e.sandboxId)?.name : undefined) ?? e.name);
        throw busy(
          `network "${net.name}" still has ${eps.length} endpoint(s) (${who.slice(0, 5).join(', ')}${who.length > 5 ? ', ...' : ''}); disconnect them first`,
          `network "${net.name}"`,
        );
      }
      this.state.unsynced(() => this.state.setNetworkState(net.id, 'deleting'));
      await this.driver(net.driver).deleteNetwork(net);
      this.state.tx(() => this.forgetNetwork(net));
      this.emit('network', 'down', net);
    });
  }

  // ---------------------------------------------------------------- sandboxes

  sandbox(ref: string): Sandbox {
    const s = this.state.findSandbox(ref);
    if (!s || s.state === 'creating') throw notFound(`sandbox "${ref}" not found`, `sandbox "${ref}"`);
    return s;
  }

  sandboxes(): Sandbox[] {
    return this.state.sandboxes().filter((s) => s.state !== 'creating');
  }

  async createSandbox(req: { name: string }): Promise<Sandbox> {
    const name = checkName('sandbox', req.name);
    return this.locks.exclusive(`sandbox-name:${name}`, async () => {
      if (this.state.findSandbox(name)) throw conflict(`sandbox "${name}" already exists`, `sandbox "${name}"`);
      const nsName = netnsName(name);
      if (netnsExists(nsName))
        throw conflict(`a network namespace named "${nsName}" already exists and tnet does not own it`, `netns "${nsName}"`);
      const sb: Sandbox = {
        id: newId(), name, kind: 'lab', state: 'creating', netns: Netns.named(nsName).path, created: new Date().toISOString(),
      };
      this.state.unsynced(() => this.state.insertSandbox(sb));
      try {
        await transaction(async (t) => {
          const ns = await t.step(`netns ${nsName}`, () => netnsAdd(nsName), () => netnsDel(nsName));
          await withRtnl(ns, (h) => linkSetUp(h, 'lo'));
        });
      } catch (e) {
        this.state.deleteSandbox(sb.id);
        throw this.explain(e);
      }
      this.state.setSandboxState(sb.id, 'ready');
      const ready = { ...sb, state: 'ready' as const };
      this.emit('sandbox', 'up', ready);
      return ready;
    });
  }

  async deleteSandbox(ref: string): Promise<void> {
    const found = this.sandbox(ref);
    await this.locks.exclusive(found.id, async () => {
      const sb = this.sandbox(found.id);
      this.state.unsynced(() => this.state.setSandboxState(sb.id, 'deleting'));
      const eps = this.state.endpointsOfSandbox(sb.id);
      for (const ep of eps) {
        const net = this.state.network(ep.networkId)!;
        const d = this.driver(net.driver);
        await d.revokeExternalConnectivity(net, ep, ep.ports);
        await d.leave(net, ep, true);
      }
      this.removeNamespace(sb);
      this.state.tx(() => {
        for (const ep of eps) this.forgetEndpoint(ep, this.state.network(ep.networkId)!);
        this.state.deleteSandbox(sb.id);
      });
      for (const ep of eps) this.emit('endpoint', 'down', ep, this.state.network(ep.networkId)!, sb);
      this.emit('sandbox', 'down', sb);
    });
  }

  private removeNamespace(sb: Sandbox): void {
    if (sb.kind !== 'lab') return;
    const nsName = netnsName(sb.name);
    if (netnsExists(nsName)) netnsDel(nsName);
    rmSync(`${this.etcNetns}/${nsName}`, { recursive: true, force: true });
  }

  /** Writes the sandbox's resolv.conf (read by `ip netns exec` and `tnet exec`). */
  writeResolvConf(sb: Sandbox, content: string): void {
    if (sb.kind !== 'lab') return;
    const dir = `${this.etcNetns}/${netnsName(sb.name)}`;
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${dir}/resolv.conf`, content);
  }

  // ---------------------------------------------------------------- endpoints

  endpoints(): Endpoint[] {
    return this.state.endpoints().filter((e) => e.state === 'ready');
  }

  async connect(netRef: string, sbRef: string, req: ConnectRequest = {}): Promise<Endpoint> {
    const net0 = this.network(netRef);
    const sb0 = this.sandbox(sbRef);
    return this.locks.shared(net0.id, () =>
      this.locks.exclusive(sb0.id, async () => {
        const net = this.network(net0.id);
        const sb = this.sandbox(sb0.id);
        if (net.docker) throw invalid(`network "${net.name}" belongs to Docker; use docker network connect`, `network "${net.name}"`);
        if (net.state !== 'ready') throw busy(`network "${net.name}" is being ${net.state}`, `network "${net.name}"`);
        const existing = this.state.endpointsOfSandbox(sb.id).find((e) => e.networkId === net.id);
        if (existing) throw conflict(`sandbox "${sb.name}" is already connected to network "${net.name}"`, `sandbox "${sb.name}"`);
        const aliases = (req.aliases ?? []).map((a) => {
          if (!DNS_LABEL.test(a) || a.length > 253) throw invalid(`alias "${a}" is not a valid DNS name`, `alias "${a}"`);
          return a;
        });
        if (req.mac !== undefined && !/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(req.mac))
          throw invalid(`MAC address "${req.mac}" is not of the form 02:42:ac:11:00:02`, `mac "${req.mac}"`);
        if (req.mac !== undefined && (parseInt(req.mac.slice(0, 2), 16) & 1) === 1)
          throw invalid(`MAC address "${req.mac}" is a multicast address`, `mac "${req.mac}"`);
        const requests = req.ports ?? [];
        if (requests.length && net.internal)
          throw invalid(`network "${net.name}" is internal: it has no way in from outside, so ports cannot be published`, `network "${net.name}"`);
        const ports = await choosePorts(this.state, requests);
        const id = newId();
        const ep = this.state.unsynced(() => {
          const ipv4 = this.allocate(net, net.ipv4, req.ip, id, 4);
          const ipv6 = this.allocate(net, net.ipv6, req.ip6, id, 6);
          for (const p of ports) checkPortFree(this.state, p);
          const mine = this.state.endpointsOfSandbox(sb.id);
          let n = 0;
          while (mine.some((e) => e.ifname === `eth${n}`)) n++;
          const provides = !net.internal && (net.ipv4?.gateway !== undefined || net.ipv6?.gateway !== undefined) && !mine.some((e) => e.gatewayProvider);
          const e: Endpoint = {
            id, name: sb.name, networkId: net.id, sandboxId: sb.id, state: 'creating', ipv4, ipv6,
            mac: req.mac?.toLowerCase() ?? macFor(ipv4?.value, id), hostIfname: `tn${id.slice(0, 12)}`, ifname: `eth${n}`,
            aliases, ports, gatewayProvider: provides, created: new Date().toISOString(),
          };
          this.state.insertEndpoint(e);
          return e;
        });
        const d = this.driver(net.driver);
        try {
          await transaction(async (t) => {
            await d.join(net, ep, { kind: 'lab', ns: Netns.atPath(sb.netns), ifname: ep.ifname, defaultRoute: ep.gatewayProvider }, t);
            await d.programExternalConnectivity(net, ep, ep.ports, t);
          });
        } catch (e) {
          this.state.tx(() => this.forgetEndpoint(ep, net));
          throw this.explain(e);
        }
        this.state.setEndpointState(ep.id, 'ready');
        const ready = { ...ep, state: 'ready' as const };
        this.emit('endpoint', 'up', ready, net, sb);
        return ready;
      }),
    );
  }

  async disconnect(netRef: string, sbRef: string): Promise<void> {
    const net0 = this.network(netRef);
    const sb0 = this.sandbox(sbRef);
    await this.locks.shared(net0.id, () =>
      this.locks.exclusive(sb0.id, async () => {
        const net = this.network(net0.id);
        const sb = this.sandbox(sb0.id);
        const ep = this.state.endpointsOfSandbox(sb.id).find((e) => e.networkId === net.id);
        if (!ep) throw notFound(`sandbox "${sb.name}" is not connected to network "${net.name}"`, `sandbox "${sb.name}"`);
        this.state.unsynced(() => this.state.setEndpointState(ep.id, 'deleting'));
        const d = this.driver(net.driver);
        await d.revokeExternalConnectivity(net, ep, ep.ports);
        await d.leave(net, ep, false);
        this.state.tx(() => this.forgetEndpoint(ep, net));
        this.emit('endpoint', 'down', ep, net, sb);
        if (ep.gatewayProvider) await this.reassignGateway(sb);
      }),
    );
  }

  /** The sandbox lost its default route with an endpoint: the next eligible endpoint supplies it. */
  private async reassignGateway(sb: Sandbox): Promise<void> {
    for (const ep of this.state.endpointsOfSandbox(sb.id)) {
      const net = this.state.network(ep.networkId);
      if (!net || net.internal) continue;
      const gws = [net.ipv4?.gateway, net.ipv6?.gateway].filter((g): g is IpAddr => g !== undefined);
      if (!gws.length) continue;
      await withRtnl(Netns.atPath(sb.netns), async (h) => {
        const link = await linkByName(h, ep.ifname);
        if (!link) return;
        for (const g of gws) await routeAdd(h, { gateway: g.toString(), oif: link.index });
      });
      this.state.setGatewayProvider(ep.id, true);
      return;
    }
  }

  private allocate(net: Network, ip: IpConfig | undefined, want: string | undefined, owner: string, family: 4 | 6): IpAddr | undefined {
    if (!ip) {
      if (want) throw invalid(`network "${net.name}" has no IPv${family} subnet for address ${want}`, `network "${net.name}"`);
      return undefined;
    }
    if (want !== undefined && IpAddr.parse(want).family !== family)
      throw invalid(`address ${want} is not IPv${family}`, `address "${want}"`);
    return this.ipam.requestAddress(ip.poolId, { address: want, owner });
  }

  forgetEndpoint(ep: Endpoint, net: Network): void {
    this.state.deleteEndpoint(ep.id);
    for (const [addr, ip] of [[ep.ipv4, net.ipv4], [ep.ipv6, net.ipv6]] as const) {
      if (addr && ip) {
        try {
          this.ipam.releaseAddress(ip.poolId, addr.toString());
        } catch (e) {
          if (!(e instanceof TnetError && e.code === 'not-found')) throw e;
        }
      }
    }
  }

  // ---------------------------------------------------------------- reconcile

  /**
   * Makes the kernel match the store after a restart or a crash: finishes nothing half-made
   * (records still 'creating' or 'deleting' are undone), rebuilds what is wanted and missing,
   * removes what this instance tagged and no longer wants, touches nothing else.
   */
  async reconcile(): Promise<void> {
    const t0 = performance.now();
    // 1. Undo interrupted operations, innermost objects first.
    for (const ep of this.state.endpoints()) {
      if (ep.state === 'ready') continue;
      const net = this.state.network(ep.networkId)!;
      await linkDelIfExists(this.host.rtnl, ep.hostIfname);
      this.state.tx(() => this.forgetEndpoint(ep, net));
    }
    for (const sb of this.state.sandboxes()) {
      if (sb.state === 'ready') continue;
      const eps = this.state.endpointsOfSandbox(sb.id);
      this.removeNamespace(sb);
      this.state.tx(() => {
        for (const ep of eps) this.forgetEndpoint(ep, this.state.network(ep.networkId)!);
        this.state.deleteSandbox(sb.id);
      });
    }
    for (const net of this.state.networks()) {
      if (net.state === 'ready') continue;
      await this.driver(net.driver).deleteNetwork(net);
      this.state.tx(() => this.forgetNetwork(net));
    }
    // 2. Bridges, stale links and the firewall, per driver.
    const nets = this.state.networks();
    const eps = this.state.endpoints();
    for (const [type, d] of this.drivers) {
      await d.restore(nets.filter((n) => n.driver === type), eps.filter((e) => nets.find((n) => n.id === e.networkId)?.driver === type));
    }
    // 3. Lab sandboxes and their endpoints that vanished (a reboot) come back.
    for (const sb of this.state.sandboxes()) {
      if (sb.kind !== 'lab') continue;
      const nsName = netnsName(sb.name);
      if (!netnsExists(nsName)) {
        log.info({ sandbox: sb.name }, 'reconcile: recreating sandbox namespace');
        await withRtnl(netnsAdd(nsName), (h) => linkSetUp(h, 'lo'));
      }
      for (const ep of this.state.endpointsOfSandbox(sb.id)) {
        if (await linkByName(this.host.rtnl, ep.hostIfname)) continue;
        const net = this.state.network(ep.networkId)!;
        log.info({ sandbox: sb.name, network: net.name }, 'reconcile: recreating endpoint');
        const ns = Netns.atPath(sb.netns);
        await withRtnl(ns, (h) => linkDelIfExists(h, ep.ifname));
        await transaction((t) =>
          this.driver(net.driver).join(net, ep, { kind: 'lab', ns, ifname: ep.ifname, defaultRoute: ep.gatewayProvider }, t),
        );
      }
    }
    log.info({ ms: Math.round(performance.now() - t0) }, 'reconciled');
  }

  /** Kernel errors carry errno names; the faces want a TnetError with a code. */
  explain(e: unknown): unknown {
    if (e instanceof KernelError) {
      const code = e.errno === 'EEXIST' ? 'conflict' : e.errno.startsWith('EOPNOTSUPP') ? 'unsupported' : 'kernel';
      return new TnetError(code, e.message, { object: e.object, cause: e });
    }
    return e;
  }
}
