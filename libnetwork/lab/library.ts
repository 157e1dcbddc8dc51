/**
 * Labs for test code: `const lab = await createLab('examples/line.yml')`, then `lab.exec('r1',
 * 'ping -c1 r3')`, `lab.apply(changed)`, `lab.destroy()` (or `await using lab = ...`).
 *
 * The guarantee a CI runner needs: when the test process dies (a failed assertion, a timeout,
 * kill -9) the lab dies with it and nothing is left. The design is munet's: the lab lives inside
 * private namespaces owned by a worker process (library-worker.ts) that this process starts as
 *
 *   setpriv --pdeathsig KILL -- unshare --net --mount --pid --fork --kill-child=SIGKILL --mount-proc -- sh -c SETUP
 *
 * The kernel then does the cleanup, whatever happens to the test process: its death kills
 * `unshare` (parent-death signal), whose death kills the worker (--kill-child), which is PID 1 of
 * its PID namespace, whose death kills every process started in the lab's nodes; with the last
 * process gone the mount namespace goes, with it the private /run/netns holding the nodes'
 * namespaces, and with those every link, bridge and address. Nothing is ever made in the caller's
 * network namespace, so several labs (in one process or in parallel CI jobs) never see each other.
 *
 * Commands run in a node through `nsenter` into the worker's mount, network and PID namespaces,
 * then `ip netns exec` into the node's namespace, so they die with the lab too.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, extname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { TnetError, type ErrorCode } from '../errors.js';
import { checkLab, labInvalid } from './check.js';
import type { LabSpec } from './topology.js';

type LabApplyResult = Awaited<ReturnType<import('../controller.js').Controller['applyLab']>>;
type LabDetails = ReturnType<import('../controller.js').Controller['labDetails']>;

/** Directories the worker mounts a private tmpfs on (what tnet and ip-netns write runtime state to). */
const PRIVATE_DIRS = ['/run/netns', '/etc/netns', '/run/tnet'];
/**
 * FRR keeps a crash-log directory per daemon named after its PID (/var/tmp/frr/DAEMON.PID, owned
 * by its user frr), left behind when the daemon is killed: in a PID namespace those numbers
 * repeat, so where FRR is installed every lab gets its own, gone with the lab.
 */
const FRR_TMP = 'if [ -d /usr/lib/frr ]; then mkdir -p /var/tmp/frr && mount -t tmpfs -o mode=0700 tnet-lab /var/tmp/frr && { chown frr:frr /var/tmp/frr 2>/dev/null || true; }; fi';

export interface CreateLabOptions {
  /** Called as the lab is built (nodes, links, commands). */
  onProgress?: (p: { done: number; total: number; what: string }) => void;
  /** Give up (and take the lab down) if the worker is not up after this long (default 60 s). */
  startTimeoutMs?: number;
  /** Where the worker's log (tnet's, on stderr) goes: 'pipe' (kept, shown in errors; default) or 'inherit'. */
  log?: 'pipe' | 'inherit';
}

