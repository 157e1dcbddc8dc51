/**
 * DNS wire-format helpers for the hot path: read a query's header, question and EDNS OPT record
 * straight from the Buffer, without building objects (dns-packet's decode allocates an object per
 * section and label and was the bottleneck; see scripts/bench-dns.ts). Everything here is bounds
 * checked: a query that does not parse is reported, never thrown.
 *
 * Encoding of the records we answer with is dns-packet's job (answers.ts); this file only reads,
 * copies and patches bytes.
 */

export const TYPE_A = 1;
export const TYPE_NS = 2;
export const TYPE_SOA = 6;
export const TYPE_PTR = 12;
export const TYPE_AAAA = 28;
export const TYPE_OPT = 41;
export const TYPE_IXFR = 251;
export const TYPE_AXFR = 252;
export const TYPE_ANY = 255;
export const CLASS_IN = 1;

export const RCODE_NOERROR = 0;
export const RCODE_FORMERR = 1;
export const RCODE_SERVFAIL = 2;
export const RCODE_NXDOMAIN = 3;
export const RCODE_NOTIMP = 4;
export const RCODE_REFUSED = 5;
/** Extended rcode 16 (BADVERS): upper 8 bits go in the OPT record, lower 4 in the header. */
export const RCODE_BADVERS = 16;

/** Classic DNS over UDP without EDNS (RFC 1035 4.2.1). */
export const DEFAULT_UDP_SIZE = 512;

/** What the parser decided about a message. */
export const enum QueryStatus {
  /** Well-formed standard query with exactly one question. */
  Ok = 0,
  /** Not worth an answer: shorter than a header, or a response (QR set; never answer answers). */
  Drop = 1,
  /** Header readable, rest broken: answer FORMERR. */
  FormErr = 2,
  /** Opcode other than QUERY: answer NOTIMP. */
  NotImp = 3,
  /** EDNS version we do not speak: answer BADVERS. */
  BadVers = 4,
}

/**
 * The parsed facts about one query. One instance is reused by the server for every packet (the
 * hot path allocates nothing here); copy what you keep.
 */
export class ParsedQuery {
  status: QueryStatus = QueryStatus.Drop;
  /** Offset just after the question section (= 12 + name + 4). Valid when qdcount was 1 and it parsed. */
  qEnd = 0;
  /** Offset just after the question name (its terminating zero). */
  nameEnd = 0;
  qtype = 0;
  qclass = 0;
  /** The client sent an OPT record. */
  hasOpt = false;
  /** Offset and length of the client's OPT record (name byte .. end of rdata). */
  optStart = 0;
  optLen = 0;
  /** Client's advertised UDP payload size (only meaningful with hasOpt). */
  udpSize = DEFAULT_UDP_SIZE;
  /** DNSSEC OK bit from the client's OPT. */
  dnssecOk = false;
  ednsVersion = 0;
}

/**
 * Skip one domain name starting at `pos`; returns the offset after it or -1 if it is broken.
 * A compression pointer ends the name (we never follow it, so loops cannot hurt us); the walk is
 * bounded by the buffer and by the 255-byte name limit.
 */
export function skipName(buf: Buffer, pos: number): number {
  const len = buf.length;
  let total = 0;
  for (;;) {
    if (pos >= len) return -1;
    const l = buf[pos]!;
    if (l === 0) return pos + 1;
    if ((l & 0xc0) === 0xc0) return pos + 2 <= len ? pos + 2 : -1;
    if ((l & 0xc0) !== 0) return -1; // 0x40/0x80: extended label types, obsolete
    total += l + 1;
    if (total > 255) return -1;
    pos += l + 1;
  }
}

/**
 * Parse a query's header, its single question and its OPT record into `q`.
 * The question name must be uncompressed (in a query it comes first, so a pointer could only point
 * into the header: always broken). Other records (answer/authority sections of a query are legal
 * but unusual) are skipped with bounds checks; a second OPT record is FORMERR (RFC 6891 6.1.1).
 */
