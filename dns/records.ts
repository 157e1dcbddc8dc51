import { invalid } from '../libnetwork/errors.js';
import { cidrContains, ipv4Bytes, ipv6Bytes, parseCidr, reverseName, type Cidr } from './cidr.js';
import { labelStarts, nameToKey } from './wire.js';

/**
 * The record table: what the controller tells the DNS engine, by calls (never by reading the store).
 * Every change bumps `generation`; the server compares it to drop cached answers, so a join, leave
 * or rename is visible in the very next answer.
 *
 * Names are kept as lower-cased wire-format keys (see wire.ts nameToKey), per network:
 *   - each of an endpoint's names (sandbox/endpoint name and aliases) and `name.networkName`;
 *   - the reverse name of each of its addresses (in-addr.arpa / ip6.arpa) -> PTR `name.networkName`.
 * A network's name is also a zone tnet answers for inside the scopes that include the network:
 * `anything.networkName` that is not a record is NXDOMAIN (never forwarded upstream).
 */

export interface NetworkSpec {
  networkId: string;
  /** Network name: also the DNS zone of `name.networkName`. */
  name: string;
  /** Internal networks never forward (a scope forwards only if one of its networks is not internal). */
  internal: boolean;
  /** Subnets (CIDR) whose clients a gateway listener of this network answers. */
  subnets?: string[];
  /**
   * Answers a name only when no other network of the asker's scope has it: a lab's names for its
   * nodes (their loopback or first address), after the address on a segment the asker shares.
   */
  fallback?: boolean;
}

export interface EndpointSpec {
  endpointId: string;
  networkId: string;
  /** Used until setNetwork() names the network (setNetwork's name wins). */
  networkName?: string;
  /** Sandbox/endpoint name first (the PTR target), then aliases. Case-insensitive. */
  names: string[];
  ipv4?: string;
  ipv6?: string;
  /**
   * The sandbox this endpoint belongs to. Lets a gateway listener answer a client with the names of
   * every network that client's sandbox is on, not only the gateway's network.
   */
  sandboxId?: string;
  /** Only a PTR for its address (a lab node's other addresses): its names answer no A/AAAA. */
  ptrOnly?: boolean;
}

export interface Endpoint {
  readonly id: string;
  readonly net: Network;
  /** Normalised (lower-case, no trailing dot) names; names[0] is the PTR target's first label(s). */
  readonly names: readonly string[];
  readonly v4: Buffer | null;
  readonly v6: Buffer | null;
  readonly sandboxId: string | undefined;
  readonly ptrOnly?: boolean;
  keys: string[];
  ptrKeys: string[];
  addrKeys: string[];
}

export interface Network {
  readonly id: string;
  name: string;
  /** Registered by setNetwork (an endpoint may arrive first; until then the network is internal). */
  known: boolean;
  internal: boolean;
  /** See NetworkSpec.fallback. */
  fallback?: boolean;
  subnets: Cidr[];
  /** Wire key of the zone `name.` or null when the network name is not a valid DNS name. */
  zoneKey: string | null;
  readonly endpoints: Map<string, Endpoint>;
  readonly names: Map<string, Endpoint[]>;
  readonly ptrs: Map<string, Endpoint[]>;
  /** Client address (hex bytes) -> endpoint, for gateway listeners. */
  readonly byAddr: Map<string, Endpoint>;
}

const LABEL = /^[a-z0-9_-]{1,63}$/;

/** Lower-case, strip one trailing dot, check the labels; throws TnetError('invalid-argument'). */
export function normalizeName(name: string, what: string): string {
  const n = (name.endsWith('.') ? name.slice(0, -1) : name).toLowerCase();
  const labels = n.split('.');
  if (n.length === 0 || n.length > 253 || !labels.every((l) => LABEL.test(l)))
    throw invalid(
      `${what} "${name}" is not a valid DNS name (labels of 1-63 letters, digits, '-' or '_', 253 characters at most)`,
      what,
    );
  return n;
}

function validZone(name: string): string | null {
  try {
    return normalizeName(name, 'network name');
  } catch {
    return null;
  }
}