export interface ExecOptions {
  /** Written to the command's stdin (default: none, stdin is /dev/null). */
  input?: string | Buffer;
  /** Killed (SIGKILL) after this long; the result then has code 137 and `timedOut`. */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface ExecResult {
  /** The exit code (128 + signal number when killed by a signal). */
  code: number;
  stdout: string;
  stderr: string;
  timedOut?: boolean;
}

/** A running lab owned by this process. */
export interface Lab extends AsyncDisposable {
  readonly name: string;
  /** The spec the lab runs now. */
  readonly spec: LabSpec;
  /**
   * A PID (in the caller's PID namespace) in the lab's network and mount namespaces: `nsenter
   * --target PID --mount --net` sees the lab as its worker does (its PID namespace is
   * /proc/PID/ns/pid_for_children).
   */
  readonly pid: number;
  /** What the create (or the last apply) did. */
  readonly result: LabApplyResult;
  /** Runs `cmd` in `node` (a string goes to `sh -c`, an array is argv) and collects its output. */
  exec(node: string, cmd: string | readonly string[], opts?: ExecOptions): Promise<ExecResult>;
  /**
   * Starts `cmd` in `node` and hands back the process to stream from (stdio as `spawn` takes it,
   * default pipes). It dies with the lab at the latest.
   */
  spawn(node: string, cmd: string | readonly string[], opts?: Pick<SpawnOptions, 'stdio' | 'env'>): Promise<ChildProcess>;
  /** Changes the running lab to `spec` (an object or a file): what differs is added, removed or changed. */
  apply(spec: LabSpec | string, opts?: { dryRun?: boolean }): Promise<LabApplyResult>;
  /** Nodes, interfaces, addresses, links and networks as the lab has them now. */
  details(): Promise<LabDetails>;
  /** The IPv4 addresses of `node`'s interfaces (ifname -> address without prefix), from `ip` in the node. */
  addresses(node: string): Promise<Record<string, string>>;
  /** Stops the nodes' processes and removes the lab; waits until the worker is gone. Safe to call twice. */
  destroy(): Promise<void>;
  /** True once the lab is gone (destroyed, or its worker died). */
  readonly closed: boolean;
}

/**
 * Creates a lab from an object (checked like a file, problems listed by path) or a lab file
 * (YAML or JSON; problems at FILE:LINE:COLUMN). Resolves when every link is up and every node's
 * `exec:` has run; rejects with every problem and creates nothing when the spec has any.
 */
export async function createLab(spec: LabSpec | string, opts: CreateLabOptions = {}): Promise<Lab> {
  const lab = await loadSpec(spec);
  requirePrivileges();
  const worker = await LabWorker.start(opts);
  try {
    const result = (await worker.request({ op: 'apply', spec: lab }, opts.onProgress)) as LabApplyResult;
    return new RunningLab(worker, lab, result);
  } catch (e) {
    await worker.stop();
    throw e;
  }
}

async function loadSpec(spec: LabSpec | string): Promise<LabSpec> {
  if (typeof spec === 'string') {
    // The file loader (line:column for every problem) belongs to the command line face; it is
    // loaded only when a file is given.
    const { loadLabFile, formatProblems } = await import('../../cli/lab-file.js');
    const { lab, problems } = await loadLabFile(spec);
    if (!lab || problems.length) {
      const n = problems.length;
      throw new TnetError('invalid-argument', `lab file ${spec} has ${n} problem${n === 1 ? '' : 's'}; nothing was created:\n${formatProblems(problems)}`, {
        object: `lab file ${spec}`,
      });
    }
    return lab;
  }
  const { lab, problems } = checkLab(spec);
  if (!lab || problems.length) throw labInvalid(problems, typeof spec?.name === 'string' ? spec.name : undefined);
  return lab;
}

/** Capability bits (linux/capability.h). */
const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21;

function requirePrivileges(): void {
  // The worker's tools (setpriv, unshare, mount, nsenter, ip) are exec'd: they keep capabilities as root only.
  const capEff = /^CapEff:\s*([0-9a-f]+)/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  const caps = capEff === undefined ? 0n : BigInt(`0x${capEff}`);
  const has = (bit: number) => (caps >> BigInt(bit)) & 1n;
  if (process.getuid?.() !== 0 || !has(CAP_SYS_ADMIN) || !has(CAP_NET_ADMIN))
    throw new TnetError(
      'unsupported',
      `a lab needs root with CAP_SYS_ADMIN and CAP_NET_ADMIN to make its namespaces (this process: uid ${process.getuid?.()}, ` +
        `CAP_SYS_ADMIN ${has(CAP_SYS_ADMIN) ? 'yes' : 'no'}, CAP_NET_ADMIN ${has(CAP_NET_ADMIN) ? 'yes' : 'no'}): ` +
        'run the tests as root, in a privileged CI container or one with --cap-add SYS_ADMIN --cap-add NET_ADMIN',
      { object: 'lab' },
    );
  for (const tool of ['setpriv', 'unshare', 'nsenter', 'ip']) {
    const r = spawnSync(tool, ['--version'], { stdio: 'ignore' });
    if (r.error)
      throw new TnetError('unsupported', `a lab needs "${tool}" (util-linux / iproute2), which is not installed: ${r.error.message}`, { object: 'lab' });
  }
}

/** The worker script next to this file, and how to start Node on it. */
function workerCommand(): string[] {
  const here = fileURLToPath(import.meta.url);
  const ext = extname(here);
  const script = join(dirname(here), `library-worker${ext}`);
  if (ext === '.js') return [process.execPath, script];
  // Running from the TypeScript sources (tests): the compiled worker (npm run build), with which a
  // one-node lab is up in ~0.5 s here; through a TypeScript loader the worker alone took seconds
  // (15 s with type checking). The loader this process runs under only when nothing is built.
  const compiled = resolve(dirname(here), '../../dist/libnetwork/lab/library-worker.js');
  if (existsSync(compiled)) return [process.execPath, compiled];
  if (process.execArgv.some((a) => /^--(import|loader|require|experimental-loader)\b/.test(a)) && existsSync(script))
    return [process.execPath, ...process.execArgv, script];
  throw new TnetError('internal', `the lab worker is not built (${compiled} is missing): run \`npm run build\``, { object: 'lab' });
}

interface Answer {
  id?: number;
  ok?: boolean;
  result?: unknown;
  error?: { code: ErrorCode; message: string; object?: string };
  progress?: { done: number; total: number; what: string };
  ready?: boolean;
}

/** The worker process and the JSON-lines conversation with it. */
class LabWorker {
  private nextId = 1;
  private readonly waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; progress?: CreateLabOptions['onProgress'] }>();
  private log = '';
  readonly exited: Promise<void>;
  private gone = false;

