import { readFileSync, writeFileSync } from 'node:fs';
import { KernelError } from './error.js';
import { type Netns, inNetns } from './netns.js';

/** net.* sysctls belong to the namespace of whoever opens the file, so the switch wraps the open. */
function path(key: string): string {
  return '/proc/sys/' + key.replaceAll('.', '/');
}

export function sysctlSet(key: string, value: string, ns?: Netns): void {
  inNetns(ns, () => {
    try {
      writeFileSync(path(key), value);
    } catch (e) {
      throw new KernelError('sysctl set', `${key}=${value}${ns ? ` in ${String(ns)}` : ''}`, (e as NodeJS.ErrnoException).code ?? 'EIO', e);
    }
  });
}

export function sysctlGet(key: string, ns?: Netns): string | undefined {
  return inNetns(ns, () => {
    try {
      return readFileSync(path(key), 'utf8').trim();
    } catch {
      return undefined;
    }
  });
}
