/**
 * Several "hosts" on one machine, for multi-host tests: each host is a network + mount + UTS
 * namespace of its own inside the test's private namespace (isolate() gave the test file one),
 * held by a long-lived process so that the host outlives its daemon (a kill -9 and a restart of
 * the daemon keep the host's sandboxes, as a real machine does).
 *
 *   test namespace:  bridge ul0 10.77.0.1/24, fd77::1/64  --  etcd (TLS client auth) on 10.77.0.1
 *     ulh-a  ---- eth0 10.77.0.2/24, fd77::2/64   host a: /run/netns, /etc/netns, /run/tnet,
 *     ulh-b  ---- eth0 10.77.0.3/24, fd77::3/64           /run/docker private; its own tnet daemon
 *     ...
 *
 * Each host's daemon runs `nsenter -t <holder> -m -n -u node dist/cli/main.js daemon` with its own
 * state directory and control socket (under the test's temporary directory, so the test process
 * can reach the socket too: a unix socket path crosses network namespaces), `--store` pointing at
 * the etcd above and `--advertise-addr` its underlay address. Every process is stopped by its pid.
 *
 * Usage:
 *   const cluster = await startCluster(t, { hosts: 2 });
 *   const [a, b] = cluster.hosts;
 *   await a.tnet('network', 'create', '-d', 'overlay', 'ov');
 *   ...
 *   await cluster.finish(t); // asserts nothing is left on any host, in etcd's peer table, or here
 */
