/** Interface names as the kernel accepts them. Pure: safe to import where the kernel modules are not loaded yet. */

export const IFNAMSIZ = 16;

/**
 * Why the kernel would refuse or rewrite `name` as an interface name, or undefined if it is fine.
 * Refused: what dev_valid_name refuses. Rewritten: a '%' makes the kernel pick the name itself
 * (`br%d` becomes br0, br1...), so the link would not have the name recorded and no rollback or
 * reconcile would find it. The one checker for every name tnet hands the kernel, run before
 * anything is created so the user gets the reason, not EINVAL or a stray link.
 */
export function ifnameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name) >= IFNAMSIZ)
    return `is ${Buffer.byteLength(name)} bytes long; the kernel allows at most ${IFNAMSIZ - 1}`;
  if (name === '.' || name === '..') return 'may not be "." or ".."';
  if (/[/:\s]/.test(name)) return 'may not contain "/", ":" or white space';
  if (name.includes('%')) return 'may not contain "%" (the kernel would choose the name itself, and tnet would lose track of the link)';
  return undefined;
}