  private constructor(readonly child: ChildProcess) {
    this.exited = new Promise((res) => child.once('exit', () => res()));
    child.once('exit', (code, signal) => {
      this.gone = true;
      const why = new TnetError('internal', `the lab's worker exited (${signal ?? `code ${code}`})${this.logTail()}`, { object: 'lab' });
      for (const w of this.waiting.values()) w.reject(why);
      this.waiting.clear();
    });
  }

  get closed(): boolean {
    return this.gone;
  }

  /** The host PID of `unshare`, which sits in the lab's network and mount namespaces (not its PID one). */
  get pid(): number {
    return this.child.pid!;
  }

  static async start(opts: CreateLabOptions): Promise<LabWorker> {
    const setup = [
      'mount --make-rprivate /',
      ...PRIVATE_DIRS.map((d) => `mkdir -p ${d} && mount -t tmpfs -o mode=0755 tnet-lab ${d}`),
      FRR_TMP,
      'ip link set lo up',
      'exec "$@"',
    ].join(' && ');
    const args = [
      '--pdeathsig', 'KILL', '--',
      'unshare', '--net', '--mount', '--pid', '--fork', '--kill-child=SIGKILL', '--mount-proc', '--',
      'sh', '-c', setup, 'sh', ...workerCommand(),
    ];
    const child = spawn('setpriv', args, {
      stdio: ['pipe', 'pipe', opts.log === 'inherit' ? 'inherit' : 'pipe'],
      env: { ...process.env, TNET_LOG_LEVEL: process.env.TNET_LOG_LEVEL ?? 'warn' },
    });
    const w = new LabWorker(child);
    child.stderr?.on('data', (d: Buffer) => {
      w.log = (w.log + d.toString()).slice(-8000);
    });
    // A worker that died is seen on 'exit' (with its log), not as an EPIPE thrown at the caller.
    child.stdin!.on('error', () => {});
    const ready = new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new TnetError('internal', `the lab's worker did not start within ${opts.startTimeoutMs ?? 60_000} ms${w.logTail()}`, { object: 'lab' })), opts.startTimeoutMs ?? 60_000);
      w.waiting.set(0, {
        resolve: () => (clearTimeout(timer), res()),
        reject: (e) => (clearTimeout(timer), rej(e)),
      });
    });
    createInterface({ input: child.stdout!, crlfDelay: Infinity }).on('line', (line) => w.onLine(line));
    w.holdCallerWhileBusy();
    try {
      await ready;
    } catch (e) {
      await w.stop();
      throw e;
    }
    return w;
  }

  private stopping = false;

  /**
   * The worker keeps the caller's event loop alive only while the caller waits for it: a test that
   * forgot destroy() still ends (and the lab with it, by the parent-death signal) instead of
   * hanging its runner.
   */
  holdCallerWhileBusy(): void {
    const busy = this.waiting.size > 0 || this.stopping;
    const handles = [this.child, this.child.stdin, this.child.stdout, this.child.stderr] as ({ ref?: () => void; unref?: () => void } | null)[];
    for (const h of handles) (busy ? h?.ref : h?.unref)?.call(h);
  }

  private logTail(): string {
    const t = this.log.trim();
    return t ? `:\n${t.split('\n').slice(-15).join('\n')}` : '';
  }

  private onLine(line: string): void {
    let a: Answer;
    try {
      a = JSON.parse(line) as Answer;
    } catch {
      this.log = (this.log + line + '\n').slice(-8000); // something wrote to stdout: keep it as log
      return;
    }
    if (a.ready) {
      this.waiting.get(0)?.resolve(undefined);
      this.waiting.delete(0);
      this.holdCallerWhileBusy();
      return;
    }
    const w = a.id === undefined ? undefined : this.waiting.get(a.id);
    if (!w) return;
    if (a.progress) {
      w.progress?.(a.progress);
      return;
    }
    this.waiting.delete(a.id!);
    this.holdCallerWhileBusy();
    if (a.ok) w.resolve(a.result);
    else w.reject(new TnetError(a.error?.code ?? 'internal', a.error?.message ?? 'the lab worker failed', { object: a.error?.object }));
  }

  request(req: Record<string, unknown>, progress?: CreateLabOptions['onProgress']): Promise<unknown> {
    if (this.gone) return Promise.reject(new TnetError('internal', `the lab's worker is gone${this.logTail()}`, { object: 'lab' }));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject, progress });
      this.holdCallerWhileBusy();
      this.child.stdin!.write(`${JSON.stringify({ ...req, id })}\n`);
    });
  }

  /** Closes the pipe (the worker exits, taking the lab along) and waits; SIGKILL if it lingers. */
  async stop(graceMs = 5000): Promise<void> {
    if (this.gone) return;
    this.stopping = true;
    this.holdCallerWhileBusy();
    this.child.stdin!.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }
}

