/**
 * A real Docker engine for the e2e tests, inside the test file's own network + mount namespace
 * (test/integration/harness.ts isolate()), with private tmpfs mounts on /run/docker (the plugin
 * socket path /run/docker/plugins is fixed in dockerd) and /run/containerd, its own --data-root,
 * --exec-root, --host socket and pid file. Every process started here is stopped by its pid.
 *
 * Needs Debian's docker.io (dockerd, /usr/bin/docker 20.10, containerd, runc) and busybox-static;
 * without them the file skips with the reason printed.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync, copyFileSync, openSync, closeSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import t, { type Test } from 'tap';
import { isolate, sh, until } from '../integration/harness.js';

export const DOCKER = '/usr/bin/docker';
const NEEDED = ['/usr/sbin/dockerd', DOCKER, '/usr/bin/containerd', '/usr/sbin/runc', '/bin/busybox'];
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const PLUGIN_SOCKET = '/run/docker/plugins/tnet.sock';

/** Skips the file (with the reason) without Docker; otherwise re-runs it isolated, like isolate(). */
export async function isolateDocker(): Promise<void> {
  if (process.env.TNET_ISOLATED !== '1') {
    const missing = NEEDED.filter((p) => !existsSync(p));
    if (missing.length) {
      t.plan(0, `e2e: Docker engine not installed (missing ${missing.join(', ')}; apt-get install docker.io busybox-static)`);
      process.exit(0);
    }
    if (!existsSync(join(ROOT, 'dist/cli/daemon.js'))) {
      t.plan(0, 'e2e: dist/ is not built (npx tsc -p tsconfig.json)');
      process.exit(0);
    }
  }
  await isolate();
  // Inside our own mount namespace now: these mounts are private to this file.
  for (const d of ['/run/docker', '/run/containerd']) {
    mkdirSync(d, { recursive: true });
    const r = sh(`mount -t tmpfs tnet-e2e ${d}`);
    if (r.code !== 0) throw new Error(`mount tmpfs on ${d}: ${r.out}`);
  }
}

