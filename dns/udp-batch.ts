import { isIP } from 'node:net';
import {
  MSG_DONTWAIT, MSG_TRUNC, nativeBlock, recvmmsg, sendmmsg, socketBind, socketClose, socketsAvailable, type NativeBlock,
} from '../libnetwork/kernel/socket.js';
import { ipv6Bytes } from './cidr.js';

/**
 * Batched UDP I/O for the DNS hot path: recvmmsg(2) / sendmmsg(2). The system calls and the native
 * memory are libnetwork/kernel/socket.ts's; the batching (which datagrams, which slots, when to
 * flush) is here.
 *
 * Why: with Node's dgram every datagram costs one JS callback, a 64 KiB receive allocation, an
 * rinfo object and one sendmsg; measured here that alone is slower per query than dnsmasq's whole
 * answer (scripts/bench-dns.ts). The dgram socket still owns the fd and wakes us for the first
 * datagram; its handler then drains whatever else is queued on the fd with one recvmmsg
 * (MSG_DONTWAIT), answers all of them and sends all answers with one sendmmsg. Under load that is
 * 2 system calls and 1 callback per batch instead of per query; with a single query waiting it is
 * one extra (empty) recvmmsg.
 *
 * The buffers are shared by every listener: the handler runs to completion on the one JS thread,
 * and nothing here is kept after it returns (forwarded queries are copied before they leave).
 * Where libc sockets do not work (not Linux x64/arm64), `loadUdpBatch()` returns null and the server
 * uses plain dgram.
 */

/** Datagrams per batch. */
const N = 64;
/** Largest query read in a batch (larger ones are dropped; real queries are a few hundred bytes). */
const IN_SLOT = 4096;
/** Largest answer sent in a batch (larger ones go out through dgram). */
export const OUT_SLOT = 4096;
const MMSG = 64; // sizeof(struct mmsghdr) on 64-bit Linux
const IOV = 16; // sizeof(struct iovec)
const SA = 32; // room for struct sockaddr_in6 (28)
const AF_INET = 2;
const AF_INET6 = 10;

const block = (size: number): NativeBlock => nativeBlock(size);

/** Dotted IPv4 text into 4 bytes at out[off]; false if it is not one (cheaper than isIP + split). */
function parseV4(s: string, out: Buffer, off: number): boolean {
  let part = 0;
  let n = 0;
  let digits = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 46) {
      if (digits === 0 || n > 255 || part >= 3) return false;
      out[off + part++] = n;
      n = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57 && digits < 3) {
      n = n * 10 + (c - 48);
      digits++;
    } else return false;
  }
  if (part !== 3 || digits === 0 || n > 255) return false;
  out[off + 3] = n;
  return true;
}

/** Build a sockaddr_in / sockaddr_in6 for an IP literal into `out` at `off`; returns its length or 0. */
export function writeSockaddr(out: Buffer, off: number, address: string, port: number): number {
  if (parseV4(address, out, off + 4)) {
    out[off] = AF_INET; // sa_family, little-endian u16
    out[off + 1] = 0;
    out[off + 2] = port >> 8;
    out[off + 3] = port & 0xff;
    out.fill(0, off + 8, off + 16);
    return 16;
  }
  if (address.includes('%') || isIP(address) !== 6) return 0; // link-local with scope: through dgram
  const b = ipv6Bytes(address);
  if (!b) return 0;
  out.fill(0, off, off + 28);
  out.writeUInt16LE(AF_INET6, off);
  out.writeUInt16BE(port, off + 2);
  b.copy(out, off + 8);
  return 28;
}

export interface Unsent {
  answer: Buffer;
  address: string;
  port: number;
}
const NONE: Unsent[] = [];

/** sockaddr_in/sockaddr_in6 at `o` -> address text (uncompressed IPv6 is valid for dgram) and port. */
function sockaddrText(s: Buffer, o: number): { address: string; port: number } {
  const port = s.readUInt16BE(o + 2);
  if (s.readUInt16LE(o) === AF_INET) return { address: `${s[o + 4]}.${s[o + 5]}.${s[o + 6]}.${s[o + 7]}`, port };
  const w: string[] = [];
  for (let k = 0; k < 16; k += 2) w.push(s.readUInt16BE(o + 8 + k).toString(16));
  return { address: w.join(':'), port };
}

export class UdpBatch {
  private readonly rv = block(N * MMSG);
  private readonly ri = block(N * IOV);
  private readonly rs = block(N * SA);
  private readonly rd = block(N * IN_SLOT);
  private readonly sv = block((N + 1) * MMSG);
  private readonly si = block((N + 1) * IOV);
  private readonly ss = block((N + 1) * SA);
  private readonly sd = block((N + 1) * OUT_SLOT);
  /** Answers staged for the next flush. */
  private staged = 0;

