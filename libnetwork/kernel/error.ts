/**
 * A kernel operation that failed: which operation (`op`, e.g. "link add"), on which object
 * (`object`, e.g. `veth "tn1a2b3c" in netns tn-a`) and the errno name the kernel gave.
 * kernel/ imports nothing of the project's, so the core maps this to its own error type.
 */
export class KernelError extends Error {
  readonly op: string;
  readonly object: string;
  readonly errno: string;
  constructor(op: string, object: string, errno: string, cause?: unknown) {
    super(`${op} ${object}: ${errno}${hint(errno)}`, cause === undefined ? undefined : { cause });
    this.name = 'KernelError';
    this.op = op;
    this.object = object;
    this.errno = errno;
  }
}

function hint(errno: string): string {
  switch (errno) {
    case 'EEXIST':
      return ' (it already exists)';
    case 'ENODEV':
    case 'ENOENT':
      return ' (no such object)';
    case 'EPERM':
      return ' (not permitted: tnet needs root / CAP_NET_ADMIN)';
    case 'EOPNOTSUPP':
      return ' (this kernel does not support it)';
    default:
      return '';
  }
}

/** The netlink package rejects with Error("Request rejected: EEXIST"): pull out the errno name. */
export function errnoOf(e: unknown): string {
  const m = e instanceof Error ? /Request rejected: (\S+)/.exec(e.message) : null;
  if (m?.[1]) return m[1];
  if (e && typeof e === 'object' && 'code' in e && typeof (e as { code: unknown }).code === 'string')
    return (e as { code: string }).code;
  return e instanceof Error ? e.message : String(e);
}

export function isErrno(e: unknown, ...errnos: string[]): boolean {
  return e instanceof KernelError ? errnos.includes(e.errno) : errnos.includes(errnoOf(e));
}