export interface Run {
  code: number;
  out: string;
  err: string;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Sends `signal` to `pid` and waits for it to be gone; SIGKILL after `ms`. */
export async function stopPid(pid: number, ms = 20_000, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!pidAlive(pid)) return;
  try {
    process.kill(pid, signal);
  } catch {
    return;
  }
  if (await until(() => !pidAlive(pid) || isZombie(pid), ms)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
  await until(() => !pidAlive(pid) || isZombie(pid), 5000);
}

function isZombie(pid: number): boolean {
  try {
    return /^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

/** Waits for a child we spawned to exit (reaping it). */
function exited(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((res) => {
    const timer = setTimeout(() => res(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      res(true);
    });
  });
}

export interface DockerdOptions {
  readonly iptables?: boolean;
  /** Give dockerd no default bridge (docker0). */
  readonly noBridge?: boolean;
}

/** One dockerd of our own. */
export class Dockerd {
  readonly base: string;
  readonly sock: string;
  readonly pidFile: string;
  child: ChildProcess | undefined;
  private readonly args: string[];

  constructor(base: string, opts: DockerdOptions) {
    this.base = base;
    this.sock = join(base, 'docker.sock');
    this.pidFile = join(base, 'dockerd.pid');
    mkdirSync(join(base, 'data'), { recursive: true });
    mkdirSync(join(base, 'exec'), { recursive: true });
    writeFileSync(join(base, 'daemon.json'), '{}\n');
    this.args = [
      '--data-root', join(base, 'data'), '--exec-root', join(base, 'exec'), '--pidfile', this.pidFile,
      '--host', `unix://${this.sock}`, '--config-file', join(base, 'daemon.json'), '--log-level', 'warn',
      `--iptables=${opts.iptables === false ? 'false' : 'true'}`,
      ...(opts.noBridge ? ['--bridge=none'] : []),
    ];
  }

  async start(): Promise<void> {
    // After a kill -9, dockerd's containerd may be gone or a zombie nobody reaps (the test runner
    // can be a child subreaper): its pid file would make the new dockerd wait on a dead socket.
    const cd = this.containerdPid();
    if (cd !== undefined && (!pidAlive(cd) || isZombie(cd))) rmSync(join(this.base, 'exec/containerd/containerd.pid'), { force: true });
    const log = openSync(join(this.base, 'dockerd.log'), 'a');
    this.child = spawn('/usr/sbin/dockerd', this.args, { stdio: ['ignore', log, log] });
    closeSync(log);
    const ok = await until(() => this.docker('version', '--format', '{{.Server.Version}}').code === 0 || this.child?.exitCode !== null, 30_000);
    if (!ok || this.child.exitCode !== null) throw new Error(`dockerd did not start:\n${this.log().slice(-3000)}`);
  }

  log(): string {
    try {
      return readFileSync(join(this.base, 'dockerd.log'), 'utf8');
    } catch {
      return '';
    }
  }

  /** The /usr/bin/docker client (20.10, API 1.41) against this dockerd. */
  docker(...args: string[]): Run {
    const r = spawnSync(DOCKER, ['-H', `unix://${this.sock}`, ...args], { encoding: 'utf8', timeout: 120_000 });
    return { code: r.status ?? 1, out: (r.stdout ?? '').trim(), err: (r.stderr ?? '').trim() };
  }

  /** `docker ...` that must succeed: returns stdout. */
  ok(tt: Test, ...args: string[]): string {
    const r = this.docker(...args);
    if (r.code !== 0) tt.fail(`docker ${args.join(' ')}: exit ${r.code}: ${r.err || r.out}`);
    return r.out;
  }

  /** The pid of dockerd's own containerd (it keeps running if dockerd is killed). */
  private containerdPid(): number | undefined {
    try {
      return Number(readFileSync(join(this.base, 'exec/containerd/containerd.pid'), 'utf8').trim()) || undefined;
    } catch {
      return undefined;
    }
  }

  /** Graceful stop; SIGKILL after 30 s. Stops the containerd it started too. */
  async stop(): Promise<void> {
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      if (!(await exited(c, 30_000))) {
        c.kill('SIGKILL');
        await exited(c, 5000);
      }
    }
    const cd = this.containerdPid();
    if (cd !== undefined) await stopPid(cd, 10_000);
    // Containers whose containerd died (a kill -9 test) keep their shims: find exactly ours (their
    // command line names our exec-root's containerd socket) and stop them and their children by pid.
    for (const shim of shimsOf(join(this.base, 'exec/containerd/containerd.sock'))) {
      for (const child of childrenOf(shim)) await stopPid(child, 2000, 'SIGKILL');
      await stopPid(shim, 2000, 'SIGKILL');
    }
  }

  /**
   * kill -9. The containers' shims keep running, as on a real host; dockerd's own containerd dies
   * with it (parent-death signal), a moment later: wait for that, so that the next start does not
   * find its pid still alive and wait on its socket.
   */
  async kill9(): Promise<void> {
    const c = this.child;
    const cd = this.containerdPid();
    if (c && c.exitCode === null && c.signalCode === null) {
      c.kill('SIGKILL');
      await exited(c, 10_000);
    }
    if (cd !== undefined) await until(() => !pidAlive(cd) || isZombie(cd), 5000);
  }
}

/** Starts a dockerd for the test; stopped (and its files removed) at teardown. */
export async function startDockerd(tt: Test, opts: DockerdOptions = {}): Promise<Dockerd> {
  const base = mkdtempSync(join(tmpdir(), 'tnet-e2e-'));
  const d = new Dockerd(base, opts);
  tt.teardown(async () => {
    const left = d.docker('ps', '-aq').out.split('\n').filter(Boolean);
    if (left.length) d.docker('rm', '-f', ...left);
    await d.stop();
    unmountUnder(base);
    rmSync(base, { recursive: true, force: true });
  });
  await d.start();
  return d;
}

/** A busybox image built from busybox-static, with no registry: `docker import`. */
export function importBusybox(d: Dockerd, tag = 'tnet-e2e/busybox'): string {
  const root = mkdtempSync(join(tmpdir(), 'tnet-bb-'));
  try {
    for (const sub of ['bin', 'etc', 'proc', 'sys', 'dev', 'tmp', 'www', 'usr']) mkdirSync(join(root, sub));
    // With the host's /usr mounted read-only at /usr, the host's tools (socat) run in a container.
    symlinkSync('usr/lib', join(root, 'lib'));
    symlinkSync('usr/lib64', join(root, 'lib64'));
    copyFileSync('/bin/busybox', join(root, 'bin/busybox'));
    const applets = spawnSync('/bin/busybox', ['--list'], { encoding: 'utf8' }).stdout.split('\n').filter((a) => a && a !== 'busybox');
    for (const a of applets) symlinkSync('busybox', join(root, 'bin', a));
    writeFileSync(join(root, 'www/index.html'), 'hello-from-container\n');
    const r = spawnSync('sh', ['-c', `tar -C ${root} -c . | ${DOCKER} -H unix://${d.sock} import -c 'ENV PATH=/bin' - ${tag}`], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`docker import: ${r.stderr}`);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  return tag;
}

/** One POST to a plugin socket, as dockerd sends it (no Content-Type). */
export function pluginCall(path: string, body: string | object, socket = PLUGIN_SOCKET): Promise<{ status: number; body: string; json: unknown }> {
  const data = typeof body === 'string' ? body : JSON.stringify(body);
  return new Promise((res, rej) => {
    let answered = false;
    const req = request(
      { socketPath: socket, path, method: 'POST', headers: { Accept: 'application/vnd.docker.plugins.v1.2+json', 'Content-Length': Buffer.byteLength(data) } },
      (resp) => {
        answered = true;
        let text = '';
        resp.setEncoding('utf8');
        resp.on('data', (c: string) => (text += c));
        resp.on('end', () => {
          let json: unknown;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          res({ status: resp.statusCode ?? 0, body: text, json });
        });
      },
    );
    // A server refusing a body that is too big answers and closes before the client has written it
    // all: the answer may still arrive after the write error.
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE' || e.code === 'ECONNRESET') setTimeout(() => answered || rej(e), 1000);
      else rej(e);
    });
    req.end(data);
  });
}

/**
 * How tnet runs: `tnet daemon` (control API + plugin sockets), as users run it; TNET_E2E_PLUGIN=plugin
 * runs the plugin on its own (dist/libnetwork/plugin/main.js) instead.
 */
export function tnetCommand(stateDir: string): string[] {
  return process.env.TNET_E2E_PLUGIN === 'plugin'
    ? [join(ROOT, 'dist/libnetwork/plugin/main.js'), '--state-dir', stateDir]
    : [join(ROOT, 'dist/cli/main.js'), 'daemon', '--state-dir', stateDir, '--socket', join(stateDir, 'control.sock')];
}

/** tnet as its own process (so it can be killed -9), on its own state directory. */
export class TnetPlugin {
  child: ChildProcess | undefined;
  /** ms from spawn to the first answered Activate, of the last start(). */
  startMs = 0;
  constructor(readonly stateDir: string, readonly logFile: string) {}