class RunningLab implements Lab {
  private destroying: Promise<void> | undefined;

  constructor(
    private readonly worker: LabWorker,
    private current: LabSpec,
    private last: LabApplyResult,
  ) {}

  get name(): string {
    return this.current.name;
  }
  get spec(): LabSpec {
    return this.current;
  }
  get result(): LabApplyResult {
    return this.last;
  }
  get pid(): number {
    return this.worker.pid;
  }
  get closed(): boolean {
    return this.worker.closed;
  }

  /** `nsenter` into the worker's namespaces, then `ip netns exec` into the node's. */
  private async argv(node: string, cmd: string | readonly string[]): Promise<string[]> {
    if (!(node in this.current.nodes))
      throw new TnetError('not-found', `lab "${this.name}" has no node "${node}" (nodes: ${Object.keys(this.current.nodes).join(', ')})`, { object: `node "${node}"` });
    const netns = (await this.worker.request({ op: 'netns', node })) as string;
    const ns = netns.startsWith('/run/netns/') ? netns.slice('/run/netns/'.length) : netns;
    const p = this.worker.pid;
    const inner = typeof cmd === 'string' ? ['sh', '-c', cmd] : [...cmd];
    // The PID namespace to enter is the one unshare made for its child (the worker is its PID 1).
    return ['--target', String(p), '--mount', '--net', `--pid=/proc/${p}/ns/pid_for_children`, '--', 'ip', 'netns', 'exec', ns, ...inner];
  }

  async spawn(node: string, cmd: string | readonly string[], opts: Pick<SpawnOptions, 'stdio' | 'env'> = {}): Promise<ChildProcess> {
    this.assertOpen();
    return inGroup(spawn('nsenter', await this.argv(node, cmd), { stdio: opts.stdio ?? 'pipe', env: opts.env ?? process.env, detached: true }));
  }

