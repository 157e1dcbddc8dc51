import { randomFillSync } from 'node:crypto';
import { isIP, Socket as TcpSocket } from 'node:net';
import DgramAsPromised from 'dgram-as-promised';
import type { Logger } from '../libnetwork/log.js';
import { readResolvConf } from './resolvconf.js';
import { RCODE_REFUSED, RCODE_SERVFAIL } from './wire.js';

/**
 * Forwarding of names that are not tnet's to upstream resolvers.
 *
 * - Over the client's protocol: UDP queries go upstream over UDP, TCP over TCP (a truncated UDP
 *   answer is relayed with TC, and the client's TCP retry is forwarded over TCP).
 * - Servers are tried in order, each with its own timeout; SERVFAIL, REFUSED, a timeout, a network
 *   error (ICMP unreachable on the connected socket) or a reply without our question moves on to
 *   the next; when all fail the client gets SERVFAIL, never silence. An overall deadline (default
 *   4 s, under glibc's 5 s per try) bounds the whole attempt so the SERVFAIL arrives while the
 *   client still listens. NXDOMAIN and every other answer are relayed as they are.
 * - Anti-spoofing: each forwarded query gets a fresh random 16-bit ID and its own socket (a fresh
 *   kernel-randomised source port), connected to the upstream so the kernel drops datagrams from
 *   anyone else; the reply must carry our ID and echo our question (case-insensitively).
 * - The query sent upstream is the client's question and EDNS OPT record, copied byte for byte
 *   (so the client's payload size and DO bit reach the upstream), behind a new header that keeps
 *   the client's RD, AD and CD bits.
 * - At most `maxInflight` forwards at once (each holds a socket); over that, REFUSED at once.
 */

export interface Upstream {
  host: string;
  port: number;
}

export interface ForwarderOptions {
  upstreams: readonly Upstream[];
  /** Per-server timeout. */
  timeoutMs: number;
  /** Bound on the whole forward, all servers included. */
  deadlineMs: number;
  maxInflight: number;
  log: Logger;
}

/** A forward's outcome: the reply to send (client ID already patched in) or an rcode to answer with. */
export type ForwardResult = { reply: Buffer } | { rcode: number };

let idPool: Buffer = Buffer.alloc(0);
let idPos = 0;
function randomId(): number {
  if (idPos + 2 > idPool.length) {
    idPool = randomFillSync(Buffer.allocUnsafe(2048));
    idPos = 0;
  }
  const id = idPool.readUInt16BE(idPos);
  idPos += 2;
  return id;
}

class AttemptFailed extends Error {}

export class Forwarder {
  inflight = 0;
  readonly upstreams: readonly Upstream[];
  private readonly opts: ForwarderOptions;

  constructor(opts: ForwarderOptions) {
    this.opts = opts;
    this.upstreams = opts.upstreams;
  }

  /**
   * Forward a parsed client query. `qEnd` ends its question; `opt` is the client's OPT record
   * bytes (or null). Never rejects.
   */
  async forward(query: Buffer, qEnd: number, opt: Buffer | null, tcp: boolean): Promise<ForwardResult> {
    if (this.upstreams.length === 0) return { rcode: RCODE_SERVFAIL };
    if (this.inflight >= this.opts.maxInflight) return { rcode: RCODE_REFUSED };
    this.inflight++;
    try {
      const question = query.subarray(12, qEnd);
      const deadline = Date.now() + this.opts.deadlineMs;
      for (const up of this.upstreams) {
        const left = deadline - Date.now();
        if (left <= 0) break;
        const id = randomId();
        const out = Buffer.allocUnsafe(12 + question.length + (opt ? opt.length : 0));
        out.writeUInt16BE(id, 0);
        out[2] = query[2]! & 0x01; // RD
        out[3] = query[3]! & 0x30; // AD, CD
        out.writeUInt16BE(1, 4);
        out.writeUInt32BE(0, 6);
        out.writeUInt16BE(opt ? 1 : 0, 10);
        question.copy(out, 12);
        if (opt) opt.copy(out, 12 + question.length);
        try {
          const t = Math.min(this.opts.timeoutMs, left);
          const reply = tcp ? await tcpExchange(up, out, t, id, question) : await udpExchange(up, out, t, id, question);
          const rcode = reply[3]! & 0x0f;
          if (rcode === RCODE_SERVFAIL || rcode === RCODE_REFUSED) {
            this.opts.log.debug({ upstream: up, rcode }, 'dns: upstream failed, trying the next');
            continue;
          }
          reply[0] = query[0]!;
          reply[1] = query[1]!;
          return { reply };
        } catch (e) {
          this.opts.log.debug({ upstream: up, err: (e as Error).message }, 'dns: upstream failed, trying the next');
        }
      }
      return { rcode: RCODE_SERVFAIL };
    } finally {
      this.inflight--;
    }
  }
}

/** Does `reply` answer our query (ID, QR, one question equal to ours)? */
export function matches(reply: Buffer, id: number, question: Buffer): boolean {
  if (reply.length < 12 + question.length) return false;
  if (reply.readUInt16BE(0) !== id || (reply[2]! & 0x80) === 0) return false;
  if (reply[4] !== 0 || reply[5] !== 1) return false;
  for (let i = 0; i < question.length; i++) {
    let a = reply[12 + i]!;
    let b = question[i]!;
    if (a >= 0x41 && a <= 0x5a) a |= 0x20;
    if (b >= 0x41 && b <= 0x5a) b |= 0x20;
    if (a !== b) return false;
  }
  return true;
}