  async start(): Promise<number> {
    const t0 = performance.now();
    const log = openSync(this.logFile, 'a');
    this.child = spawn(process.execPath, tnetCommand(this.stateDir), {
      stdio: ['ignore', log, log],
      env: { ...process.env, TNET_LOG_LEVEL: process.env.TNET_LOG_LEVEL ?? 'info' },
    });
    closeSync(log);
    const up = await pollUntil(async () => {
      if (this.child?.exitCode !== null) return true;
      try {
        return (await pluginCall('/Plugin.Activate', '')).status === 200;
      } catch {
        return false;
      }
    }, 15_000);
    if (!up || this.child.exitCode !== null) throw new Error(`tnet plugin did not start:\n${this.log().slice(-3000)}`);
    this.startMs = performance.now() - t0;
    return this.startMs;
  }

  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill(signal);
    if (!(await exited(c, 15_000))) {
      c.kill('SIGKILL');
      await exited(c, 5000);
    }
  }
}

/**
 * When the test fails, its tnet log and dockerd log (and `extra`, e.g. a ruleset) go into the
 * test's output: the e2e failures that only happen on CI are read there.
 */
export function logsOnFailure(tt: Test, tnet: TnetPlugin, d?: Dockerd, extra: () => string[] = () => []): void {
  tt.teardown(() => {
    if (tt.passing()) return;
    tt.comment(`plugin log:\n${tnet.log().slice(-6000)}`);
    if (d) tt.comment(`dockerd log:\n${d.log().slice(-4000)}`);
    for (const x of extra()) tt.comment(x);
  });
}