  async exec(node: string, cmd: string | readonly string[], opts: ExecOptions = {}): Promise<ExecResult> {
    this.assertOpen();
    const args = await this.argv(node, cmd);
    return new Promise((resolve, reject) => {
      const child = inGroup(spawn('nsenter', args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: opts.env ?? process.env, detached: true }));
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      child.stdout!.on('data', (d: Buffer) => out.push(d));
      child.stderr!.on('data', (d: Buffer) => err.push(d));
      if (opts.input !== undefined) child.stdin!.end(opts.input);
      let timedOut = false;
      const timer = opts.timeoutMs
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs)
        : undefined;
      child.on('error', (e) => reject(new TnetError('unsupported', `cannot run nsenter: ${e.message}`, { object: `node "${node}"` })));
      child.on('close', (code, signal) => {
        if (timer) clearTimeout(timer);
        resolve({
          code: code ?? 128 + (signal ? (osSignals[signal] ?? 9) : 9),
          stdout: Buffer.concat(out).toString(),
          stderr: Buffer.concat(err).toString(),
          ...(timedOut ? { timedOut } : {}),
        });
      });
    });
  }

  async apply(spec: LabSpec | string, opts: { dryRun?: boolean } = {}): Promise<LabApplyResult> {
    this.assertOpen();
    const next = await loadSpec(spec);
    if (next.name !== this.name)
      throw new TnetError('invalid-argument', `lab "${this.name}" cannot become lab "${next.name}": a change keeps the lab's name`, { object: `lab "${this.name}"` });
    const r = (await this.worker.request({ op: 'apply', spec: next, dryRun: !!opts.dryRun })) as LabApplyResult;
    if (!opts.dryRun) {
      this.current = next;
      this.last = r;
    }
    return r;
  }

  async details(): Promise<LabDetails> {
    this.assertOpen();
    return (await this.worker.request({ op: 'details' })) as LabDetails;
  }

  async addresses(node: string): Promise<Record<string, string>> {
    const r = await this.exec(node, ['ip', '-j', '-4', 'addr', 'show']);
    if (r.code !== 0) throw new TnetError('internal', `ip addr in node "${node}" failed: ${r.stderr.trim()}`, { object: `node "${node}"` });
    const out: Record<string, string> = {};
    for (const l of JSON.parse(r.stdout) as { ifname: string; addr_info: { local: string; family: string }[] }[]) {
      const a = l.addr_info.find((x) => x.family === 'inet');
      if (a && l.ifname !== 'lo') out[l.ifname] = a.local;
      else if (a && l.ifname === 'lo' && a.local !== '127.0.0.1') out.lo = a.local;
    }
    return out;
  }

  destroy(): Promise<void> {
    this.destroying ??= (async () => {
      if (this.worker.closed) return;
      try {
        await this.worker.request({ op: 'destroy' });
      } catch {
        /* the worker went away meanwhile: the lab went with it */
      }
      await this.worker.stop();
    })();
    return this.destroying;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy();
  }

  private assertOpen(): void {
    if (this.worker.closed) throw new TnetError('not-found', `lab "${this.name}" is gone (destroyed, or its worker died)`, { object: `lab "${this.name}"` });
  }
}

/**
 * nsenter forks into the lab's PID namespace and waits: a signal to it would not reach the command.
 * So it leads a process group of its own (spawn's `detached`, which also keeps a terminal's Ctrl-C
 * away from the lab), and kill() signals that group: nsenter, the command and what it started.
 */
function inGroup(child: ChildProcess): ChildProcess {
  const kill = child.kill.bind(child);
  child.kill = (signal?: NodeJS.Signals | number) => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return kill(signal);
    try {
      process.kill(-child.pid, signal ?? 'SIGTERM');
      return true;
    } catch {
      return kill(signal);
    }
  };
  return child;
}

const osSignals: Partial<Record<NodeJS.Signals, number>> = { SIGKILL: 9, SIGTERM: 15, SIGINT: 2, SIGHUP: 1, SIGSEGV: 11, SIGABRT: 6, SIGPIPE: 13 };
