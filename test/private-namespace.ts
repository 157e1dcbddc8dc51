/**
 * The one recipe for running privileged test and benchmark code away from the host: the script
 * re-runs itself under `unshare --net --mount`, with private tmpfs mounts on every directory tnet
 * writes runtime state to, so the host's network, namespaces, resolv.conf files and Docker plugin
 * directory are never touched and parallel runs cannot collide.
 */
import { type SpawnSyncOptions, type SpawnSyncReturns, spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';

/** Where tnet keeps runtime state: named namespaces, their resolv.conf, its socket, the Docker plugin socket. */
const PRIVATE_DIRS = ['/run/netns', '/etc/netns', '/run/tnet', '/run/docker'];

/**
 * Runs this script again (same node, flags and arguments) in a new network + mount namespace with
 * `marker`=1 in its environment, so the second run knows it is the isolated one.
 */
export function rerunInPrivateNamespace(marker: string, opts: SpawnSyncOptions = {}): SpawnSyncReturns<string | Buffer> {
  for (const d of PRIVATE_DIRS) mkdirSync(d, { recursive: true });
  const setup = [
    'mount --make-rprivate /', // nothing mounted below propagates back to the host
    ...PRIVATE_DIRS.map((d) => `mount -t tmpfs tnet-private ${d}`),
    'ip link set lo up',
    'exec "$@"',
  ].join(' && ');
  return spawnSync(
    'unshare',
    ['--net', '--mount', '--', 'sh', '-c', setup, 'sh', process.execPath, ...process.execArgv, process.argv[1]!, ...process.argv.slice(2)],
    { ...opts, env: { ...process.env, ...opts.env, [marker]: '1' } },
  );
}