import { type ChildProcess, execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import { Client } from '../cli/client.js';
import { type Etcd, startEtcd } from './etcd-harness.js';
import { assertClean as assertTestNamespaceClean, sh, until } from './integration/harness.js';

/** The command under test, built by `npx tsc -p tsconfig.json` (a daemon start from source is seconds slower). */
export const MAIN = join(import.meta.dirname, '../dist/cli/main.js');
export const UNDERLAY = { bridge: 'ul0', gateway: '10.77.0.1', prefix: '10.77.0.', gateway6: 'fd77::1', prefix6: 'fd77::' } as const;
/** Where tnet keeps runtime state: private per host, like test/private-namespace.ts does for a test. */
const PRIVATE_DIRS = ['/run/netns', '/etc/netns', '/run/tnet', '/run/docker'];
/** etcd's keys of the overlay peer table (libnetwork/ipam/global.ts KEYS.allPeers). */
export const PEERS_PREFIX = '/tnet/v1/peers/';

export interface Result {
  readonly code: number;
  readonly out: string;
  readonly err: string;
}

export interface Daemon {
  readonly pid: number;
  /** Settles when the process exits: its exit code, or the signal that ended it. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  running(): boolean;
}

export interface StartDaemonOptions {
  /** More daemon arguments, after the harness's. */
  readonly args?: readonly string[];
  /** false: return once started, without waiting for ready (to see it refuse to start). */
  readonly wait?: boolean;
  /** --advertise-addr (IP or interface name); default the host's underlay IP; null: none (the daemon's default). */
  readonly advertise?: string | null;
  /** How the store settings reach the daemon: flags (default) or TNET_STORE... environment variables. */
  readonly storeVia?: 'flags' | 'env';
}

export interface Host {
  /** a, b, c...: its state directory's name */
  readonly name: string;
  /** host-a, host-b...: its hostname (own UTS namespace), what the daemon names the host by */
  readonly hostname: string;
  /** Its underlay address (eth0), 10.77.0.N, and fd77::N. */
  readonly ip: string;
  readonly ip6: string;
  readonly stateDir: string;
  readonly socket: string;
  /** The holder process: its namespaces are the host's. */
  readonly holderPid: number;
  /** The control API of its daemon, from the test process (no CLI start per call). */
  readonly api: Client;
  /**
   * The `tnet` command on this host (TNET_SOCKET, TNET_STATE_DIR set to the host's). While the
   * host's daemon is not running this returns code 69 without running the command, because the
   * command would start a daemon of its own (without the store flags, and not stopped by pid).
   */
  tnet(...args: string[]): Promise<Result>;
  /** A shell command in the host's namespaces, e.g. `ip -d link show`. */
  exec(cmd: string): Promise<Result>;
  /** A shell command inside a sandbox of this host (its tnet name: namespace tn-NAME). */
  sandboxExec(sandbox: string, cmd: string): Promise<Result>;
  /**
   * Starts the host's daemon (the store flags unless the cluster runs without a store, `args`
   * after them) and waits until /ping says ready; `wait: false` returns at once (e.g. to see it
   * refuse to start). Throws with the log's tail when it exits first.
   */
  startDaemon(opts?: StartDaemonOptions): Promise<Daemon>;
  /** kill -9 of the daemon, by its pid; waits for the exit. */
  killDaemon(): Promise<void>;
  /** SIGTERM, by pid; waits for the exit (SIGKILL after 10 s); returns the exit code. */
  stopDaemon(): Promise<number | null>;
  daemonPid(): number | undefined;
  /** The last lines of the daemon's log (all its starts). */
  log(lines?: number): string;
  /** What tnet could have left on this host: links but lo and eth0, namespaces, nft tables. */
  leftovers(): Promise<{ links: string[]; netns: string[]; tables: string[] }>;
}

export interface Cluster {
  /** undefined when the cluster runs without a store (see StartOptions.store). */
  readonly etcd: Etcd | undefined;
  readonly hosts: Host[];
  /** The daemon flags of the store, as every host passes them (without --advertise-addr). */
  readonly storeArgs: readonly string[];
  /** A new host on the underlay, its daemon started (unless `daemon: false`). */
  addHost(opts?: { daemon?: boolean }): Promise<Host>;
  /** etcd's keys under a prefix (keys only), e.g. PEERS_PREFIX. */
  keys(prefix: string): string[];
  /**
   * At the end of a test: etcd's peer table is empty, every daemon stops cleanly (SIGTERM), no
   * host keeps a link, namespace or nft table tnet made, then everything is stopped by pid and the
   * test's own namespace is clean too.
   */
  finish(tt: Test): Promise<void>;
}

export interface StartOptions {
  hosts?: number;
  /** --store-ttl, seconds (default 2: chaos tests wait TTL + 1 s for a dead host's peers to go). */
  ttl?: number;
  /**
   * Run the daemons against etcd (default: when `tnet daemon --help` knows --store). false: no
   * etcd, plain daemons (e.g. to check what is refused without a store).
   */
  store?: boolean;
  /** Extra daemon arguments for every host. */
  daemonArgs?: readonly string[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * A command, asynchronously (hosts work in parallel); never throws for a non-zero exit.
 * TNET_MH_TRACE=1 prints each command with its duration and exit code (where a slow test spends its time).
 */
export function run(cmd: string, args: readonly string[], opts: { env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<Result> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    execFile(cmd, args, { encoding: 'utf8', maxBuffer: 32 << 20, timeout: opts.timeout ?? 60_000, env: opts.env ?? process.env }, (e, stdout, stderr) => {
      const x = e as (Error & { code?: number | string }) | null;
      const code = x ? (typeof x.code === 'number' ? x.code : 1) : 0;
      if (process.env.TNET_MH_TRACE) process.stderr.write(`# ${Date.now() - t0} ms, exit ${code}: ${args.filter((a) => !a.startsWith('/') && a !== '--').slice(5).join(' ').slice(0, 160)}\n`);
      resolve({ code, out: stdout, err: stderr || (x && typeof x.code !== 'number' ? x.message : '') });
    });
  });
}

/** Whether the built daemon knows the store flags (the overlay's). */
export function daemonKnowsStore(): boolean {
  if (!existsSync(MAIN)) return false;
  const r = spawnSync(process.execPath, [MAIN, 'daemon', '--help'], { encoding: 'utf8', timeout: 30_000 });
  return /--store\b/.test(r.stdout ?? '');
}

/** The inode of a process's network namespace, to find every process living in it. */
function netnsOfPid(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/ns/net`);
  } catch {
    return undefined;
  }
}

function pidsInNetns(ns: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .map(Number)
    .filter((p) => p !== process.pid && netnsOfPid(p) === ns);
}

async function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (child.exitCode === null && child.signalCode === null && Date.now() < end) await sleep(20);
  return child.exitCode !== null || child.signalCode !== null;
}

export async function startCluster(tt: Test, opts: StartOptions = {}): Promise<Cluster> {
  const ttl = opts.ttl ?? 2;
  if (!existsSync(MAIN)) throw new Error(`${MAIN} is missing: build with \`npx tsc -p tsconfig.json\``);
  const useStore = opts.store ?? daemonKnowsStore();
  const dir = mkdtempSync(join(tmpdir(), 'tnet-mh-'));
  const hosts: Host[] = [];
  const holders: ChildProcess[] = [];
  let etcd: Etcd | undefined;
  let finished = false;

  const up = sh(
    `ip link add ${UNDERLAY.bridge} type bridge && ip addr add ${UNDERLAY.gateway}/24 dev ${UNDERLAY.bridge} && ` +
      `ip addr add ${UNDERLAY.gateway6}/64 dev ${UNDERLAY.bridge} nodad && ip link set ${UNDERLAY.bridge} up`,
  );
  if (up.code !== 0) throw new Error(`underlay bridge ${UNDERLAY.bridge}: ${up.out}`);

  // Everything this harness started, by pid, in reverse: daemons (and anything else found in a
  // host's namespace), holders, etcd, the underlay. Runs at finish() and, if the test failed
  // before it, at teardown.
  const stopAll = async () => {
    for (const h of hosts) {
      const d = h.daemonPid();
      if (d !== undefined) await h.killDaemon();
    }
    for (const holder of holders) {
      const ns = holder.pid !== undefined ? netnsOfPid(holder.pid) : undefined;
      if (ns) for (const p of pidsInNetns(ns)) if (p !== holder.pid) try { process.kill(p, 'SIGKILL'); } catch { /* gone */ }
      if (holder.exitCode === null && holder.signalCode === null) holder.kill('SIGKILL');
      await waitExit(holder, 5000);
    }
    await etcd?.destroy();
    etcd = undefined;
    sh(`ip link del ${UNDERLAY.bridge} 2>/dev/null`);
    rmSync(dir, { recursive: true, force: true });
  };
  tt.teardown(async () => {
    if (!finished) await stopAll();
  });

  let storeArgs: string[] = [];
  let storeEnv: Record<string, string> = {};
  const makeHost = async (index: number): Promise<Host> => {
    const name = String.fromCharCode(97 + index); // a, b, c...
    const n = index + 2;
    const ip = `${UNDERLAY.prefix}${n}`;
    const ip6 = `${UNDERLAY.prefix6}${n}`;
    const stateDir = join(dir, name);
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const socket = join(stateDir, 'tnet.sock');
    const logFile = join(stateDir, 'daemon.log');
    // The holder: its own network, mount and UTS namespaces, private runtime directories; it
    // sleeps until it is killed, so the namespaces stay through daemon restarts.
    const setup = [
      'mount --make-rprivate /',
      ...PRIVATE_DIRS.map((d) => `mkdir -p ${d} && mount -t tmpfs tnet-host-${name} ${d}`),
      // sysfs shows the links of the namespace that mounted it: without this, /sys/class/net
      // here would be the machine's own (its eth0, its MTU), as `ip netns exec` knows
      'mount -t sysfs tnet-host-sys /sys',
      `hostname host-${name}`,
      'ip link set lo up',
      'exec sleep infinity',
    ].join(' && ');
    const holder = spawn('unshare', ['--net', '--mount', '--uts', '--', 'sh', '-c', setup], { stdio: ['ignore', 'ignore', 'pipe'] });
    holders.push(holder);
    let holderErr = '';
    holder.stderr!.on('data', (c: Buffer) => (holderErr += c.toString()));
    const pid = holder.pid!;
    if (!(await until(() => { try { return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === 'sleep'; } catch { return false; } }, 10_000))) {
      throw new Error(`host ${name}: the namespace holder did not start: ${holderErr}`);
    }
    const nsenter = ['-t', String(pid), '-m', '-n', '-u', '--'];
    const exec = (cmd: string) => run('nsenter', [...nsenter, 'sh', '-c', cmd]);
    const wire = sh(
      `ip link add ulh-${name} type veth peer name eth0 netns ${pid} && ip link set ulh-${name} master ${UNDERLAY.bridge} && ip link set ulh-${name} up`,
    );
    if (wire.code !== 0) throw new Error(`host ${name}: underlay veth: ${wire.out}`);
    const cfg = await exec(`ip addr add ${ip}/24 dev eth0 && ip addr add ${ip6}/64 dev eth0 nodad && ip link set eth0 up`);
    if (cfg.code !== 0) throw new Error(`host ${name}: underlay address: ${cfg.out}${cfg.err}`);

    const api = new Client(socket);
    let daemon: (Daemon & { child: ChildProcess }) | undefined;
    const running = () => daemon !== undefined && daemon.running();
    const tail = (lines = 30) => {
      try {
        return readFileSync(logFile, 'utf8').split('\n').slice(-lines - 1).join('\n');
      } catch {
        return '(no log)';
      }
    };
    const host: Host = {
      name,
      hostname: `host-${name}`,
      ip,
      ip6,
      stateDir,
      socket,
      holderPid: pid,
      api,
      async tnet(...args) {
        if (!running()) return { code: 69, out: '', err: `(multihost harness) the daemon of host ${name} is not running` };
        return run('nsenter', [...nsenter, process.execPath, MAIN, ...args], {
          env: { ...process.env, TNET_SOCKET: socket, TNET_STATE_DIR: stateDir },
        });
      },
      exec,
      sandboxExec: (sandbox, cmd) => exec(`ip netns exec tn-${sandbox} sh -c ${shq(cmd)}`),
      async startDaemon(o = {}) {
        if (running()) throw new Error(`host ${name}: its daemon is already running (pid ${daemon!.pid})`);
        const advertise = o.advertise === undefined ? ip : o.advertise;
        const viaEnv = o.storeVia === 'env';
        const args = [
          'daemon', '--state-dir', stateDir, '--socket', socket, '--no-docker-plugin',
          ...(viaEnv ? [] : storeArgs), ...(useStore && advertise !== null && !viaEnv ? ['--advertise-addr', advertise] : []),
          ...(opts.daemonArgs ?? []), ...(o.args ?? []),
        ];
        const env: NodeJS.ProcessEnv = { ...process.env };
        for (const k of Object.keys(env)) if (k.startsWith('TNET_STORE') || k === 'TNET_ADVERTISE_ADDR') delete env[k];
        if (viaEnv) Object.assign(env, storeEnv, useStore && advertise !== null ? { TNET_ADVERTISE_ADDR: advertise } : {});
        const out = openSync(logFile, 'a');
        const child = spawn('nsenter', [...nsenter, process.execPath, MAIN, ...args], {
          stdio: ['ignore', out, out],
          // info into the host's own log file (not the test's output): what a failing test shows
          env: { ...env, TNET_LOG_LEVEL: process.env.TNET_MH_LOG_LEVEL ?? 'info' },
        });
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.once('exit', (code, signal) => res({ code, signal })));
        const d = { child, pid: child.pid!, exited, running: () => child.exitCode === null && child.signalCode === null };
        daemon = d;
        if (o.wait === false) return d;
        const t0 = Date.now();
        const end = t0 + 30_000;
        while (Date.now() < end && d.running()) {
          const ready = await api.call<{ ready?: boolean }>('GET', '/ping').then((p) => p.ready === true, () => false);
          if (ready) {
            if (process.env.TNET_MH_TRACE) process.stderr.write(`# ${Date.now() - t0} ms: host ${name}'s daemon ready\n`);
            return d;
          }
          await sleep(50);
        }
        const status = d.running() ? 'did not get ready within 30 s' : `exited (${child.exitCode ?? child.signalCode})`;
        if (d.running()) {
          child.kill('SIGKILL');
          await waitExit(child, 5000);
        }
        throw new Error(`host ${name}: the daemon ${status}:\n${tail()}`);
      },
      async killDaemon() {
        const d = daemon;
        if (!d || !d.running()) return;
        d.child.kill('SIGKILL');
        await waitExit(d.child, 10_000);
      },
      async stopDaemon() {
        const d = daemon;
        if (!d) return null;
        if (d.running()) {
          d.child.kill('SIGTERM');
          if (!(await waitExit(d.child, 10_000))) {
            d.child.kill('SIGKILL');
            await waitExit(d.child, 5000);
          }
        }
        return d.child.exitCode;
      },
      daemonPid: () => (running() ? daemon!.pid : undefined),
      log: tail,
      async leftovers() {
        const links = (await exec("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1")).out.split('\n').filter((l) => l && l !== 'lo' && l !== 'eth0');
        const netns = (await exec('ip netns list | cut -d" " -f1')).out.split('\n').filter(Boolean);
        const tables = (await exec('nft list tables')).out.split('\n').filter((x) => x.trim());
        return { links, netns, tables };
      },
    };
    return host;
  };

  // etcd starts while the hosts are made (its certificates and health wait take a while); the
  // daemons start once both are there.
  const hostsMade = Promise.all(Array.from({ length: opts.hosts ?? 2 }, (_, i) => makeHost(i)));
  hostsMade.catch(() => undefined); // awaited below
  if (useStore) {
    try {
      etcd = await startEtcd({ host: UNDERLAY.gateway });
    } catch (e) {
      await hostsMade.catch(() => undefined); // every holder recorded before the teardown stops them
      throw e;
    }
    storeArgs = ['--store', etcd.url, '--store-ca', etcd.tls.ca, '--store-cert', etcd.tls.cert, '--store-key', etcd.tls.key, '--store-ttl', String(ttl)];
    storeEnv = { TNET_STORE: etcd.url, TNET_STORE_CA: etcd.tls.ca, TNET_STORE_CERT: etcd.tls.cert, TNET_STORE_KEY: etcd.tls.key, TNET_STORE_TTL: String(ttl) };
  }

  const keys = (prefix: string) => {
    if (!etcd) return [];
    return etcd.ctl('get', '--prefix', prefix, '--keys-only').split('\n').filter(Boolean);
  };

  const cluster: Cluster = {
    get etcd() {
      return etcd;
    },
    hosts,
    storeArgs,
    async addHost(o = {}) {
      const h = await makeHost(hosts.length);
      hosts.push(h);
      if (o.daemon !== false) await h.startDaemon();
      return h;
    },
    keys,
    async finish(t2) {
      if (etcd) {
        const peers = keys(PEERS_PREFIX);
        t2.same(peers, [], `etcd's peer table (${PEERS_PREFIX}) is empty`);
      }
      for (const h of hosts) {
        if (h.daemonPid() === undefined) continue;
        const code = await h.stopDaemon();
        if (code !== 0) t2.fail(`host ${h.name}: the daemon stopped with exit code ${code} on SIGTERM:\n${h.log()}`);
      }
      const empty = { links: [], netns: [], tables: [] };
      for (const h of hosts) {
        let left = await h.leftovers();
        const end = Date.now() + 5000; // a deleted namespace's links go asynchronously
        while (JSON.stringify(left) !== JSON.stringify(empty) && Date.now() < end) {
          await sleep(100);
          left = await h.leftovers();
        }
        t2.same(left, empty, `host ${h.name}: nothing tnet made is left behind`);
      }
      finished = true;
      await stopAll();
      await assertTestNamespaceClean(t2, 'the test namespace: nothing left (underlay, hosts, etcd gone)');
    },
  };
  // Hosts in parallel: a daemon start is mostly waiting on Node's start and the store.
  const made = await hostsMade;
  hosts.push(...made);
  await Promise.all(made.map((h) => h.startDaemon()));
  return cluster;
}

