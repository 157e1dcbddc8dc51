import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';

/** What tnet reads from a resolv.conf: its nameservers (in order) and its search domains. */
export interface ResolvConf {
  readonly nameservers: string[];
  readonly search: string[];
}

/**
 * Parses a resolv.conf as glibc does: every `nameserver` line with an IP literal (an IPv6 zone
 * `%eth0` allowed), and the last `search`/`domain` line for the search domains. A file that
 * cannot be read is empty.
 */
export function readResolvConf(path = '/etc/resolv.conf'): ResolvConf {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return { nameservers: [], search: [] };
  }
  const nameservers: string[] = [];
  let search: string[] = [];
  for (const line of text.split('\n')) {
    const ns = /^\s*nameserver\s+(\S+)/.exec(line);
    if (ns && isIP(ns[1]!.split('%')[0]!)) nameservers.push(ns[1]!);
    const s = /^\s*(search|domain)\s+(.*)$/.exec(line);
    if (s) search = s[2]!.split(/\s+/).filter((d) => d && d !== '.');
  }
  return { nameservers, search };
}
