import { expect } from 'vitest';
import { TnetError } from '../../libnetwork/errors.js';

/** Runs `f`, expects a TnetError with `code`, and returns it for message checks. */
export function refuse(f: () => unknown, code = 'invalid-argument'): TnetError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(TnetError);
    expect((e as TnetError).code).toBe(code);
    return e as TnetError;
  }
  throw new Error('expected a TnetError, got none');
}
