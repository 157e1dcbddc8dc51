import * as dnsPacket from 'dns-packet';
import { ptrTarget, zoneFor, type Endpoint, type Network } from './records.js';
import {
  CLASS_IN,
  RCODE_NOERROR,
  RCODE_NXDOMAIN,
  TYPE_A,
  TYPE_AAAA,
  TYPE_ANY,
  TYPE_PTR,
  TYPE_SOA,
  keyToName,
  recordEnds,
} from './wire.js';

/**
 * Answer logic (which records a scope gets for a question) and the encoding of a local answer into
 * a reusable, position-independent `Answer`: everything after the question section, plus the header
 * flags and counts. The server copies an Answer behind any client's header and question (keeping the
 * client's ID and the client's spelling of the name), so one encode serves every later identical
 * question until the records change.
 */

/** What to answer. 'forward' means the name is not ours in this scope. */
export type Resolution =
  | { kind: 'forward' }
  | {
      kind: 'local';
      rcode: number;
      /** Records owned by the question name (written as a pointer to it). */
      answers: dnsPacket.Answer[];
      /** Zone whose SOA goes in the authority section of a negative answer. */
      soaZone: string | null;
    };

export interface ResolveParams {
  nets: readonly Network[];
  key: string; // lower-cased wire-format question name
  qtype: number;
  qclass: number;
  ttl: number;
}

const FORWARD: Resolution = { kind: 'forward' };

/** A name's endpoints in the scope; a fallback network (a lab's names) only for a name none of the others has. */
function names(nets: readonly Network[], key: string): Endpoint[] {
  if (!nets.some((n) => n.fallback)) return union(nets, key, 'names');
  const first = union(nets.filter((n) => !n.fallback), key, 'names');
  return first.length ? first : union(nets.filter((n) => n.fallback), key, 'names');
}

function union(nets: readonly Network[], key: string, which: 'names' | 'ptrs'): Endpoint[] {
  let out: Endpoint[] | null = null;
  let shared = true;
  for (const n of nets) {
    const l = n[which].get(key);
    if (!l) continue;
    if (out === null) out = l;
    else {
      if (shared) {
        out = [...out];
        shared = false;
      }
      for (const ep of l) if (!out.includes(ep)) out.push(ep);
    }
  }
  return out ?? [];
}

function addresses(eps: Endpoint[], family: 4 | 6, ttl: number, out: dnsPacket.Answer[]): void {
  const seen = new Set<string>();
  for (const ep of eps) {
    const b = family === 4 ? ep.v4 : ep.v6;
    if (!b) continue;
    const hex = b.toString('hex');
    if (seen.has(hex)) continue;
    seen.add(hex);
    out.push({
      name: '.',
      type: family === 4 ? 'A' : 'AAAA',
      class: 'IN',
      ttl,
      data: family === 4 ? `${b[0]}.${b[1]}.${b[2]}.${b[3]}` : ipv6Text(b),
    });
  }
}

function ipv6Text(b: Buffer): string {
  const w: string[] = [];
  for (let i = 0; i < 16; i += 2) w.push(b.readUInt16BE(i).toString(16));
  return w.join(':');
}

/**
 * The answer for one question in a scope (the scope's networks are `nets`):
 *  - a name of an endpoint on one of the networks (name, alias, name.network): its A/AAAA records
 *    (every endpoint sharing the name: an alias on several endpoints gives several records); a
 *    known name without an address of the asked family, or asked for another type, is an empty
 *    NOERROR (NODATA), never forwarded;
 *  - the reverse name of one of their addresses: PTR -> name.network;
 *  - anything else under a network's name (the network's zone): NXDOMAIN, the apex itself NODATA;
 *  - anything else: not ours ('forward').
 */
export function resolve(p: ResolveParams): Resolution {
  if (p.qclass !== CLASS_IN) return FORWARD;
  const { nets, key, qtype, ttl } = p;
  const eps = names(nets, key);
  if (eps.length > 0) {
    const answers: dnsPacket.Answer[] = [];
    if (qtype === TYPE_A || qtype === TYPE_ANY) addresses(eps, 4, ttl, answers);
    if (qtype === TYPE_AAAA || qtype === TYPE_ANY) addresses(eps, 6, ttl, answers);
    const zone = answers.length === 0 ? zoneFor(nets, key) : null;
    return { kind: 'local', rcode: RCODE_NOERROR, answers, soaZone: zone ? zone.name : null };
  }
  const ptrs = union(nets, key, 'ptrs');
  if (ptrs.length > 0) {
    const answers: dnsPacket.Answer[] = [];
    if (qtype === TYPE_PTR || qtype === TYPE_ANY) {
      const seen = new Set<string>();
      for (const ep of ptrs) {
        const t = ptrTarget(ep);
        if (seen.has(t)) continue;
        seen.add(t);
        answers.push({ name: '.', type: 'PTR', class: 'IN', ttl, data: t });
      }
    }
    return { kind: 'local', rcode: RCODE_NOERROR, answers, soaZone: null };
  }
  const zone = zoneFor(nets, key);
  if (zone) {
    if (key === zone.zoneKey) {
      // the zone apex exists (it holds the names below it) but has no address of its own
      const answers: dnsPacket.Answer[] = [];
      if (qtype === TYPE_SOA || qtype === TYPE_ANY) answers.push(soaRecord(zone.name, ttl, '.'));
      return { kind: 'local', rcode: RCODE_NOERROR, answers, soaZone: answers.length ? null : zone.name };
    }
    return { kind: 'local', rcode: RCODE_NXDOMAIN, answers: [], soaZone: zone.name };
  }
  if ((qtype === TYPE_A || qtype === TYPE_AAAA || qtype === TYPE_ANY) && singleLabel(key)) return NO_SUCH_PEER;
  return FORWARD;
}