// ---- Overlay helpers: what a host's kernel and daemon say about an overlay network ----

export type NetView = { id: string; name: string; driver: string; scope?: string; options?: Record<string, string>; ipv4?: { subnet: string }; ipv6?: { subnet: string }; endpoints: unknown[] } & Record<string, unknown>;
export type EpView = { network?: string; ifname: string; ipv4?: string; ipv6?: string; mac?: string };
export type SbView = { name: string; netns: string; endpoints: EpView[] };

/** Polls `fn` every 100 ms up to `ms`; the milliseconds it took, or undefined when it never held. */
export async function within(ms: number, fn: () => Promise<boolean> | boolean): Promise<number | undefined> {
  const t0 = Date.now();
  for (;;) {
    if (await Promise.resolve().then(fn).catch(() => false)) return Date.now() - t0;
    if (Date.now() - t0 > ms) return undefined;
    await sleep(100);
  }
}

/** The VNI a network view shows (top level, driver details or options), as a number. */
export function vniOf(n: NetView | undefined): number | undefined {
  if (!n) return undefined;
  const raw = n['vni'] ?? n.options?.['vni'] ?? n.options?.['com.docker.network.driver.overlay.vxlanid_list'] ?? /"vni"\s*:\s*"?(\d+)/.exec(JSON.stringify(n))?.[1];
  return raw === undefined ? undefined : Number(raw);
}

