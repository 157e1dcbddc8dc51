import dgram from 'node:dgram';
import net from 'node:net';
import { invalid } from '../libnetwork/errors.js';
import { isErrno } from '../libnetwork/kernel/error.js';
import { log as rootLog, type Logger } from '../libnetwork/log.js';
import { encodeAnswer, render, resolve, type Answer } from './answers.js';
import { Forwarder, hostUpstreams, parseUpstream, type Upstream } from './forwarder.js';
import { clientBytes } from './cidr.js';
import { inOwnZone } from './zones.js';
import { DnsRecords, type EndpointSpec, type Network, type NetworkSpec } from './records.js';
import { loadUdpBatch, type UdpBatch } from './udp-batch.js';
import {
  DEFAULT_UDP_SIZE,
  ParsedQuery,
  QueryStatus,
  RCODE_BADVERS,
  RCODE_FORMERR,
  RCODE_NOTIMP,
  RCODE_NXDOMAIN,
  RCODE_REFUSED,
  TYPE_AXFR,
  TYPE_IXFR,
  TYPE_OPT,
  errorResponse,
  parseQuery,
  wireKey,
} from './wire.js';

/**
 * tnet's embedded DNS server: one instance in the daemon serves every sandbox and network.
 *
 * Scopes. Every query arrives through a listener, and every listener has a scope that decides which
 * names it may see:
 *   - `{ sandboxId }`: a listener inside one sandbox (127.0.0.11:53 in its namespace; service.ts
 *     creates the sockets there and hands them over by fd). Everything arriving on it comes from that
 *     sandbox, so it answers the names of every network the sandbox is on (setSandboxNetworks).
 *   - `{ networkId }`: a listener on a network's gateway address in the host namespace (what Docker
 *     containers reach: `--dns <gateway>`, or dockerd's own 127.0.0.11 forwarding there). It answers
 *     only clients whose source address is inside one of the network's subnets (setNetwork
 *     `subnets`); anyone else gets REFUSED, so it is never an open resolver. A client that is a known
 *     endpoint of a sandbox on that network sees everything its sandbox sees; other clients in the
 *     subnet see that network's names.
 * Names of networks outside the scope are never answered: under tnet's own zones (any network's
 * name, the reverse zones of its subnets: zones.ts) they are NXDOMAIN, exactly what a name that does
 * not exist gets, and never forwarded (the upstream would learn container names and addresses).
 *
 * Hot path. A repeated question is answered from a per-scope cache of encoded answers keyed by the
 * question bytes (lower-cased name, type, class) and the client's EDNS variant (none / OPT / OPT+DO):
 * the cached sections are copied behind the client's own header and question (so the ID and the
 * client's spelling of the name are the client's), the flags patched, multi-address answers
 * re-shuffled by permuting fixed-size record blocks, and the result truncated to the client's UDP
 * size. No decode, no encode. Any record change bumps the records' generation, which drops every
 * cached answer at the next query. Only local answers are cached; forwarded ones never are (their
 * TTLs belong to the upstream).
 */

/**
 * TTLs, on purpose:
 * - Records (A, AAAA, PTR): 5 s. Containers come and go and addresses are reused, so a long TTL
 *   (libnetwork's 600 s) makes caching clients (systemd-resolved, nscd, JVMs, proxies) talk to a
 *   dead or recycled address for minutes. 0 (aardvark) forbids any caching, which some clients treat
 *   specially and which turns every connection burst into a burst of queries. Answers cost tnet a
 *   few microseconds, so a few seconds of staleness at most is the right bound.
 * - Negative answers (SOA minimum and TTL for NXDOMAIN/NODATA): 0 s. The common race is a container
 *   looking up a peer that is still starting; caching "does not exist" would hide it once it exists.
 */
export const DEFAULT_TTL = 5;
export const DEFAULT_NEGATIVE_TTL = 0;