export function parseQuery(buf: Buffer, q: ParsedQuery): QueryStatus {
  q.hasOpt = false;
  q.udpSize = DEFAULT_UDP_SIZE;
  q.dnssecOk = false;
  q.ednsVersion = 0;
  q.qEnd = 0;
  q.nameEnd = 0;
  const len = buf.length;
  if (len < 12 || (buf[2]! & 0x80) !== 0) return (q.status = QueryStatus.Drop);
  if ((buf[2]! & 0x78) !== 0) return (q.status = QueryStatus.NotImp);
  if (buf[4] !== 0 || buf[5] !== 1) return (q.status = QueryStatus.FormErr);
  // question name
  let pos = 12;
  let total = 0;
  for (;;) {
    if (pos >= len) return (q.status = QueryStatus.FormErr);
    const l = buf[pos]!;
    if (l === 0) break;
    if (l > 63) return (q.status = QueryStatus.FormErr); // pointer or reserved label type
    total += l + 1;
    if (total > 254) return (q.status = QueryStatus.FormErr); // 255 with the root byte
    pos += l + 1;
  }
  pos++;
  q.nameEnd = pos;
  if (pos + 4 > len) return (q.status = QueryStatus.FormErr);
  q.qtype = (buf[pos]! << 8) | buf[pos + 1]!;
  q.qclass = (buf[pos + 2]! << 8) | buf[pos + 3]!;
  pos += 4;
  q.qEnd = pos;
  const an = (buf[6]! << 8) | buf[7]!;
  const ns = (buf[8]! << 8) | buf[9]!;
  const ar = (buf[10]! << 8) | buf[11]!;
  if (an === 0 && ns === 0 && ar === 0) return (q.status = QueryStatus.Ok);
  // Every record needs at least 11 bytes; refuse absurd counts before walking.
  if ((an + ns + ar) * 11 > len - pos) return (q.status = QueryStatus.FormErr);
  for (let i = 0; i < an + ns; i++) {
    pos = skipName(buf, pos);
    if (pos < 0 || pos + 10 > len) return (q.status = QueryStatus.FormErr);
    pos += 10 + ((buf[pos + 8]! << 8) | buf[pos + 9]!);
    if (pos > len) return (q.status = QueryStatus.FormErr);
  }
  for (let i = 0; i < ar; i++) {
    const start = pos;
    pos = skipName(buf, pos);
    if (pos < 0 || pos + 10 > len) return (q.status = QueryStatus.FormErr);
    const type = (buf[pos]! << 8) | buf[pos + 1]!;
    const rdlen = (buf[pos + 8]! << 8) | buf[pos + 9]!;
    if (type === TYPE_OPT) {
      // one OPT, owned by the root name
      if (q.hasOpt || pos !== start + 1) return (q.status = QueryStatus.FormErr);
      q.hasOpt = true;
      q.optStart = start;
      q.optLen = 11 + rdlen;
      q.udpSize = (buf[pos + 2]! << 8) | buf[pos + 3]!;
      q.ednsVersion = buf[pos + 5]!;
      q.dnssecOk = (buf[pos + 6]! & 0x80) !== 0;
    }
    pos += 10 + rdlen;
    if (pos > len) return (q.status = QueryStatus.FormErr);
  }
  if (q.hasOpt && q.ednsVersion !== 0) return (q.status = QueryStatus.BadVers);
  return (q.status = QueryStatus.Ok);
}

/** Buffer#latin1Slice: what toString('latin1') calls after its argument checks (untyped in @types/node). */
interface Latin1Slicer {
  latin1Slice(start: number, end: number): string;
}

/**
 * Lower-cased wire form of a domain name, as a latin1 string: the map key for names everywhere
 * (records, zones, the answer cache). Only ASCII A-Z is folded (DNS case-insensitivity, RFC 4343);
 * String#toLowerCase would also fold Latin-1 letters, so it is not used here.
 */
export function wireKey(buf: Buffer, start: number, end: number): string {
  let s = (buf as unknown as Latin1Slicer).latin1Slice(start, end);
  // Fast path: most names are already lower case.
  if (/[A-Z]/.test(s)) s = s.replace(/[A-Z]+/g, (m: string) => m.toLowerCase());
  return s;
}

/** Wire form of a dotted name ("web.mynet" -> "\x03web\x05mynet\x00"), lower-cased, as a latin1 key. */
export function nameToKey(name: string): string {
  const n = name.endsWith('.') ? name.slice(0, -1) : name;
  if (n === '') return '\x00';
  let out = '';
  for (const label of n.split('.')) out += String.fromCharCode(label.length) + label.toLowerCase();
  return out + '\x00';
}

/** The reverse of nameToKey (labels joined with dots, no trailing dot); "" for the root. */
export function keyToName(key: string): string {
  const labels: string[] = [];
  let pos = 0;
  while (pos < key.length) {
    const l = key.charCodeAt(pos);
    if (l === 0) break;
    labels.push(key.slice(pos + 1, pos + 1 + l));
    pos += l + 1;
  }
  return labels.join('.');
}

/** Offsets at which each label of the wire-format name key starts (for suffix/zone checks). */
export function labelStarts(key: string): number[] {
  const out: number[] = [];
  let pos = 0;
  while (pos < key.length && key.charCodeAt(pos) !== 0) {
    out.push(pos);
    pos += key.charCodeAt(pos) + 1;
  }
  return out;
}

/**
 * Walk the resource records of a message from `pos`, `count` of them; returns their end offsets
 * (or null if the bytes do not hold that many records).
 */
export function recordEnds(buf: Buffer, pos: number, count: number): number[] | null {
  const ends: number[] = [];
  for (let i = 0; i < count; i++) {
    pos = skipName(buf, pos);
    if (pos < 0 || pos + 10 > buf.length) return null;
    pos += 10 + buf.readUInt16BE(pos + 8);
    if (pos > buf.length) return null;
    ends.push(pos);
  }
  return ends;
}

/**
 * A bare response to a query we do not answer with data (FORMERR, NOTIMP, REFUSED, SERVFAIL...):
 * the client's ID, opcode and RD bit, the question echoed when it parsed, and an OPT record when
 * the client sent one (RFC 6891 7), carrying the upper bits of an extended rcode.
 */
export function errorResponse(query: Buffer, q: ParsedQuery, rcode: number, optBytes: Buffer | null): Buffer {
  const withQuestion = q.qEnd > 0 && q.status !== QueryStatus.NotImp;
  const qLen = withQuestion ? q.qEnd - 12 : 0;
  const opt = q.hasOpt && q.status !== QueryStatus.FormErr ? optBytes : null;
  const out = Buffer.alloc(12 + qLen + (opt ? opt.length : 0));
  out[0] = query[0]!;
  out[1] = query[1]!;
  out[2] = 0x80 | (query[2]! & 0x79); // QR, opcode, RD
  out[3] = (query[3]! & 0x10) | (rcode & 0x0f); // CD, rcode
  if (withQuestion) {
    out[5] = 1;
    query.copy(out, 12, 12, q.qEnd);
  }
  if (opt) {
    out[11] = 1;
    opt.copy(out, 12 + qLen);
    out[12 + qLen + 5] = rcode >> 4; // extended rcode
  }
  return out;
}
