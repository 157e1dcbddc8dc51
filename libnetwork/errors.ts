/**
 * Typed errors shared by every layer. Each carries what failed (`code`), on which object
 * (`object`, e.g. `network "web"` or `link "tn-br0"`), and a message written for a person.
 * Faces map `code` to their convention: the CLI to an exit code, the Docker plugin to {"Err"}.
 */
export type ErrorCode =
  | 'invalid-argument' // the request itself is wrong; nothing was changed
  | 'not-found' // a named object does not exist
  | 'conflict' // the request collides with something that exists (name, subnet, address, port)
  | 'busy' // the object is in use (a network with endpoints)
  | 'unsupported' // the kernel or the machine lacks a feature
  | 'kernel' // the kernel refused an operation
  | 'unavailable' // a service tnet needs (the etcd store) cannot be reached; retry when it is back
  | 'internal';

export class TnetError extends Error {
  readonly code: ErrorCode;
  readonly object: string | undefined;
  constructor(code: ErrorCode, message: string, options?: { object?: string; cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'TnetError';
    this.code = code;
    this.object = options?.object;
  }
}

export const invalid = (message: string, object?: string) =>
  new TnetError('invalid-argument', message, { object });
export const notFound = (message: string, object?: string) =>
  new TnetError('not-found', message, { object });
export const conflict = (message: string, object?: string) =>
  new TnetError('conflict', message, { object });
export const busy = (message: string, object?: string) => new TnetError('busy', message, { object });
export const unsupported = (message: string, object?: string) =>
  new TnetError('unsupported', message, { object });

export function isTnetError(e: unknown, code?: ErrorCode): e is TnetError {
  return e instanceof TnetError && (code === undefined || e.code === code);
}