export interface DnsServerOptions {
  /** Upstream resolvers ("1.2.3.4", "1.2.3.4:5353", "[fd00::1]:53"); default: the host's resolv.conf (see hostUpstreams). */
  upstreams?: (string | Upstream)[];
  /** resolv.conf to read the default upstreams from. */
  resolvConf?: string;
  /** Per-upstream timeout (default 2000 ms). */
  upstreamTimeoutMs?: number;
  /** Bound on a whole forward over all upstreams (default 4000 ms, under glibc's 5 s per try). */
  forwardDeadlineMs?: number;
  /** Forwards in flight at once (default 512; each holds a socket); over it: REFUSED. */
  maxInflightForwards?: number;
  ttl?: number;
  negativeTtl?: number;
  /**
   * Largest UDP answer we send and advertise in our OPT record (default 4096). The client's EDNS
   * size is honoured up to this; without EDNS the limit is 512.
   */
  maxUdpSize?: number;
  /** Cached answers over all scopes (default 20000; when full the cache starts over). */
  maxCacheEntries?: number;
  /** Open TCP connections over all listeners (default 256); more are closed at once. */
  maxTcpConnections?: number;
  /**
   * Open TCP connections of one client (default 16): a sandbox (everything on its own listener) or,
   * on a gateway listener, one source address. So one client cannot take the global limit from
   * every other sandbox.
   */
  maxTcpPerClient?: number;
  /** A TCP connection idle, or holding an unfinished message, this long is closed (default 10 s). */
  tcpIdleTimeoutMs?: number;
  /**
   * Batched UDP I/O (recvmmsg/sendmmsg, see udp-batch.ts; default true where available). false:
   * plain dgram, one callback and one send per datagram.
   */
  batchUdp?: boolean;
  logger?: Logger;
}

export type Scope = { sandboxId: string; networkId?: never } | { networkId: string; sandboxId?: never };

export interface ListenerOptions {
  /** An already bound UDP socket (created inside a sandbox's namespace). */
  udpFd?: number;
  /** An already bound (not necessarily listening) TCP socket. */
  tcpFd?: number;
  /** Address family of the fds (default 4). */
  family?: 4 | 6;
  /** Or bind here (tests, benchmarks, gateway addresses in the host namespace). */
  host?: string;
  /** With host: port (0 = any free port, the same for UDP and TCP). */
  port?: number;
  /** With host: which protocols (default both). */
  udp?: boolean;
  tcp?: boolean;
}

export interface ListenerHandle {
  readonly scope: Scope;
  /** Bound UDP/TCP addresses (undefined for a protocol not served). */
  readonly udp: net.AddressInfo | undefined;
  readonly tcp: net.AddressInfo | undefined;
  close(): Promise<void>;
}

export interface DnsStats {
  queries: number;
  cacheHits: number;
  local: number;
  forwarded: number;
  refused: number;
  servfail: number;
  formerr: number;
  notimp: number;
  dropped: number;
  truncated: number;
  tcpConnections: number;
  /** TCP connections closed at once because their client already had maxTcpPerClient open. */
  tcpRefused: number;
}

interface View {
  readonly key: string;
  readonly scope: Scope;
  gen: number;
  nets: Network[];
  /** At least one registered, non-internal network: unknown names are forwarded. */
  forwards: boolean;
  /** Encoded answers, by EDNS variant: 0 no OPT, 1 OPT, 2 OPT with DO. */
  readonly caches: [Map<string, Answer>, Map<string, Answer>, Map<string, Answer>];
}

interface Listener {
  readonly scope: Scope;
  /** Sandbox scope: its view. Network scope: null (the view depends on the client). */
  view: View | null;
  /** Gateway listeners: client address (text, or an IPv4 address as a number) -> its view. */
  readonly clients: Map<string | number, View | null>;
  clientsGen: number;
  udp: dgram.Socket | null;
  tcp: net.Server | null;
  readonly conns: Set<net.Socket>;
  closed: boolean;
  /** Batched UDP: datagrams found by the last drain, and when the last datagram came (ms). */
  drained: number;
  lastAt: number;
}

type Reply = Buffer | null | Promise<Buffer | null>;

const MAX_CLIENTS_REMEMBERED = 4096;
/** Datagrams closer together than this suggest more are queued: drain (see onUdpBatch). */
const DRAIN_WINDOW_MS = 0.05;

/** dgram resolves the destination of every send through `lookup`; ours are always IP literals. */
function literalLookup(family: 4 | 6) {
  return (address: string, _opts: unknown, cb: (err: Error | null, address: string, family: number) => void) =>
    cb(null, address, family);
}