export class DnsRecords {
  /** Bumped by every change; cached answers of an older generation are never served. */
  generation = 1;
  private readonly networks = new Map<string, Network>();
  private readonly endpoints = new Map<string, Endpoint>();
  private readonly sandboxes = new Map<string, readonly string[]>();

  // ---- controller calls ----

  setNetwork(spec: NetworkSpec): void {
    if (!spec.networkId) throw invalid('networkId is required', 'network');
    const subnets = (spec.subnets ?? []).map(parseCidr);
    const net = this.network(spec.networkId, spec.name);
    const renamed = net.name !== spec.name;
    net.known = true;
    net.internal = spec.internal;
    net.subnets = subnets;
    if (spec.fallback) net.fallback = true;
    if (renamed) {
      net.name = spec.name;
      this.reindex(net);
    }
    this.generation++;
  }

  removeNetwork(networkId: string): void {
    const net = this.networks.get(networkId);
    if (!net) return;
    for (const ep of [...net.endpoints.values()]) this.unlink(ep);
    this.networks.delete(networkId);
    this.generation++;
  }

  /** Add or replace an endpoint (a rename is a setEndpoint with new names). */
  setEndpoint(spec: EndpointSpec): void {
    if (!spec.endpointId) throw invalid('endpointId is required', 'endpoint');
    if (!spec.networkId) throw invalid('networkId is required', `endpoint "${spec.endpointId}"`);
    const what = `endpoint "${spec.endpointId}"`;
    const names = [...new Set(spec.names.map((n) => normalizeName(n, `name of ${what}`)))];
    let v4: Buffer | null = null;
    let v6: Buffer | null = null;
    if (spec.ipv4) {
      v4 = ipv4Bytes(spec.ipv4.replace(/\/\d+$/, ''));
      if (!v4) throw invalid(`ipv4 "${spec.ipv4}" of ${what} is not an IPv4 address`, what);
    }
    if (spec.ipv6) {
      v6 = ipv6Bytes(spec.ipv6.replace(/\/\d+$/, ''));
      if (!v6) throw invalid(`ipv6 "${spec.ipv6}" of ${what} is not an IPv6 address`, what);
    }
    const old = this.endpoints.get(spec.endpointId);
    if (old) this.unlink(old);
    const net = this.network(spec.networkId, spec.networkName ?? spec.networkId);
    if (!net.known && spec.networkName && net.name !== spec.networkName) {
      net.name = spec.networkName;
      this.reindex(net);
    }
    const ep: Endpoint = {
      id: spec.endpointId,
      net,
      names,
      v4,
      v6,
      sandboxId: spec.sandboxId,
      ...(spec.ptrOnly ? { ptrOnly: true } : {}),
      keys: [],
      ptrKeys: [],
      addrKeys: [],
    };
    this.endpoints.set(ep.id, ep);
    net.endpoints.set(ep.id, ep);
    this.index(ep);
    this.generation++;
  }

  removeEndpoint(endpointId: string): void {
    const ep = this.endpoints.get(endpointId);
    if (!ep) return;
    this.unlink(ep);
    this.generation++;
  }

  /** The networks a sandbox is on (its scope); replaces the previous list. */
  setSandboxNetworks(sandboxId: string, networkIds: readonly string[]): void {
    this.sandboxes.set(sandboxId, [...networkIds]);
    this.generation++;
  }

  removeSandbox(sandboxId: string): void {
    if (this.sandboxes.delete(sandboxId)) this.generation++;
    // a deleted sandbox's endpoints go with it
    for (const ep of [...this.endpoints.values()]) if (ep.sandboxId === sandboxId) this.removeEndpoint(ep.id);
  }

  // ---- queries used by the server ----

  /** Every network, in scope or not (tnet's own zones are all of theirs: zones.ts). */
  allNetworks(): IterableIterator<Network> {
    return this.networks.values();
  }

  getNetwork(networkId: string): Network | undefined {
    return this.networks.get(networkId);
  }

  sandboxNetworks(sandboxId: string): Network[] {
    const out: Network[] = [];
    for (const id of this.sandboxes.get(sandboxId) ?? []) {
      const n = this.networks.get(id);
      if (n) out.push(n);
    }
    return out;
  }