/**
 * An address lookup of a single-label name that is not a peer in this scope ("db" asked by a
 * sandbox that shares no network with any "db"): NXDOMAIN here, never forwarded. No public name is a
 * single label (no address records at TLDs, ICANN SAC053), so the upstream could only say NXDOMAIN
 * too, slower, and would learn the names of the user's containers; and a sandbox on another network
 * must not be able to tell whether a peer of that name exists (what libnetwork does with ndots set,
 * and systemd-resolved by default). With `ndots:0` the resolver then tries the search domains, and
 * those multi-label names are forwarded as usual. Other types (SOA, NS, DS of a TLD) are forwarded.
 */
const NO_SUCH_PEER: Resolution = { kind: 'local', rcode: RCODE_NXDOMAIN, answers: [], soaZone: null };

function singleLabel(key: string): boolean {
  const n = key.charCodeAt(0);
  return n > 0 && key.charCodeAt(n + 1) === 0;
}

/**
 * SOA of a network zone, for negative answers. Its TTL and minimum are the negative TTL (RFC 2308:
 * how long a resolver may cache the absence of a name).
 */
export function soaRecord(zone: string, ttl: number, owner = zone): dnsPacket.Answer {
  const z = zone.toLowerCase().replace(/\.$/, '');
  return {
    name: owner,
    type: 'SOA',
    class: 'IN',
    ttl,
    data: {
      mname: z,
      rname: `hostmaster.${z}`,
      serial: 1,
      refresh: 3600,
      retry: 600,
      expire: 86400,
      minimum: ttl,
    },
  };
}

/** An encoded local answer, independent of the client's ID, flags and question spelling. */
export interface Answer {
  /** Header byte 2 without the client's RD bit (QR | AA | TC). */
  readonly f2: number;
  /** Header byte 3 without the client's CD bit (RA | rcode). */
  readonly f3: number;
  /** ancount, nscount, arcount (header bytes 6..11). */
  readonly an: number;
  readonly ns: number;
  readonly ar: number;
  /** Answer + authority + additional sections. Never mutated once built (it may sit in a send queue). */
  readonly tail: Buffer;
  /** End offsets (in tail) of each answer record. */
  readonly anEnds: readonly number[];
  /** Our OPT record, the last bytes of tail (null when the client sent none). */
  readonly opt: Buffer | null;
  /**
   * Runs of same-type address records to shuffle per answer: [start, count, size] triples (offsets
   * in tail). Each A record is 16 bytes and each AAAA 28 (owner is a 2-byte pointer to the question),
   * so a cached answer is shuffled by permuting fixed-size blocks: every answer gets a fresh random
   * order without a decode or an encode.
   */
  readonly groups: readonly number[] | null;
}

export interface EncodeParams {
  rcode: number;
  answers: dnsPacket.Answer[];
  soaZone: string | null;
  negativeTtl: number;
  /** Set RA (this scope forwards). */
  recursionAvailable: boolean;
  /** Include an OPT record (the client sent one), advertising `udpSize`, echoing DO. */
  opt: { udpSize: number; dnssecOk: boolean } | null;
}