function v4bytes(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

function upper(b: number): boolean {
  return b >= 0x41 && b <= 0x5a;
}

export class DnsServer {
  readonly records = new DnsRecords();
  readonly stats: DnsStats = {
    queries: 0,
    cacheHits: 0,
    local: 0,
    forwarded: 0,
    refused: 0,
    servfail: 0,
    formerr: 0,
    notimp: 0,
    dropped: 0,
    truncated: 0,
    tcpConnections: 0,
    tcpRefused: 0,
  };
  private forwarder: Forwarder;
  private readonly log: Logger;
  private readonly ttl: number;
  private readonly negativeTtl: number;
  private readonly maxUdp: number;
  private readonly maxCache: number;
  private readonly maxTcp: number;
  private readonly maxTcpPerClient: number;
  /** Open TCP connections per client (see tcpClient). */
  private readonly tcpPerClient = new Map<string, number>();
  private readonly tcpIdleMs: number;
  private readonly opts: DnsServerOptions;
  private readonly views = new Map<string, View>();
  private readonly listeners = new Set<Listener>();
  private readonly adhoc = new Map<string, Listener>();
  private cacheEntries = 0;
  /** Our OPT record (no options), for error responses to EDNS clients. */
  private readonly optRecord: Buffer;
  /** Reused for every packet: the hot path allocates no parse state. */
  private readonly pq = new ParsedQuery();
  private readonly batch: UdpBatch | null;

  constructor(opts: DnsServerOptions = {}) {
    this.opts = opts;
    this.log = opts.logger ?? rootLog.child({ module: 'dns' });
    this.ttl = opts.ttl ?? DEFAULT_TTL;
    this.negativeTtl = opts.negativeTtl ?? DEFAULT_NEGATIVE_TTL;
    this.maxUdp = Math.max(DEFAULT_UDP_SIZE, Math.min(opts.maxUdpSize ?? 4096, 65535));
    this.maxCache = opts.maxCacheEntries ?? 20000;
    this.maxTcp = opts.maxTcpConnections ?? 256;
    this.maxTcpPerClient = opts.maxTcpPerClient ?? 16;
    this.tcpIdleMs = opts.tcpIdleTimeoutMs ?? 10_000;
    this.optRecord = Buffer.from([0, 0, TYPE_OPT, this.maxUdp >> 8, this.maxUdp & 0xff, 0, 0, 0, 0, 0, 0]);
    this.forwarder = this.makeForwarder(opts.upstreams);
    this.batch = opts.batchUdp === false ? null : loadUdpBatch();
  }

  // ---------------------------------------------------------------- controller API

  setNetwork(spec: NetworkSpec): void {
    this.records.setNetwork(spec);
  }
  removeNetwork(networkId: string): void {
    this.records.removeNetwork(networkId);
    this.dropView(`n:${networkId}`);
  }
  setEndpoint(spec: EndpointSpec): void {
    this.records.setEndpoint(spec);
  }
  removeEndpoint(endpointId: string): void {
    this.records.removeEndpoint(endpointId);
  }
  setSandboxNetworks(sandboxId: string, networkIds: readonly string[]): void {
    this.records.setSandboxNetworks(sandboxId, networkIds);
  }
  removeSandbox(sandboxId: string): void {
    this.records.removeSandbox(sandboxId);
    this.dropView(`s:${sandboxId}`);
  }
  /** Replace the upstream list (e.g. the host's resolv.conf changed); undefined: re-read resolv.conf. */
  setUpstreams(upstreams?: (string | Upstream)[]): void {
    this.forwarder = this.makeForwarder(upstreams);
  }
  get upstreams(): readonly Upstream[] {
    return this.forwarder.upstreams;
  }
  /** Forwards waiting for an upstream right now. */
  get inflightForwards(): number {
    return this.forwarder.inflight;
  }
  /** Encoded answers held in the cache, over all scopes. */
  get cachedAnswers(): number {
    return this.cacheEntries;
  }

  /**
   * Serve a scope on a socket pair: by fd (sockets the controller created inside a namespace) or by
   * host/port. Resolves once bound.
   */
  async addListener(opts: ListenerOptions, scope: Scope): Promise<ListenerHandle> {
    checkScope(scope);
    const l: Listener = {
      scope,
      view: null,
      clients: new Map(),
      clientsGen: 0,
      udp: null,
      tcp: null,
      conns: new Set(),
      closed: false,
      drained: 0,
      lastAt: 0,
    };
    if (scope.sandboxId !== undefined) l.view = this.viewFor(scope);
    const type = opts.family === 6 || (opts.host !== undefined && net.isIP(opts.host) === 6) ? 'udp6' : 'udp4';
    try {
      if (opts.udpFd !== undefined || opts.tcpFd !== undefined) {
        if (opts.udpFd !== undefined) l.udp = await this.bindUdp(l, type, { fd: opts.udpFd });
        if (opts.tcpFd !== undefined) l.tcp = await this.listenTcp(l, { fd: opts.tcpFd });
      } else {
        if (opts.host === undefined) throw invalid('a DNS listener needs udpFd/tcpFd or host', 'dns listener');
        await this.bindHost(l, type, opts.host, opts.port ?? 53, opts.udp !== false, opts.tcp !== false);
      }
    } catch (e) {
      await closeListener(l);
      throw e;
    }
    this.listeners.add(l);
    const udpAddr = l.udp ? l.udp.address() : undefined;
    const tcpAddr = l.tcp ? (l.tcp.address() as net.AddressInfo) : undefined;
    this.log.debug({ scope, udp: udpAddr, tcp: tcpAddr }, 'dns: listening');
    return {
      scope,
      udp: udpAddr,
      tcp: tcpAddr,
      close: async () => {
        this.listeners.delete(l);
        await closeListener(l);
      },
    };
  }

  /** Close every listener. */
  async close(): Promise<void> {
    const all = [...this.listeners];
    this.listeners.clear();
    await Promise.all(all.map(closeListener));
  }

  /**
   * Answer one DNS message as if it arrived on a listener of `scope` from `clientAddress` (default
   * 127.0.0.1) over UDP or TCP: the same code path as the sockets (cache included). For tests and
   * for faces that carry DNS some other way. null: no answer (not a query).
   */
  async query(msg: Buffer, scope: Scope, opts: { clientAddress?: string; tcp?: boolean } = {}): Promise<Buffer | null> {
    checkScope(scope);
    const k = scope.sandboxId !== undefined ? `s:${scope.sandboxId}` : `n:${scope.networkId}`;
    let l = this.adhoc.get(k);
    if (!l) {
      l = { scope, view: null, clients: new Map(), clientsGen: 0, udp: null, tcp: null, conns: new Set(), closed: false, drained: 0, lastAt: 0 };
      if (scope.sandboxId !== undefined) l.view = this.viewFor(scope);
      this.adhoc.set(k, l);
    }
    return this.answer(l, msg, opts.clientAddress ?? '127.0.0.1', opts.tcp === true);
  }

  // ---------------------------------------------------------------- the answer path

  /** `client`: the source address as text, or an IPv4 source as a 32-bit number (batched path). */
  private answer(l: Listener, msg: Buffer, client: string | number, tcp: boolean): Reply {
    this.stats.queries++;
    const q = this.pq;
    const st = parseQuery(msg, q);
    if (st !== QueryStatus.Ok) return this.malformed(msg, q, st);
    let view = l.view;
    if (view === null) view = this.clientView(l, client);
    else if (view.gen !== this.records.generation) view = this.refreshListenerView(l);
    if (view === null) {
      this.stats.refused++;
      return errorResponse(msg, q, RCODE_REFUSED, this.optRecord);
    }
    if (view.gen !== this.records.generation) this.refresh(view);
    const limit = tcp ? 65535 : q.hasOpt ? (q.udpSize < DEFAULT_UDP_SIZE ? DEFAULT_UDP_SIZE : q.udpSize > this.maxUdp ? this.maxUdp : q.udpSize) : DEFAULT_UDP_SIZE;
    const qt = q.qtype;
    // The key is the question section lower-cased by wireKey, which folds A-Z: a type whose bytes
    // look like letters would collide with another, so such (exotic) types skip the cache.
    let key: string | null = null;
    const variant = q.hasOpt ? (q.dnssecOk ? 2 : 1) : 0;
    if (q.qclass === 1 && !upper(qt >> 8) && !upper(qt & 0xff)) {
      key = wireKey(msg, 12, q.qEnd);
      const a = view.caches[variant].get(key);
      if (a !== undefined) {
        this.stats.cacheHits++;
        const out = render(a, msg, q.qEnd, limit);
        if (out.length < q.qEnd + a.tail.length) this.stats.truncated++;
        return out;
      }
    }
    return this.slow(view, msg, q, key, variant, limit, tcp);
  }

  private slow(view: View, msg: Buffer, q: ParsedQuery, key: string | null, variant: 0 | 1 | 2, limit: number, tcp: boolean): Reply {
    if (q.qtype === TYPE_AXFR || q.qtype === TYPE_IXFR) {
      this.stats.notimp++;
      return errorResponse(msg, q, RCODE_NOTIMP, this.optRecord);
    }
    if (q.qtype === TYPE_OPT) {
      this.stats.formerr++;
      return errorResponse(msg, q, RCODE_FORMERR, this.optRecord);
    }
    const res = resolve({
      nets: view.nets,
      key: wireKey(msg, 12, q.nameEnd),
      qtype: q.qtype,
      qclass: q.qclass,
      ttl: this.ttl,
    });
    if (res.kind === 'local') {
      this.stats.local++;
      const a = encodeAnswer({
        rcode: res.rcode,
        answers: res.answers,
        soaZone: res.soaZone,
        negativeTtl: this.negativeTtl,
        recursionAvailable: view.forwards,
        opt: q.hasOpt ? { udpSize: this.maxUdp, dnssecOk: q.dnssecOk } : null,
      });
      if (key !== null) this.store(view, variant, key, a);
      const out = render(a, msg, q.qEnd, limit);
      if (out.length < q.qEnd + a.tail.length) this.stats.truncated++;
      return out;
    }
    if (inOwnZone(this.records.allNetworks(), wireKey(msg, 12, q.nameEnd))) {
      // Under a zone of tnet's (a network's name, a reverse zone of its subnets) but not a record in
      // this scope: it does not exist, here or anywhere; never asked upstream (zones.ts).
      this.stats.local++;
      const a = encodeAnswer({
        rcode: RCODE_NXDOMAIN, answers: [], soaZone: null, negativeTtl: this.negativeTtl, recursionAvailable: view.forwards,
        opt: q.hasOpt ? { udpSize: this.maxUdp, dnssecOk: q.dnssecOk } : null,
      });
      if (key !== null) this.store(view, variant, key, a);
      return render(a, msg, q.qEnd, limit);
    }
    if (!view.forwards) {
      // Internal-only scope: never forwarded. REFUSED rather than SERVFAIL: it is policy, not a
      // failure (RFC 1035), it is immediate and it does not look like a broken upstream in logs.
      this.stats.refused++;
      return errorResponse(msg, q, RCODE_REFUSED, this.optRecord);
    }
    return this.forward(msg, q, limit, tcp);
  }

  private async forward(query: Buffer, q: ParsedQuery, limit: number, tcp: boolean): Promise<Buffer | null> {
    // q is reused by the next packet and the query may sit in a shared batch buffer: copy both
    const snap = Object.assign(new ParsedQuery(), q);
    const msg = Buffer.from(query);
    const opt = q.hasOpt ? Buffer.from(msg.subarray(q.optStart, q.optStart + q.optLen)) : null;
    this.stats.forwarded++;
    const r = await this.forwarder.forward(msg, snap.qEnd, opt, tcp);
    if ('rcode' in r) {
      if (r.rcode === RCODE_REFUSED) this.stats.refused++;
      else this.stats.servfail++;
      return errorResponse(msg, snap, r.rcode, this.optRecord);
    }
    if (r.reply.length <= limit) return r.reply;
    // too large for the client's UDP size: header and question with TC; the client retries over TCP
    this.stats.truncated++;
    const out = errorResponse(msg, snap, r.reply[3]! & 0x0f, this.optRecord);
    out[2] = r.reply[2]! | 0x02;
    out[3] = r.reply[3]!;
    return out;
  }

  private malformed(msg: Buffer, q: ParsedQuery, st: QueryStatus): Buffer | null {
    switch (st) {
      case QueryStatus.Drop:
        this.stats.dropped++;
        return null;
      case QueryStatus.NotImp:
        this.stats.notimp++;
        return errorResponse(msg, q, RCODE_NOTIMP, this.optRecord);
      case QueryStatus.BadVers:
        this.stats.formerr++;
        return errorResponse(msg, q, RCODE_BADVERS, this.optRecord);
      default:
        this.stats.formerr++;
        return errorResponse(msg, q, RCODE_FORMERR, this.optRecord);
    }
  }

  // ---------------------------------------------------------------- scopes and cache

  private viewFor(scope: Scope): View {
    const key = scope.sandboxId !== undefined ? `s:${scope.sandboxId}` : `n:${scope.networkId}`;
    let v = this.views.get(key);
    if (!v) {
      v = { key, scope, gen: 0, nets: [], forwards: false, caches: [new Map(), new Map(), new Map()] };
      this.views.set(key, v);
    }
    return v;
  }

  private refresh(v: View): void {
    for (const c of v.caches) {
      this.cacheEntries -= c.size;
      c.clear();
    }
    if (v.scope.sandboxId !== undefined) v.nets = this.records.sandboxNetworks(v.scope.sandboxId);
    else {
      const n = this.records.getNetwork(v.scope.networkId);
      v.nets = n ? [n] : [];
    }
    v.forwards = v.nets.some((n) => n.known && !n.internal);
    v.gen = this.records.generation;
  }

  private refreshListenerView(l: Listener): View {
    const v = this.viewFor(l.scope);
    l.view = v;
    if (v.gen !== this.records.generation) this.refresh(v);
    return v;
  }

  private dropView(key: string): void {
    const v = this.views.get(key);
    if (!v) return;
    for (const c of v.caches) {
      this.cacheEntries -= c.size;
      c.clear();
    }
    this.views.delete(key);
  }

  /** A gateway listener's view for one client address (null: outside the network, REFUSED). */
  private clientView(l: Listener, client: string | number): View | null {
    const gen = this.records.generation;
    if (l.clientsGen !== gen) {
      l.clients.clear();
      l.clientsGen = gen;
    }
    const known = l.clients.get(client);
    if (known !== undefined) return known;
    let v: View | null = null;
    const netId = l.scope.networkId!;
    const n = this.records.getNetwork(netId);
    const bytes = typeof client === 'number' ? v4bytes(client) : clientBytes(client);
    if (n && bytes && this.records.inSubnets(n, bytes)) {
      const sb = this.records.endpointByAddress(n, bytes)?.sandboxId;
      v =
        sb !== undefined && this.records.sandboxNetworks(sb).includes(n)
          ? this.viewFor({ sandboxId: sb })
          : this.viewFor({ networkId: netId });
    }
    if (l.clients.size >= MAX_CLIENTS_REMEMBERED) l.clients.clear();
    l.clients.set(client, v);
    return v;
  }

  private store(v: View, variant: 0 | 1 | 2, key: string, a: Answer): void {
    if (this.cacheEntries >= this.maxCache) {
      for (const view of this.views.values()) for (const c of view.caches) c.clear();
      this.cacheEntries = 0;
    }
    const c = v.caches[variant];
    if (!c.has(key)) this.cacheEntries++;
    c.set(key, a);
  }

  // ---------------------------------------------------------------- sockets

  private makeForwarder(upstreams?: (string | Upstream)[]): Forwarder {
    const ups = upstreams ? upstreams.map(parseUpstream) : hostUpstreams(this.opts.resolvConf);
    if (ups.length === 0 && !upstreams) this.log.warn('dns: no upstream resolvers in the host resolv.conf; names that are not tnet\'s will get SERVFAIL');
    return new Forwarder({
      upstreams: ups,
      timeoutMs: this.opts.upstreamTimeoutMs ?? 2000,
      deadlineMs: this.opts.forwardDeadlineMs ?? 4000,
      maxInflight: this.opts.maxInflightForwards ?? 512,
      log: this.log,
    });
  }

  private async bindHost(l: Listener, type: 'udp4' | 'udp6', host: string, port: number, udp: boolean, tcp: boolean): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      try {
        let p = port;
        if (udp) {
          if (this.batch) {
            // our own socket (so we know its fd for recvmmsg), adopted by dgram through bind({ fd })
            const fd = this.batch.openUdp(host, port);
            try {
              l.udp = await this.bindUdp(l, type, { fd });
            } catch (e) {
              this.batch.closeFd(fd);
              throw e;
            }
          } else l.udp = await this.bindUdp(l, type, { address: host, port: p });
          p = l.udp.address().port;
        }
        if (tcp) l.tcp = await this.listenTcp(l, { host, port: p });
        return;
      } catch (e) {
        await closeListener(l);
        l.closed = false;
        // port 0: the free UDP port may be taken for TCP; pick another pair
        if (port !== 0 || attempt >= 10 || !isErrno(e, 'EADDRINUSE')) throw e;
      }
    }
  }

  private bindUdp(l: Listener, type: 'udp4' | 'udp6', where: dgram.BindOptions): Promise<dgram.Socket> {
    const sock = dgram.createSocket({ type, lookup: literalLookup(type === 'udp6' ? 6 : 4) as never });
    const fd = where.fd ?? -1;
    return new Promise((resolveBind, reject) => {
      sock.once('error', reject);
      sock.once('listening', () => {
        sock.off('error', reject);
        try {
          sock.setRecvBufferSize(4 << 20);
        } catch {
          // capped by net.core.rmem_max: fine
        }
        sock.on('error', (e) => this.log.debug({ err: e.message }, 'dns: udp socket error'));
        const batch = fd >= 0 ? this.batch : null;
        sock.on('message', (msg, rinfo) => {
          if (batch) this.onUdpBatch(l, sock, fd, batch, msg, rinfo);
          else this.onUdp(l, sock, msg, rinfo.address, rinfo.port);
        });
        resolveBind(sock);
      });
      sock.bind(where);
    });
  }

  /** One datagram through dgram: answer, send. */
  private onUdp(l: Listener, sock: dgram.Socket, msg: Buffer, address: string, port: number): void {
    let r: Reply;
    try {
      r = this.answer(l, msg, address, false);
    } catch (e) {
      this.log.error({ err: (e as Error).stack }, 'dns: failed to answer');
      return;
    }
    if (r === null) return;
    if (!(r instanceof Promise)) sock.send(r, port, address);
    else this.sendLater(l, sock, r, address, port);
  }

  private sendLater(l: Listener, sock: dgram.Socket, r: Promise<Buffer | null>, address: string, port: number): void {
    r.then(
      (b) => {
        if (b && !l.closed) sock.send(b, port, address);
      },
      (e: Error) => this.log.error({ err: e.stack }, 'dns: failed to forward'),
    );
  }

  /**
   * The datagram dgram delivered, then everything else already queued on the socket (recvmmsg),
   * answered together with one sendmmsg. Forwarded queries are answered later through dgram.
   */
  private onUdpBatch(l: Listener, sock: dgram.Socket, fd: number, b: UdpBatch, msg: Buffer, rinfo: dgram.RemoteInfo): void {
    try {
      const r = this.answer(l, msg, rinfo.address, false);
      if (r instanceof Promise) this.sendLater(l, sock, r, rinfo.address, rinfo.port);
      else if (r !== null && !b.stageTo(rinfo.address, rinfo.port, r)) sock.send(r, rinfo.port, rinfo.address);
    } catch (e) {
      this.log.error({ err: (e as Error).stack }, 'dns: failed to answer');
    }
    // Drain only when datagrams are likely waiting: the last drain found some, or this one came
    // hard on the heels of the previous one. At low rates that saves an empty recvmmsg per query.
    const now = performance.now();
    const n = l.drained > 0 || now - l.lastAt < DRAIN_WINDOW_MS ? b.recv(fd) : 0;
    l.drained = n;
    l.lastAt = now;
    for (let i = 0; i < n; i++) {
      const m = b.packet(i);
      if (m === null) {
        this.stats.queries++;
        this.stats.dropped++; // larger than a batch slot: not a query we would answer anyway
        continue;
      }
      const v4 = b.v4source(i);
      let r: Reply;
      try {
        r = this.answer(l, m, v4 >= 0 ? v4 : b.source(i).address, false);
      } catch (e) {
        this.log.error({ err: (e as Error).stack }, 'dns: failed to answer');
        continue;
      }
      if (r === null) continue;
      if (r instanceof Promise) {
        const src = b.source(i);
        this.sendLater(l, sock, r, src.address, src.port);
      } else if (!b.stageReply(i, r)) {
        const src = b.source(i);
        sock.send(r, src.port, src.address);
      }
    }
    for (const u of b.flush(fd)) sock.send(u.answer, u.port, u.address);
  }

  private listenTcp(l: Listener, where: net.ListenOptions | { fd: number }): Promise<net.Server> {
    const srv = net.createServer({ noDelay: true }, (s) => this.onTcp(l, s));
    return new Promise((resolveListen, reject) => {
      srv.once('error', reject);
      srv.listen(where as net.ListenOptions, () => {
        srv.off('error', reject);
        srv.on('error', (e) => this.log.warn({ err: e.message }, 'dns: tcp listener error'));
        resolveListen(srv);
      });
    });
  }

  /**
   * One TCP connection: 2-byte length-prefixed messages (RFC 1035 4.2.2, pipelining allowed,
   * answers in completion order per RFC 7766). Closed when idle or when a message stays unfinished
   * for tcpIdleTimeoutMs, on a zero length, or when the client stops reading its answers.
   */
  private onTcp(l: Listener, s: net.Socket): void {
    const address = s.remoteAddress ?? '';
    const client = l.scope.sandboxId !== undefined ? `sandbox ${l.scope.sandboxId}` : `network ${l.scope.networkId} ${address}`;
    const mine = this.tcpPerClient.get(client) ?? 0;
    if (this.stats.tcpConnections >= this.maxTcp || mine >= this.maxTcpPerClient || l.closed) {
      if (mine >= this.maxTcpPerClient) this.stats.tcpRefused++;
      s.destroy();
      return;
    }
    this.tcpPerClient.set(client, mine + 1);
    this.stats.tcpConnections++;
    l.conns.add(s);
    let buf: Buffer | null = null;
    let partial: NodeJS.Timeout | null = null;
    let pending = 0; // forwards still running for this connection: not idle
    s.setTimeout(this.tcpIdleMs, () => {
      if (pending === 0) s.destroy();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      this.stats.tcpConnections--;
      const n = (this.tcpPerClient.get(client) ?? 1) - 1;
      if (n > 0) this.tcpPerClient.set(client, n);
      else this.tcpPerClient.delete(client);
      l.conns.delete(s);
      if (partial) clearTimeout(partial);
    });
    s.on('drain', () => s.resume());
    const send = (b: Buffer | null) => {
      if (b === null || s.destroyed) return;
      const frame = Buffer.allocUnsafe(2 + b.length);
      frame.writeUInt16BE(b.length, 0);
      b.copy(frame, 2);
      if (!s.write(frame)) {
        if (s.writableLength > 1 << 20) s.destroy();
        else s.pause();
      }
    };
    s.on('data', (d: Buffer) => {
      buf = buf === null ? d : Buffer.concat([buf, d]);
      let progressed = false;
      while (buf !== null && buf.length >= 2) {
        const n = buf.readUInt16BE(0);
        if (n === 0) {
          s.destroy();
          return;
        }
        if (buf.length < 2 + n) break;
        const msg = buf.subarray(2, 2 + n);
        buf = buf.length === 2 + n ? null : buf.subarray(2 + n);
        progressed = true;
        let r: Reply;
        try {
          r = this.answer(l, msg, address, true);
        } catch (e) {
          this.log.error({ err: (e as Error).stack }, 'dns: failed to answer');
          continue;
        }
        if (r instanceof Promise) {
          pending++;
          r.then(
            (b) => {
              pending--;
              send(b);
            },
            (e: Error) => {
              pending--;
              this.log.error({ err: e.stack }, 'dns: failed to forward');
            },
          );
        } else send(r);
      }
      if (partial !== null && (buf === null || progressed)) {
        clearTimeout(partial);
        partial = null;
      }
      if (buf !== null && partial === null) {
        partial = setTimeout(() => s.destroy(), this.tcpIdleMs);
      }
    });
  }
}

function checkScope(scope: Scope): void {
  const sb = scope.sandboxId;
  const nw = scope.networkId;
  if ((sb === undefined) === (nw === undefined) || (sb ?? nw) === '')
    throw invalid('a DNS scope is { sandboxId } or { networkId }', 'dns scope');
}

async function closeListener(l: Listener): Promise<void> {
  l.closed = true;
  for (const s of l.conns) s.destroy();
  l.conns.clear();
  const jobs: Promise<void>[] = [];
  if (l.udp) {
    const u = l.udp;
    l.udp = null;
    jobs.push(new Promise((r) => {
      try {
        u.close(() => r());
      } catch {
        r();
      }
    }));
  }
  if (l.tcp) {
    const t = l.tcp;
    l.tcp = null;
    jobs.push(new Promise((r) => t.close(() => r())));
  }
  await Promise.all(jobs);
}
