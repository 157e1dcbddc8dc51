import koffi from 'koffi';
import { KernelError } from './error.js';
import { AF_INET, AF_INET6, familyOf, ipBytes } from './inet.js';
import { type Libc, lastErrno, loadLibc } from './libc.js';
import { inNetns, type Netns } from './netns.js';

/**
 * Sockets made with libc rather than Node, for the two things Node cannot do:
 *  - a socket that lives in another network namespace (a sandbox's 127.0.0.11:53): it is created
 *    inside `inNetns` and belongs to that namespace for its whole life, and Node adopts the bound fd
 *    (dgram `bind({ fd })`, net `listen({ fd })`) and serves it from the daemon's event loop;
 *  - batched datagram I/O (recvmmsg/sendmmsg) on such an fd, for the DNS hot path.
 * Every fd is non-blocking and close-on-exec (no child process inherits a DNS socket).
 */

export type SocketProto = 'udp' | 'tcp';

const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0x800;
const SOCK_CLOEXEC = 0x80000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;
/** Room for a struct sockaddr_in6 (28 bytes). */
export const SOCKADDR_SIZE = 32;


/**
 * struct sockaddr_in / sockaddr_in6 for an IP literal and port, as bind(2) takes it.
 * Throws KernelError (EINVAL) if `address` is not an IP literal.
 */
export function sockaddr(address: string, port: number): Buffer {
  let family: 4 | 6;
  try {
    family = familyOf(address);
  } catch {
    throw new KernelError('sockaddr', `"${address}"`, 'EINVAL (not an IP address)');
  }
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new KernelError('sockaddr', `port ${port}`, 'EINVAL (not a port)');
  const sa = Buffer.alloc(family === 4 ? 16 : 28);
  sa.writeUInt16LE(family === 4 ? AF_INET : AF_INET6, 0); // sa_family, host order (little-endian here)
  sa.writeUInt16BE(port, 2);
  ipBytes(address).copy(sa, family === 4 ? 4 : 8);
  return sa;
}

function where(proto: SocketProto, address: string, port: number, ns: Netns | undefined): string {
  const a = address.includes(':') ? `[${address}]` : address;
  return `${proto} ${a}:${port}${ns ? ` in ${String(ns)}` : ''}`;
}

function open(l: Libc, proto: SocketProto, address: string, port: number, ns: Netns | undefined): number {
  const sa = sockaddr(address, port);
  const v6 = sa.length === 28;
  const what = where(proto, address, port, ns);
  const fd = l.socket(v6 ? AF_INET6 : AF_INET, (proto === 'udp' ? SOCK_DGRAM : SOCK_STREAM) | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new KernelError('socket', what, lastErrno());
  try {
    const one = Buffer.alloc(4);
    one.writeInt32LE(1);
    // TCP: a restarted daemon must bind again while its old connections sit in TIME_WAIT. A
    // listening socket still refuses a second bind (EADDRINUSE), so nothing is shared. Never on UDP:
    // there it would let two sockets share the port and split the traffic silently.
    if (proto === 'tcp' && l.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4) !== 0)
      throw new KernelError('setsockopt SO_REUSEADDR', what, lastErrno());
    if (l.bind(fd, sa, sa.length) !== 0) throw new KernelError('bind', what, lastErrno());
    return fd;
  } catch (e) {
    l.close(fd);
    throw e;
  }
}

/**
 * A UDP or TCP socket bound to address:port, created inside `ns` (undefined: the daemon's own
 * namespace). TCP sockets are bound, not listening (Node's listen({ fd }) does that).
 * Returns the fd; the caller owns it (hand it to Node, or socketClose it).
 * Throws KernelError, e.g. `bind udp 127.0.0.11:53 in netns tn-a: EADDRINUSE`.
 */
export function socketBind(ns: Netns | undefined, proto: SocketProto, address: string, port: number): number {
  const l = loadLibc();
  return inNetns(ns, () => open(l, proto, address, port, ns));
}

/**
 * A UDP and a TCP socket on the same address:port inside `ns` (what a DNS server needs), made in one
 * switch into the namespace. Both or neither: if the second fails the first is closed.
 */
export function socketBindPair(ns: Netns | undefined, address: string, port: number): { udp: number; tcp: number } {
  const l = loadLibc();
  return inNetns(ns, () => {
    const udp = open(l, 'udp', address, port, ns);
    try {
      return { udp, tcp: open(l, 'tcp', address, port, ns) };
    } catch (e) {
      l.close(udp);
      throw e;
    }
  });
}

/** Close an fd this module returned that was never handed to Node (Node closes the ones it adopted). */
export function socketClose(fd: number): void {
  loadLibc().close(fd);
}

// ---------------------------------------------------------------- batched datagram I/O

/**
 * Memory outside the JS heap with a fixed address, for the structures recvmmsg/sendmmsg read
 * (struct mmsghdr, iovec, sockaddr, the data slots): `buf` views it, `addr` is its address to
 * store in other structures, `ptr` is what recvmmsg/sendmmsg take. Zero-filled; never freed (the
 * callers allocate a few blocks once, for the life of the process).
 */
export interface NativeBlock {
  readonly ptr: unknown;
  readonly buf: Buffer;
  readonly addr: bigint;
}

export function nativeBlock(size: number): NativeBlock {
  const ptr = koffi.alloc('uint8_t', size);
  const buf = Buffer.from(koffi.view(ptr, size));
  buf.fill(0);
  return { ptr, buf, addr: koffi.address(ptr) };
}

export const MSG_DONTWAIT = 0x40;
export const MSG_TRUNC = 0x20;

/** recvmmsg(2) without a timeout: datagrams received (>= 0), or -1 (EAGAIN when none is queued). */
export function recvmmsg(fd: number, vec: NativeBlock, vlen: number, flags: number): number {
  return loadLibc().recvmmsg(fd, vec.ptr, vlen, flags, null);
}

/** sendmmsg(2): messages sent (>= 0), or -1. */
export function sendmmsg(fd: number, vec: NativeBlock, vlen: number, flags: number): number {
  return loadLibc().sendmmsg(fd, vec.ptr, vlen, flags);
}

/** Whether libc sockets and batched I/O work here (Linux on x64/arm64, where the struct layouts above hold). */
export function socketsAvailable(): boolean {
  if (process.platform !== 'linux' || (process.arch !== 'x64' && process.arch !== 'arm64')) return false;
  try {
    loadLibc();
    return true;
  } catch {
    return false;
  }
}