export async function startTnet(tt: Test, stateDir?: string): Promise<TnetPlugin> {
  const dir = stateDir ?? mkdtempSync(join(tmpdir(), 'tnet-e2e-state-'));
  const p = new TnetPlugin(dir, join(dir, 'plugin.log'));
  tt.teardown(async () => {
    await p.stop();
    if (!stateDir) rmSync(dir, { recursive: true, force: true });
  });
  await p.start();
  return p;
}

/** What tnet could have left on the host: links (tn*), its nft table, DOCKER-USER rules. */
export function tnetLeftovers(): { links: string[]; tables: string[]; dockerUser: string[] } {
  const links = sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1").out.split('\n').filter((l) => l.startsWith('tn'));
  const tables = sh('nft list tables').out.split('\n').filter((x) => x.includes('tnet'));
  const dockerUser = sh('iptables-save -t filter 2>/dev/null; ip6tables-save -t filter 2>/dev/null').out.split('\n').filter((l) => l.includes('tnet:'));
  return { links, tables, dockerUser };
}

/** `docker ...` without blocking the event loop (for parallel starts). */
export function dockerAsync(d: Dockerd, args: string[]): Promise<Run> {
  return new Promise((res) => {
    const c = spawn(DOCKER, ['-H', `unix://${d.sock}`, ...args]);
    let out = '';
    let err = '';
    c.stdout.on('data', (b) => (out += b));
    c.stderr.on('data', (b) => (err += b));
    c.on('close', (code) => res({ code: code ?? 1, out: out.trim(), err: err.trim() }));
  });
}

/** Unmounts everything mounted under `dir` (dockerd's netns files, overlay layers), deepest first. */
export function unmountUnder(dir: string): void {
  const points = readFileSync('/proc/self/mounts', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[1] ?? '')
    .map((p) => p.replace(/\\040/g, ' '))
    .filter((p) => p === dir || p.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const p of points) spawnSync('umount', ['-l', p]);
}

/** Polls every 2 ms (start-up times are measured with it). */
async function pollUntil(fn: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return true;
    await new Promise((r) => setTimeout(r, 2));
  }
  return fn();
}