  hasSandbox(sandboxId: string): boolean {
    return this.sandboxes.has(sandboxId);
  }

  /** The endpoint on `net` whose address (bytes, see cidr.ts clientBytes) is the client's. */
  endpointByAddress(net: Network, address: Buffer): Endpoint | undefined {
    return net.byAddr.get(address.toString('hex'));
  }

  /** Is the client address (bytes) inside one of the network's subnets? */
  inSubnets(net: Network, address: Buffer): boolean {
    return net.subnets.some((c) => cidrContains(c, address));
  }

  // ---- internals ----

  private network(id: string, name: string): Network {
    let net = this.networks.get(id);
    if (!net) {
      net = {
        id,
        name,
        known: false,
        internal: true,
        subnets: [],
        zoneKey: null,
        endpoints: new Map(),
        names: new Map(),
        ptrs: new Map(),
        byAddr: new Map(),
      };
      net.zoneKey = zoneKeyOf(name);
      this.networks.set(id, net);
    }
    return net;
  }

  private reindex(net: Network): void {
    net.zoneKey = zoneKeyOf(net.name);
    net.names.clear();
    net.ptrs.clear();
    net.byAddr.clear();
    for (const ep of net.endpoints.values()) this.index(ep);
  }

  private index(ep: Endpoint): void {
    const net = ep.net;
    const zone = net.zoneKey ? net.name.toLowerCase().replace(/\.$/, '') : null;
    const keys = new Set<string>();
    for (const n of ep.names) {
      keys.add(nameToKey(n));
      if (zone) keys.add(nameToKey(`${n}.${zone}`));
    }
    ep.keys = ep.ptrOnly ? [] : [...keys];
    for (const k of ep.keys) push(net.names, k, ep);
    ep.ptrKeys = [];
    ep.addrKeys = [];
    for (const b of [ep.v4, ep.v6]) {
      if (!b) continue;
      if (ep.names.length > 0) {
        const k = nameToKey(reverseName(b));
        ep.ptrKeys.push(k);
        push(net.ptrs, k, ep);
      }
      const a = b.toString('hex');
      ep.addrKeys.push(a);
      net.byAddr.set(a, ep);
    }
  }

  private unlink(ep: Endpoint): void {
    const net = ep.net;
    for (const k of ep.keys) pull(net.names, k, ep);
    for (const k of ep.ptrKeys) pull(net.ptrs, k, ep);
    for (const a of ep.addrKeys) if (net.byAddr.get(a) === ep) net.byAddr.delete(a);
    net.endpoints.delete(ep.id);
    if (this.endpoints.get(ep.id) === ep) this.endpoints.delete(ep.id);
    // a network only ever created implicitly by its endpoints disappears with the last one
    if (!net.known && net.endpoints.size === 0) this.networks.delete(net.id);
  }
}

function zoneKeyOf(name: string): string | null {
  const z = validZone(name);
  return z ? nameToKey(z) : null;
}

function push(m: Map<string, Endpoint[]>, k: string, ep: Endpoint): void {
  const l = m.get(k);
  if (l) l.push(ep);
  else m.set(k, [ep]);
}

function pull(m: Map<string, Endpoint[]>, k: string, ep: Endpoint): void {
  const l = m.get(k);
  if (!l) return;
  const i = l.indexOf(ep);
  if (i >= 0) l.splice(i, 1);
  if (l.length === 0) m.delete(k);
}

/** The PTR target of an endpoint: `name.networkName` (just `name` if the network name is not a DNS name). */
export function ptrTarget(ep: Endpoint): string {
  const n = ep.names[0]!;
  return ep.net.zoneKey ? `${n}.${ep.net.name.toLowerCase().replace(/\.$/, '')}` : n;
}

/**
 * The network (among `nets`) whose zone contains the name key, if any: a proper subdomain or the
 * apex itself. Used to answer NXDOMAIN/NODATA for names under a network instead of forwarding them.
 */
export function zoneFor(nets: readonly Network[], key: string): Network | null {
  for (const start of labelStarts(key)) {
    const suffix = start === 0 ? key : key.slice(start);
    for (const n of nets) if (n.zoneKey === suffix) return n;
  }
  return null;
}
