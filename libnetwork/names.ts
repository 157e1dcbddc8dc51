/** The names and identifiers the core gives or checks: namespaces, object names, MACs, DNS aliases. */
import { invalid } from './errors.js';

/**
 * The namespace of a lab sandbox: tnet's prefix and the instance's scope, so it is findable, never
 * mistaken for another's, and two tnet instances on one host (a daemon and a CI test's library)
 * can both have a sandbox "a": `tn-a` for the unscoped instance, `tn-SCOPE-a` for another.
 */
export const netnsName = (scope: string, sandboxName: string) => (scope ? `tn-${scope}-${sandboxName}` : `tn-${sandboxName}`);

const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;

/**
 * Names people give to networks and sandboxes: what Docker accepts for container and network
 * names, short enough to sit in a namespace file name and a DNS label.
 */
export function checkName(kind: 'network' | 'sandbox', name: unknown): string {
  if (typeof name !== 'string' || name === '') throw invalid(`a ${kind} name is required`);
  if (name.length > 63) throw invalid(`${kind} name "${name}" is ${name.length} characters; at most 63`, `${kind} "${name}"`);
  if (!NAME.test(name))
    throw invalid(
      `${kind} name "${name}" may only contain letters, digits, "_", "." and "-", and must start with a letter or digit`,
      `${kind} "${name}"`,
    );
  return name;
}

/** Docker's MAC scheme: 02:42 and the IPv4 address, so a restarted endpoint keeps its ARP entries valid. */
export function macFor(ipv4: bigint | undefined, seed: string): string {
  const tail = ipv4 !== undefined ? ipv4.toString(16).padStart(8, '0') : seed.slice(0, 8);
  return `02:42:${tail.match(/../g)!.join(':')}`;
}

/** A MAC address people give (`--mac`, Docker's MacAddress): unicast, lowercase. */
export function checkMac(mac: string): string {
  const m = mac.toLowerCase();
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(m)) throw invalid(`MAC address "${mac}" is not of the form 02:42:ac:11:00:02`, `mac "${mac}"`);
  if ((parseInt(m.slice(0, 2), 16) & 1) === 1) throw invalid(`MAC address "${mac}" is a multicast address`, `mac "${mac}"`);
  return m;
}

export const DNS_NAME = /^[a-zA-Z0-9]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9_-]{0,61}[a-zA-Z0-9])?)*$/;

/** An extra DNS name of an endpoint (`--alias`). */
export function checkAlias(a: string): string {
  if (!DNS_NAME.test(a) || a.length > 253) throw invalid(`alias "${a}" is not a valid DNS name`, `alias "${a}"`);
  return a;
}

/** An endpoint's DNS names (its name and aliases) on one network, for dnsNameClash. */
export interface DnsNames {
  readonly names: readonly string[];
  readonly network: string;
  /** Whose names they are: a sandbox may repeat its own names (an alias `w.web` of `w` itself). */
  readonly sandboxId: string | undefined;
}

/**
 * The DNS name rule (README "Names (DNS)"): the names a sandbox brings to a network must not make
 * any name answer ambiguously. Names compare ignoring case, as DNS does. Refused:
 *  - a name that differs only in case from another's, on any network (`Web` next to `web`: a
 *    sandbox on both networks would get both); the same spelling may be shared on purpose (an
 *    alias `svc` on several endpoints: several records);
 *  - a name that is another's NAME.NETWORK: `w.web` anywhere while a `w` is on network `web`, and
 *    `w` joining `web` while anything is named `w.web` (the name `w.web` would mean both).
 * Returns the reason, or undefined if the names are clear.
 */
export function dnsNameClash(names: readonly string[], network: string, sandboxId: string, others: readonly DnsNames[]): string | undefined {
  const lower = (x: string) => x.toLowerCase();
  const net = lower(network);
  for (const mine of names) {
    const m = lower(mine);
    for (const o of others) {
      if (o.sandboxId === sandboxId) continue;
      const on = lower(o.network);
      for (const theirs of o.names) {
        const t = lower(theirs);
        if (t === m && theirs !== mine)
          return `name "${mine}" differs only in case from "${theirs}" (on network "${o.network}"); DNS names ignore case, so both would answer as one (use the same spelling to share a name on purpose)`;
        if (m === `${t}.${on}`)
          return `name "${mine}" is the DNS name of "${theirs}" on network "${o.network}" (NAME.NETWORK), so it would answer for both; choose a name that does not end in ".${o.network}"`;
        if (t === `${m}.${net}`)
          return `"${theirs}" (on network "${o.network}") is already the name "${mine}" would get as ${mine}.${network} (NAME.NETWORK), so it would answer for both; rename one of them`;
      }
    }
  }
  return undefined;
}

/** The short form of a 64-hex id, as Docker shows it. */
export const short = (id: string) => id.slice(0, 12);