/** The containerd shims serving the containerd at `address` (their `-address` argument). */
function shimsOf(address: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.includes('containerd-shim') && argv[argv.indexOf('-address') + 1] === address) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * An HTTP GET of / with socat, from `where` (a command prefix such as `ip netns exec NS`, or ''
 * for the test's own namespace): the body, or '' when nothing answers within 3 s.
 */
export function httpGet(host: string, port: number, where = ''): string {
  const r = sh(`printf 'GET / HTTP/1.0\\r\\n\\r\\n' | ${where} socat -T 3 - TCP:${host}:${port},connect-timeout=3 2>/dev/null`);
  const i = r.out.indexOf('\r\n\r\n');
  return i < 0 ? '' : r.out.slice(i + 4).trim();
}


/**
 * A dockerd inside a simulated host's namespaces (test/multihost.ts: the holder process's network,
 * mount and UTS namespaces), so that it sees that host's private /run/docker (the plugin sockets
 * of the host's own tnet daemon, its netns files) and moves interfaces from that host's network
 * namespace. `nsenter` execs dockerd in place, so the pid is dockerd's and stop()/kill9() work.
 */
export class HostDockerd extends Dockerd {
  private readonly hostArgs: string[];

  constructor(base: string, private readonly holderPid: number, opts: DockerdOptions = {}) {
    super(base, opts);
    this.hostArgs = [
      '--data-root', join(base, 'data'), '--exec-root', join(base, 'exec'), '--pidfile', this.pidFile,
      '--host', `unix://${this.sock}`, '--config-file', join(base, 'daemon.json'), '--log-level', 'warn',
      `--iptables=${opts.iptables === false ? 'false' : 'true'}`,
      ...(opts.noBridge ? ['--bridge=none'] : []),
    ];
  }

  override async start(): Promise<void> {
    // A host may mount a sysfs of its own (its /sys/class/net), which hides the cgroup hierarchies
    // runc needs: they are mounted again there, as the test namespace has them (a bind from
    // another mount namespace does not carry its submounts), in the host's mount namespace only.
    const hierarchies = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')).filter((f) => f[2] === 'cgroup' || f[2] === 'cgroup2');
    const mounts = hierarchies.map(([, dir, type, opts]) => {
      const own = (opts ?? '').split(',').filter((o) => !['rw', 'ro', 'nosuid', 'nodev', 'noexec', 'relatime'].includes(o));
      return `mkdir -p ${dir} && mount -t ${type} ${own.length ? `-o ${own.join(',')} ` : ''}${type} ${dir}`;
    });
    const cg = spawnSync('nsenter', ['-t', String(this.holderPid), '-m', '--', 'sh', '-c',
      `ls -A /sys/fs/cgroup | grep -q . || { mount -t tmpfs tnet-cgroup /sys/fs/cgroup && ${mounts.join(' && ') || 'true'}; }`], { encoding: 'utf8' });
    if (cg.status !== 0) throw new Error(`cgroups for dockerd in the host namespace of pid ${this.holderPid}: ${cg.stderr}`);
    const log = openSync(join(this.base, 'dockerd.log'), 'a');
    this.child = spawn('nsenter', ['-t', String(this.holderPid), '-m', '-n', '-u', '--', '/usr/sbin/dockerd', ...this.hostArgs], { stdio: ['ignore', log, log] });
    closeSync(log);
    const ok = await until(() => this.docker('version', '--format', '{{.Server.Version}}').code === 0 || this.child?.exitCode !== null, 30_000);
    if (!ok || this.child.exitCode !== null) throw new Error(`dockerd (host namespace of pid ${this.holderPid}) did not start:\n${this.log().slice(-3000)}`);
  }
}

/**
 * Starts a dockerd in a simulated host's namespaces (HostDockerd); at teardown its containers are
 * removed, it is stopped and its files go (its mounts live in the host's mount namespace).
 */
export async function startDockerdOnHost(tt: Test, holderPid: number, opts: DockerdOptions = {}): Promise<HostDockerd> {
  const base = mkdtempSync(join(tmpdir(), 'tnet-e2e-host-'));
  const d = new HostDockerd(base, holderPid, opts);
  tt.teardown(async () => {
    const left = d.docker('ps', '-aq').out.split('\n').filter(Boolean);
    if (left.length) d.docker('rm', '-f', ...left);
    await d.stop();
    spawnSync('nsenter', ['-t', String(holderPid), '-m', '--', 'sh', '-c', `grep -o " ${base}[^ ]*" /proc/self/mounts | sort -r | xargs -r -n1 umount -l`]);
    rmSync(base, { recursive: true, force: true });
  });
  await d.start();
  return d;
}