/** Encode a local answer with dns-packet, then point every answer's owner at the question name. */
export function encodeAnswer(p: EncodeParams): Answer {
  const authorities = p.soaZone ? [soaRecord(p.soaZone, p.negativeTtl)] : [];
  const additionals: dnsPacket.Answer[] = p.opt
    ? [
        {
          name: '.',
          type: 'OPT',
          udpPayloadSize: p.opt.udpSize,
          extendedRcode: 0,
          ednsVersion: 0,
          flags: p.opt.dnssecOk ? dnsPacket.DNSSEC_OK : 0,
          flag_do: p.opt.dnssecOk,
          options: [],
        },
      ]
    : [];
  const enc = dnsPacket.encode({
    type: 'response',
    id: 0,
    flags: 0,
    questions: [],
    answers: p.answers,
    authorities,
    additionals,
  });
  const an = p.answers.length;
  const ends = recordEnds(enc, 12, an + authorities.length + additionals.length);
  if (!ends) throw new Error('dns-packet produced an unreadable answer');
  // owner '.' (1 byte: 0x00) of each answer record -> pointer to the question name at offset 12
  const parts: Buffer[] = [];
  const anEnds: number[] = [];
  let start = 12;
  let len = 0;
  const groups: number[] = [];
  for (let i = 0; i < an; i++) {
    const rec = enc.subarray(start + 1, ends[i]);
    const size = rec.length + 2;
    const type = p.answers[i]!.type;
    if ((type === 'A' || type === 'AAAA') && (i === 0 || p.answers[i - 1]!.type !== type)) {
      groups.push(len, 0, size);
    }
    if (type === 'A' || type === 'AAAA') groups[groups.length - 2]!++;
    parts.push(Buffer.from([0xc0, 0x0c]), rec);
    len += size;
    anEnds.push(len);
    start = ends[i]!;
  }
  parts.push(enc.subarray(start));
  const tail = Buffer.concat(parts);
  const shuffled: number[] = [];
  for (let g = 0; g < groups.length; g += 3) if (groups[g + 1]! > 1) shuffled.push(groups[g]!, groups[g + 1]!, groups[g + 2]!);
  return {
    f2: 0x80 | 0x04, // QR, AA: tnet is the authority for the names it answers
    f3: (p.recursionAvailable ? 0x80 : 0) | (p.rcode & 0x0f),
    an,
    ns: authorities.length,
    ar: additionals.length,
    tail,
    anEnds,
    opt: p.opt ? tail.subarray(tail.length - (ends[ends.length - 1]! - (ends[ends.length - 2] ?? start))) : null,
    groups: shuffled.length ? shuffled : null,
  };
}

const scratch = Buffer.alloc(64);

/** Fisher-Yates over fixed-size record blocks of `buf` (groups offsets relative to `base`). */
export function shuffleGroups(buf: Buffer, base: number, groups: readonly number[]): void {
  for (let g = 0; g < groups.length; g += 3) {
    const start = base + groups[g]!;
    const count = groups[g + 1]!;
    const size = groups[g + 2]!;
    for (let i = count - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      if (j === i) continue;
      const a = start + i * size;
      const b = start + j * size;
      buf.copy(scratch, 0, a, a + size);
      buf.copy(buf, a, b, b + size);
      scratch.copy(buf, b, 0, size);
    }
  }
}

/**
 * Write the response for `query` (its question ends at qEnd) from a cached Answer: the client's
 * header and question bytes, then the Answer's sections. When the result exceeds `limit` (the
 * client's UDP size) keep as many whole answer records as fit, drop the authority section and set
 * TC: the client retries over TCP for the rest, and clients that never do (old musl) still get
 * usable records.
 */
export function render(a: Answer, query: Buffer, qEnd: number, limit: number): Buffer {
  const total = qEnd + a.tail.length;
  const out = Buffer.allocUnsafe(total);
  query.copy(out, 0, 0, qEnd);
  a.tail.copy(out, qEnd);
  out[2] = a.f2 | (query[2]! & 0x01);
  out[3] = a.f3 | (query[3]! & 0x10);
  out[4] = 0;
  out[5] = 1;
  out[6] = a.an >> 8;
  out[7] = a.an & 0xff;
  out[8] = a.ns >> 8;
  out[9] = a.ns & 0xff;
  out[10] = 0;
  out[11] = a.ar;
  if (a.groups !== null) shuffleGroups(out, qEnd, a.groups);
  if (total <= limit) return out;
  return truncate(a, out, qEnd, limit);
}

function truncate(a: Answer, full: Buffer, qEnd: number, limit: number): Buffer {
  const optLen = a.opt ? a.opt.length : 0;
  let k = 0;
  while (k < a.anEnds.length && qEnd + a.anEnds[k]! + optLen <= limit) k++;
  const anLen = k > 0 ? a.anEnds[k - 1]! : 0;
  const out = Buffer.allocUnsafe(qEnd + anLen + optLen);
  full.copy(out, 0, 0, qEnd + anLen);
  if (a.opt) a.opt.copy(out, qEnd + anLen);
  out[2] = full[2]! | 0x02; // TC
  out[6] = k >> 8;
  out[7] = k & 0xff;
  out[8] = 0;
  out[9] = 0;
  out[10] = 0;
  out[11] = a.opt ? 1 : 0;
  return out;
}

/** Human-readable form of a wire key (for logs). */
export const nameOf = keyToName;
