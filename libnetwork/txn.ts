import { log } from './log.js';

/**
 * An operation as a list of steps, each with its undo. If a step throws, the undos of the
 * steps before it run in reverse order and the error goes on to the caller: no operation
 * leaves half a network behind. (A kill -9 skips the undos; the reconcile at start does them.)
 */
export class Txn {
  private readonly undos: { what: string; undo: () => unknown }[] = [];

  /** Runs `doIt`; registers `undo` (given its result) to run if a later step fails. */
  async step<T>(what: string, doIt: () => Promise<T> | T, undo?: (result: T) => unknown): Promise<T> {
    const result = await doIt();
    if (undo) this.undos.push({ what, undo: () => undo(result) });
    return result;
  }

  /** Registers an undo for work already done. */
  onRollback(what: string, undo: () => unknown): void {
    this.undos.push({ what, undo });
  }

  async rollback(): Promise<void> {
    for (const { what, undo } of this.undos.reverse()) {
      try {
        await undo();
      } catch (e) {
        // The next reconcile removes what an undo could not; the caller gets the first error.
        log.warn({ err: e, step: what }, 'undo failed');
      }
    }
    this.undos.length = 0;
  }
}

export async function transaction<T>(fn: (t: Txn) => Promise<T>): Promise<T> {
  const t = new Txn();
  try {
    return await fn(t);
  } catch (e) {
    await t.rollback();
    throw e;
  }
}
