import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readlinkSync, statSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { KernelError } from './error.js';
import { CLONE_NEWNET, MNT_DETACH, MS_BIND, MS_REC, MS_SHARED, lastErrno, loadLibc } from './libc.js';

/** Where named namespaces live, as `ip netns` keeps them. */
export const NETNS_DIR = '/run/netns';

/**
 * A network namespace, known by the path of a file that holds it open: a named namespace
 * (/run/netns/NAME), a container's (/var/run/docker/netns/ID) or a process's (/proc/PID/ns/net).
 */
export class Netns {
  readonly path: string;
  readonly name: string | undefined;
  private constructor(path: string, name?: string) {
    this.path = path;
    this.name = name;
  }
  static named(name: string): Netns {
    return new Netns(join(NETNS_DIR, name), name);
  }
  static atPath(path: string): Netns {
    return new Netns(path);
  }
  toString(): string {
    return this.name !== undefined ? `netns ${this.name}` : `netns ${this.path}`;
  }
}

let hostFd: number | undefined;
/** The namespace this process started in; every switch returns here. */
function homeFd(): number {
  hostFd ??= openSync('/proc/thread-self/ns/net', 'r');
  return hostFd;
}

/**
 * Runs `fn` with the JS thread switched into `ns`, and switches back whatever happens.
 * `fn` must be synchronous: a socket created inside belongs to `ns` for its whole life, and
 * nothing else can run on this thread while it is switched (no await inside).
 * `ns` undefined means "where we are" and costs nothing.
 */
export function inNetns<T>(ns: Netns | undefined, fn: () => T): T {
  if (ns === undefined) return fn();
  const libc = loadLibc();
  const home = homeFd();
  let fd: number;
  try {
    fd = openSync(ns.path, 'r');
  } catch (e) {
    throw new KernelError('open', String(ns), (e as NodeJS.ErrnoException).code ?? 'EIO', e);
  }
  try {
    if (libc.setns(fd, CLONE_NEWNET) !== 0) throw new KernelError('setns', String(ns), lastErrno());
    try {
      const out = fn();
      if (out instanceof Promise) throw new Error('inNetns: fn must be synchronous');
      return out;
    } finally {
      if (libc.setns(home, CLONE_NEWNET) !== 0) {
        // Staying in the wrong namespace would silently misdirect every later call.
        throw new KernelError('setns back to the home namespace from', String(ns), lastErrno());
      }
    }
  } finally {
    closeSync(fd);
  }
}

let runDirReady = false;
/**
 * /run/netns must be a shared mount point so a namespace bind-mounted there is visible to
 * other mount namespaces (what `ip netns add` does).
 */
function ensureRunDir(): void {
  if (runDirReady) return;
  const libc = loadLibc();
  mkdirSync(NETNS_DIR, { recursive: true, mode: 0o755 });
  if (libc.mount('', NETNS_DIR, 'none', MS_SHARED | MS_REC, null) !== 0) {
    if (libc.mount(NETNS_DIR, NETNS_DIR, 'none', MS_BIND | MS_REC, null) !== 0)
      throw new KernelError('bind-mount', NETNS_DIR, lastErrno());
    if (libc.mount('', NETNS_DIR, 'none', MS_SHARED | MS_REC, null) !== 0)
      throw new KernelError('make-shared', NETNS_DIR, lastErrno());
  }
  runDirReady = true;
}

/**
 * Creates a named namespace in-process, like `ip netns add NAME`: unshare a fresh network
 * namespace on this thread, bind-mount it onto /run/netns/NAME, switch back. ~0.1 ms, no process.
 */
export function netnsAdd(name: string): Netns {
  const libc = loadLibc();
  ensureRunDir();
  const ns = Netns.named(name);
  try {
    writeFileSync(ns.path, '', { flag: 'wx', mode: 0o444 });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new KernelError('netns add', String(ns), code, e);
  }
  const home = homeFd();
  try {
    if (libc.unshare(CLONE_NEWNET) !== 0) throw new KernelError('unshare for', String(ns), lastErrno());
    try {
      if (libc.mount('/proc/thread-self/ns/net', ns.path, 'none', MS_BIND, null) !== 0)
        throw new KernelError('bind-mount', String(ns), lastErrno());
    } finally {
      if (libc.setns(home, CLONE_NEWNET) !== 0)
        throw new KernelError('setns back to the home namespace after creating', String(ns), lastErrno());
    }
  } catch (e) {
    try {
      unlinkSync(ns.path);
    } catch {
      /* already gone */
    }
    throw e;
  }
  return ns;
}

/**
 * Deletes a named namespace: unmount and unlink. The kernel destroys it (and every link in it)
 * once nothing else holds it; that cleanup is asynchronous.
 */
export function netnsDel(name: string): void {
  const libc = loadLibc();
  const path = Netns.named(name).path;
  if (!existsSync(path)) throw new KernelError('netns del', `netns ${name}`, 'ENOENT');
  if (libc.umount2(path, MNT_DETACH) !== 0) {
    const errno = lastErrno();
    if (errno !== 'EINVAL') throw new KernelError('unmount', `netns ${name}`, errno); // EINVAL: not mounted
  }
  unlinkSync(path);
}

/** Names of the namespaces under /run/netns. */
export function netnsList(): string[] {
  try {
    return readdirSync(NETNS_DIR);
  } catch {
    return [];
  }
}

export function netnsExists(name: string): boolean {
  return existsSync(Netns.named(name).path);
}

/**
 * Whether any process lives in the namespace held open at `path` (a container's init does while
 * it runs). A namespace file whose processes are all gone is a leftover: dockerd leaves one when
 * it cannot finish tearing a sandbox down (a network plugin that does not answer). Reads
 * /proc/PID/ns/net of every process: for occasional checks, not a hot path.
 */
export function netnsInUse(path: string): boolean {
  let ino: number;
  try {
    ino = statSync(path).ino;
  } catch {
    return false;
  }
  const want = `net:[${ino}]`;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      if (readlinkSync(`/proc/${pid}/ns/net`) === want) return true;
    } catch {
      /* the process ended meanwhile, or is not ours to look at */
    }
  }
  return false;
}
