import { invalid } from './errors.js';

/** The namespace of a lab sandbox: tnet's prefix, so it is findable and never mistaken for another's. */
export const netnsName = (sandboxName: string) => `tn-${sandboxName}`;

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