/** The networks a host's daemon knows (its control API), or [] while it does not answer. */
export async function networks(h: Host): Promise<NetView[]> {
  return h.api.call<NetView[]>('GET', '/networks').catch(() => []);
}

export async function sandbox(h: Host, name: string): Promise<SbView> {
  return h.api.call<SbView>('GET', `/sandboxes/${encodeURIComponent(name)}`);
}

/** The endpoint of a sandbox on a network. */
export async function endpointOf(h: Host, sb: string, net: string): Promise<EpView> {
  const ep = (await sandbox(h, sb)).endpoints.find((e) => e.network === net);
  if (!ep) throw new Error(`host ${h.name}: sandbox ${sb} has no endpoint on ${net}`);
  return ep;
}

export type VxlanLink = { ifname: string; mtu: number; master?: string; info: { id: number; local?: string; port?: number; learning?: boolean; proxy?: boolean } };

/** The host's VXLAN links (ip -d -j link). */
export async function vxlans(h: Host): Promise<VxlanLink[]> {
  const r = await h.exec('ip -d -j link show type vxlan');
  const links = JSON.parse(r.out || '[]') as { ifname: string; mtu: number; master?: string; linkinfo?: { info_data?: VxlanLink['info'] } }[];
  return links.map((l) => ({ ifname: l.ifname, mtu: l.mtu, master: l.master, info: l.linkinfo?.info_data ?? ({} as VxlanLink['info']) }));
}

