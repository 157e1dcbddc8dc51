import koffi from 'koffi';
import { constants } from 'node:os';

/**
 * The few libc calls Node does not expose: namespaces, mounts, sockets made inside a namespace and
 * batched datagram I/O. Loaded once, lazily, so that commands which never touch a namespace do not
 * pay for the FFI.
 */
export const CLONE_NEWNET = 0x40000000;
export const CLONE_NEWNS = 0x00020000;
export const MS_BIND = 4096;
export const MS_REC = 16384;
export const MS_SHARED = 1 << 20;
export const MNT_DETACH = 2;

export interface Libc {
  setns(fd: number, nstype: number): number;
  unshare(flags: number): number;
  mount(src: string | null, target: string, fstype: string | null, flags: number, data: null): number;
  umount2(target: string, flags: number): number;
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, addr: Buffer, len: number): number;
  setsockopt(fd: number, level: number, name: number, val: Buffer, len: number): number;
  close(fd: number): number;
  recvmmsg(fd: number, vec: unknown, vlen: number, flags: number, timeout: null): number;
  sendmmsg(fd: number, vec: unknown, vlen: number, flags: number): number;
}

let libc: Libc | undefined;

export function loadLibc(): Libc {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  libc = {
    setns: lib.func('int setns(int fd, int nstype)'),
    unshare: lib.func('int unshare(int flags)'),
    mount: lib.func(
      'int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const void *data)',
    ),
    umount2: lib.func('int umount2(const char *target, int flags)'),
    socket: lib.func('int socket(int domain, int type, int protocol)'),
    bind: lib.func('int bind(int fd, const void *addr, uint32_t len)'),
    setsockopt: lib.func('int setsockopt(int fd, int level, int name, const void *val, uint32_t len)'),
    close: lib.func('int close(int fd)'),
    recvmmsg: lib.func('int recvmmsg(int fd, void *vec, unsigned int vlen, int flags, void *timeout)'),
    sendmmsg: lib.func('int sendmmsg(int fd, void *vec, unsigned int vlen, int flags)'),
  } as Libc;
  return libc;
}

/** The errno of the last failed libc call, as its name (EPERM, EINVAL...). */
export function lastErrno(): string {
  const n = koffi.errno();
  return errnoName(n);
}

/** errno number -> name, from Node's own table (os.constants.errno), so no errno goes unnamed. */
const names = new Map(Object.entries(constants.errno).map(([name, n]) => [n, name]));
export function errnoName(n: number): string {
  return names.get(n) ?? `errno ${n}`;
}
