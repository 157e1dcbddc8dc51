/**
 * Read/write locks by key (a network or sandbox id), so operations on different objects run
 * in parallel and only those on the same object wait. Endpoints on one network share its lock;
 * deleting the network takes it exclusively. Always take keys in a fixed order (network
 * before sandbox) so two operations cannot wait on each other.
 */
export class KeyedLock {
  private readonly entries = new Map<string, { readers: number; writer: boolean; queue: (() => void)[] }>();

  private entry(key: string) {
    let e = this.entries.get(key);
    if (!e) {
      e = { readers: 0, writer: false, queue: [] };
      this.entries.set(key, e);
    }
    return e;
  }

  async shared<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const e = this.entry(key);
    while (e.writer || (e.queue.length > 0 && e.readers === 0)) await new Promise<void>((r) => e.queue.push(r));
    e.readers++;
    try {
      return await fn();
    } finally {
      e.readers--;
      this.wake(key, e);
    }
  }

  async exclusive<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const e = this.entry(key);
    while (e.writer || e.readers > 0) await new Promise<void>((r) => e.queue.push(r));
    e.writer = true;
    try {
      return await fn();
    } finally {
      e.writer = false;
      this.wake(key, e);
    }
  }

  private wake(key: string, e: { readers: number; writer: boolean; queue: (() => void)[] }) {
    const waiting = e.queue.splice(0);
    for (const w of waiting) w();
    if (!e.writer && e.readers === 0 && e.queue.length === 0 && waiting.length === 0) this.entries.delete(key);
  }
}