  constructor() {
    for (let i = 0; i < N; i++) {
      this.rv.buf.writeBigUInt64LE(this.rs.addr + BigInt(i * SA), i * MMSG); // msg_name
      this.rv.buf.writeBigUInt64LE(this.ri.addr + BigInt(i * IOV), i * MMSG + 16); // msg_iov
      this.rv.buf.writeBigUInt64LE(1n, i * MMSG + 24); // msg_iovlen
      this.ri.buf.writeBigUInt64LE(this.rd.addr + BigInt(i * IN_SLOT), i * IOV);
      this.ri.buf.writeBigUInt64LE(BigInt(IN_SLOT), i * IOV + 8);
    }
    for (let i = 0; i <= N; i++) {
      this.sv.buf.writeBigUInt64LE(this.ss.addr + BigInt(i * SA), i * MMSG);
      this.sv.buf.writeBigUInt64LE(this.si.addr + BigInt(i * IOV), i * MMSG + 16);
      this.sv.buf.writeBigUInt64LE(1n, i * MMSG + 24);
      this.si.buf.writeBigUInt64LE(this.sd.addr + BigInt(i * OUT_SLOT), i * IOV);
    }
  }

  /** Read up to N queued datagrams without blocking; returns how many (0 when none). */
  recv(fd: number): number {
    const v = this.rv.buf;
    for (let i = 0; i < N; i++) {
      v.writeUInt32LE(SA, i * MMSG + 8); // msg_namelen, overwritten by the kernel
      v.writeUInt32LE(0, i * MMSG + 48); // msg_flags
    }
    const n = recvmmsg(fd, this.rv, N, MSG_DONTWAIT);
    return n > 0 ? n : 0;
  }

  /** Datagram i of the last recv, or null if it did not fit IN_SLOT. Valid until the next recv. */
  packet(i: number): Buffer | null {
    const v = this.rv.buf;
    if ((v.readUInt32LE(i * MMSG + 48) & MSG_TRUNC) !== 0) return null;
    const len = v.readUInt32LE(i * MMSG + 56);
    return this.rd.buf.subarray(i * IN_SLOT, i * IN_SLOT + len);
  }

  /** The IPv4 source of datagram i as a 32-bit number, or -1 for another family. */
  v4source(i: number): number {
    const s = this.rs.buf;
    if (s.readUInt16LE(i * SA) !== AF_INET) return -1;
    return s.readUInt32BE(i * SA + 4);
  }

  /** The source of datagram i as address text and port (for answers sent later through dgram). */
  source(i: number): { address: string; port: number } {
    return sockaddrText(this.rs.buf, i * SA);
  }

  /** Stage an answer to datagram i of the last recv. False if it does not fit a slot (send it another way). */
  stageReply(i: number, answer: Buffer): boolean {
    if (answer.length > OUT_SLOT || this.staged > N) return false;
    const k = this.staged;
    answer.copy(this.sd.buf, k * OUT_SLOT);
    this.si.buf.writeUInt32LE(answer.length, k * IOV + 8);
    const nameLen = this.rv.buf.readUInt32LE(i * MMSG + 8);
    this.rs.buf.copy(this.ss.buf, k * SA, i * SA, i * SA + nameLen);
    this.sv.buf.writeUInt32LE(nameLen, k * MMSG + 8);
    this.staged++;
    return true;
  }

  /** Stage an answer to an address given as text (the datagram dgram delivered). */
  stageTo(address: string, port: number, answer: Buffer): boolean {
    if (answer.length > OUT_SLOT || this.staged > N) return false;
    const k = this.staged;
    const nameLen = writeSockaddr(this.ss.buf, k * SA, address, port);
    if (nameLen === 0) return false;
    answer.copy(this.sd.buf, k * OUT_SLOT);
    this.si.buf.writeUInt32LE(answer.length, k * IOV + 8);
    this.sv.buf.writeUInt32LE(nameLen, k * MMSG + 8);
    this.staged++;
    return true;
  }

  /**
   * Send everything staged with one sendmmsg. Returns the staged answers the kernel did not take
   * (send buffer full): the caller retries those through dgram (which queues) or drops them.
   */
  flush(fd: number): Unsent[] {
    const k = this.staged;
    this.staged = 0;
    if (k === 0) return NONE;
    const r = sendmmsg(fd, this.sv, k, MSG_DONTWAIT);
    if (r === k) return NONE;
    const left: Unsent[] = [];
    for (let j = r > 0 ? r : 0; j < k; j++) {
      const len = this.si.buf.readUInt32LE(j * IOV + 8);
      left.push({
        answer: Buffer.from(this.sd.buf.subarray(j * OUT_SLOT, j * OUT_SLOT + len)),
        ...sockaddrText(this.ss.buf, j * SA),
      });
    }
    return left;
  }

  /**
   * A non-blocking UDP socket bound to address:port in the daemon's namespace, made with libc so
   * that dgram can adopt it by fd (`bind({ fd })`, public API) and we know the fd for recvmmsg.
   * Throws KernelError (`bind udp 127.0.0.1:53: EADDRINUSE`).
   */
  openUdp(address: string, port: number): number {
    return socketBind(undefined, 'udp', address, port);
  }

  closeFd(fd: number): void {
    socketClose(fd);
  }
}

let cached: UdpBatch | null | undefined;

/** The shared batch I/O, or null where it cannot work (see socketsAvailable). */
export function loadUdpBatch(): UdpBatch | null {
  if (cached !== undefined) return cached;
  cached = socketsAvailable() ? new UdpBatch() : null;
  return cached;
}
