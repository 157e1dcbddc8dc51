/** Interface names as the kernel accepts them. Pure: safe to import where the kernel modules are not loaded yet. */

export const IFNAMSIZ = 16;

/**
 * Why the kernel would refuse `name` as an interface name (dev_valid_name), or undefined if
 * it is fine. Checked before anything is created so the user gets the reason, not EINVAL.
 */
export function ifnameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is empty';
  if (Buffer.byteLength(name) >= IFNAMSIZ)
    return `is ${Buffer.byteLength(name)} bytes long; the kernel allows at most ${IFNAMSIZ - 1}`;
  if (name === '.' || name === '..') return 'may not be "." or ".."';
  if (/[/:\s]/.test(name)) return 'may not contain "/", ":" or white space';
  return undefined;
}