/** A reply with our ID but without our question, that is an error: counts as a failed server. */
function failedWithoutQuestion(reply: Buffer, id: number): boolean {
  return reply.length >= 12 && reply.readUInt16BE(0) === id && (reply[2]! & 0x80) !== 0 && (reply[3]! & 0x0f) !== 0;
}

async function udpExchange(up: Upstream, query: Buffer, timeoutMs: number, id: number, question: Buffer): Promise<Buffer> {
  const sock = DgramAsPromised.createSocket(isIP(up.host) === 6 ? 'udp6' : 'udp4');
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new AttemptFailed(`no answer from ${up.host}:${up.port} within ${timeoutMs} ms`)), timeoutMs);
  });
  const work = (async () => {
    await sock.bind(0);
    await new Promise<void>((resolve, reject) => {
      sock.socket.once('error', reject);
      sock.socket.connect(up.port, up.host, () => {
        sock.socket.off('error', reject);
        resolve();
      });
    });
    await new Promise<void>((resolve, reject) => sock.socket.send(query, (err) => (err ? reject(err) : resolve())));
    for (;;) {
      const packet = await sock.recv(); // rejects on ICMP unreachable; undefined once closed
      if (!packet) throw new AttemptFailed('socket closed');
      if (matches(packet.msg, id, question)) return packet.msg;
      if (failedWithoutQuestion(packet.msg, id)) throw new AttemptFailed('error reply without question');
      // anything else (wrong ID, wrong question): ignore it and keep listening until the timeout
    }
  })();
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
    work.catch(() => undefined);
    sock.socket.on('error', () => undefined);
    try {
      sock.socket.close();
    } catch {
      // never bound or already closed
    }
  }
}

function tcpExchange(up: Upstream, query: Buffer, timeoutMs: number, id: number, question: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = new TcpSocket();
    let buf: Buffer = Buffer.alloc(0);
    const done = (err: Error | null, reply?: Buffer) => {
      clearTimeout(timer);
      s.destroy();
      if (err) reject(err);
      else resolve(reply!);
    };
    const timer = setTimeout(() => done(new AttemptFailed(`no TCP answer from ${up.host}:${up.port} within ${timeoutMs} ms`)), timeoutMs);
    s.on('error', (e) => done(e));
    s.on('close', () => done(new AttemptFailed('connection closed before an answer')));
    s.on('data', (d: Buffer) => {
      buf = buf.length ? Buffer.concat([buf, d]) : d;
      while (buf.length >= 2) {
        const n = buf.readUInt16BE(0);
        if (buf.length < 2 + n) return;
        const msg = Buffer.from(buf.subarray(2, 2 + n));
        buf = buf.subarray(2 + n);
        if (matches(msg, id, question)) return done(null, msg);
        if (failedWithoutQuestion(msg, id)) return done(new AttemptFailed('error reply without question'));
      }
    });
    s.connect(up.port, up.host, () => {
      const frame = Buffer.allocUnsafe(2 + query.length);
      frame.writeUInt16BE(query.length, 0);
      query.copy(frame, 2);
      s.write(frame);
    });
  });
}

/** "1.2.3.4", "1.2.3.4:5353", "[fd00::1]:53", "fd00::1" -> Upstream; anything else is refused, naming it. */
export function parseUpstream(s: string | Upstream): Upstream {
  if (typeof s !== 'string') return s;
  const bad = (why: string) => new Error(`upstream "${s}" ${why} (expected 1.2.3.4, 1.2.3.4:53 or [fd00::1]:53)`);
  const port = (text: string | undefined): number => {
    if (text === undefined) return 53;
    const n = Number(text);
    if (!/^\d{1,5}$/.test(text) || n < 1 || n > 65535) throw bad(`has no valid port (${text})`);
    return n;
  };
  const bracketed = /^\[([^\]]+)\](?::(.*))?$/.exec(s);
  if (bracketed) {
    if (isIP(bracketed[1]!) !== 6) throw bad('is not an IPv6 address in brackets');
    return { host: bracketed[1]!, port: port(bracketed[2]) };
  }
  if (isIP(s)) return { host: s, port: 53 };
  const i = s.lastIndexOf(':');
  if (i > 0 && isIP(s.slice(0, i)) === 4) return { host: s.slice(0, i), port: port(s.slice(i + 1)) };
  throw bad('is not an address');
}

const LOOPBACK = /^(127\.|::1$|::ffff:127\.)/;
/** glibc reads at most 3 nameservers (MAXNS); so do we. */
const MAXNS = 3;

/**
 * The host's upstream resolvers, from its resolv.conf.
 *
 * Loopback nameservers (127.0.0.0/8, ::1) are skipped: tnet listens on loopback addresses itself
 * (127.0.0.11 in sandboxes, and tests/benchmarks on the host), so a loopback entry can be tnet and
 * forwarding to it would loop; and a sandbox that sees this list must not be told "127.x" (it would
 * be its own loopback). When the host runs systemd-resolved (stub 127.0.0.53), its real upstreams are
 * in /run/systemd/resolve/resolv.conf, which is read instead, as Docker does. A configured upstream
 * list (DnsServerOptions.upstreams) is used as given, loopback included.
 */
export function hostUpstreams(path = '/etc/resolv.conf', systemdPath = '/run/systemd/resolve/resolv.conf'): Upstream[] {
  let servers = readResolvConf(path).nameservers;
  if (servers.length > 0 && servers.every((s) => LOOPBACK.test(s))) {
    const real = readResolvConf(systemdPath).nameservers.filter((s) => !LOOPBACK.test(s));
    if (real.length > 0) servers = real;
  }
  return servers
    .filter((s) => !LOOPBACK.test(s))
    .slice(0, MAXNS)
    .map((host) => ({ host, port: 53 }));
}
