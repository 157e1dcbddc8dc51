/**
 * Every privileged test file starts with `await isolate()`: the file re-runs itself inside its
 * own network + mount namespace (test/private-namespace.ts), so the host's network is never
 * touched and parallel files cannot collide.
 * Not root, or no unshare: the file skips with that reason printed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { rerunInPrivateNamespace } from '../private-namespace.js';

export async function isolate(): Promise<void> {
  if (process.env.TNET_ISOLATED === '1') return;
  if (process.getuid?.() !== 0) {
    t.plan(0, 'privileged test: needs root (run scripts/test.sh as root)');
    process.exit(0);
  }
  const r = rerunInPrivateNamespace('TNET_ISOLATED', { stdio: 'inherit' });
  if (r.error) {
    t.plan(0, `cannot isolate the test in its own namespace: ${r.error.message}`);
    process.exit(0);
  }
  process.exit(r.status ?? 1);
}

export function sh(cmd: string): { code: number; out: string } {
  const r = spawnSync('sh', ['-c', cmd], { encoding: 'utf8', timeout: 30_000 });
  return { code: r.status ?? 1, out: (r.stdout ?? '') + (r.stderr ?? '') };
}

/**
 * The namespace of a sandbox by its tnet name: `tn-NAME` (an unscoped instance, the daemon's) or
 * `tn-SCOPE-NAME` (a library instance, scoped by default). The test's own namespace holds one.
 */
export function netnsOf(sandbox: string): string {
  const re = new RegExp(`^tn-(?:[a-z0-9]{1,8}-)?${sandbox.replace(/[.]/g, '\\.')}$`);
  const found = readdirSync('/run/netns').filter((n) => re.test(n));
  if (found.length !== 1) throw new Error(`sandbox ${sandbox}: ${found.length} namespaces match (${found.join(', ')})`);
  return found[0]!;
}

/** Runs in a sandbox (by its tnet name); exit status 0 = success. */
export function inSandbox(sandbox: string, cmd: string): { code: number; out: string } {
  return sh(`ip netns exec ${netnsOf(sandbox)} ${cmd}`);
}

export const ping = (sandbox: string, ip: string) => inSandbox(sandbox, `ping -c 1 -W 1 ${ip}`).code === 0;

/** A fresh state directory, removed at the end of the test. */
export function stateDir(tt: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'tnet-test-'));
  tt.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A background process, stopped by its pid at teardown. */
export function background(tt: Test, cmd: string): ChildProcess {
  const child = spawn('sh', ['-c', `exec ${cmd}`], { stdio: 'ignore' });
  tt.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return child;
}

/**
 * "Outside": a namespace on the far side of the host, like another machine on the LAN:
 * 198.51.100.1 on the host's veth, 198.51.100.2 in ext-NAME, and no route back to any
 * container subnet, so a container reaches it only through NAT.
 */
export function makeOutside(tt: Test, name = 'ext'): { ns: string; hostIp: string; ip: string } {
  const ns = `ext-${name}`;
  const r = sh(
    `ip netns add ${ns} && ip link add xh-${name} type veth peer name eth0 netns ${ns} && ` +
      `ip addr add 198.51.100.1/24 dev xh-${name} && ip link set xh-${name} up && ` +
      `ip -n ${ns} addr add 198.51.100.2/24 dev eth0 && ip -n ${ns} link set eth0 up && ip -n ${ns} link set lo up`,
  );
  if (r.code !== 0) throw new Error(`outside namespace: ${r.out}`);
  tt.teardown(() => {
    sh(`ip netns del ${ns}; ip link del xh-${name} 2>/dev/null`);
  });
  return { ns, hostIp: '198.51.100.1', ip: '198.51.100.2' };
}

/** What tnet could have left: links other than lo and the test's own (xh-*), namespaces, nft tables. */
export function leftovers(): { links: string[]; netns: string[]; tables: string[] } {
  const links = sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1").out.split('\n').filter((l) => l && l !== 'lo' && !l.startsWith('xh-'));
  const netns = sh('ip netns list | cut -d" " -f1').out.split('\n').filter((n) => n && !n.startsWith('ext-'));
  const tables = sh('nft list tables').out.split('\n').filter((x) => x.trim());
  return { links, netns, tables };
}

/** The kernel destroys a deleted namespace's links asynchronously: give it a moment. */
export async function assertClean(tt: Test, msg = 'nothing tnet made is left behind'): Promise<void> {
  const empty = { links: [], netns: [], tables: [] };
  await until(() => JSON.stringify(leftovers()) === JSON.stringify(empty), 5000);
  tt.same(leftovers(), empty, msg);
}

/** Polls until `fn` is true or `ms` passes. */
export async function until(fn: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return fn();
}
