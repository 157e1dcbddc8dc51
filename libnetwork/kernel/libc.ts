import koffi from 'koffi';

/**
 * The few libc calls Node does not expose: namespaces and mounts. Loaded once, lazily, so
 * that commands which never touch a namespace do not pay for the FFI.
 */
export const CLONE_NEWNET = 0x40000000;
export const CLONE_NEWNS = 0x00020000;
export const MS_BIND = 4096;
export const MS_REC = 16384;
export const MS_SHARED = 1 << 20;
export const MNT_DETACH = 2;

interface Libc {
  setns(fd: number, nstype: number): number;
  unshare(flags: number): number;
  mount(src: string | null, target: string, fstype: string | null, flags: number, data: null): number;
  umount2(target: string, flags: number): number;
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
  } as Libc;
  return libc;
}

/** The errno of the last failed libc call, as its name (EPERM, EINVAL...). */
export function lastErrno(): string {
  const n = koffi.errno();
  return errnoName(n);
}

const names: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 9: 'EBADF', 12: 'ENOMEM', 13: 'EACCES', 16: 'EBUSY', 17: 'EEXIST',
  19: 'ENODEV', 20: 'ENOTDIR', 22: 'EINVAL', 28: 'ENOSPC', 95: 'EOPNOTSUPP',
};
export function errnoName(n: number): string {
  return names[n] ?? `errno ${n}`;
}