/** The static FDB entries of a VXLAN link: MAC -> remote VTEP. */
export async function fdb(h: Host, dev: string): Promise<{ mac: string; dst?: string; state?: string; flags?: string[] }[]> {
  const r = await h.exec(`bridge -j fdb show dev ${dev}`);
  return (JSON.parse(r.out || '[]') as { mac: string; dst?: string; state?: string; flags?: string[] }[]).filter((e) => e.dst !== undefined);
}

/** The neighbour entries on a link: IP -> MAC. */
export async function neighs(h: Host, dev: string): Promise<{ dst: string; lladdr?: string; state?: string[] }[]> {
  const r = await h.exec(`ip -j neigh show dev ${dev}`); // both families
  return JSON.parse(r.out || '[]') as { dst: string; lladdr?: string; state?: string[] }[];
}

/** Whether a host has programmed a remote endpoint: its MAC in the VXLAN FDB towards `vtep`, its IP in the neighbours. */
export async function programmed(h: Host, dev: string, peer: { mac: string; ip: string; vtep: string }): Promise<{ fdb: number; neigh: number }> {
  const f = (await fdb(h, dev)).filter((e) => e.mac === peer.mac && e.dst === peer.vtep).length;
  const n = (await neighs(h, dev)).filter((e) => e.dst === peer.ip && e.lladdr === peer.mac).length;
  return { fdb: f, neigh: n };
}

/** ping from a sandbox; true when every packet came back. */
export async function pings(h: Host, sb: string, ip: string, count = 1): Promise<boolean> {
  return (await h.sandboxExec(sb, `ping -c ${count} -W 2 ${ip}`)).code === 0;
}
