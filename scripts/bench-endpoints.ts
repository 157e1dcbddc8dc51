/**
 * Endpoint setup benchmark (issue 2, "Speed"): N lab sandboxes joined to one bridge network
 * (namespace, veth, address, routes, up), torn down again, timed against the peers in the same run.
 * A benchmark, not a test: it prints JSON lines on stdout and progress on stderr.
 *
 * Command (as root, from the repository root; the core runs from dist/, so build it first):
 *
 *   npx tsc -p tsconfig.json && \
 *   node --import ./node_modules/@tapjs/typescript/dist/esm/import.mjs scripts/bench-endpoints.ts [--n 300]
 *
 * Options: --n N (default 300), --batch B (concurrent variant, default 32), --settle S (seconds,
 * default $SETTLE or 2), --rounds R (repeat peers + tnet R times, each line tagged with its round;
 * the ratios use medians; default 1), --no-peers (tnet only; the ratios line is then omitted).
 *
 * What it does:
 *  1. The peers, from the host namespace (they build their own pk-* namespaces and touch nothing
 *     else): ../shared/peers/setup.sh, then endpoint-setup.sh cni-bridge N and ip-batch N.
 *  2. tnet, re-executed in its own network + mount namespace as the tests are
 *     (test/private-namespace.ts: private /run/netns, /etc/netns, /run/tnet, /run/docker), so the
 *     host is never touched; state lives in temp dirs. The DNS service runs as in the daemon (127.0.0.11 listeners
 *     and resolv.conf in every sandbox). Two variants on the same machine and N:
 *       sequential  one createSandbox / connect / deleteSandbox after the other (what the peers do:
 *                   one operation per endpoint; what `tnet connect` in a loop does through the daemon)
 *       concurrent  the same calls in Promise.all batches (what the daemon does with many clients,
 *                   and the lab builder's path)
 *     Each is verified (every endpoint has its IPv4, a sample is checked on eth0 with `ip`, s1 pings
 *     sN, nothing is left after teardown). Then `tnet daemon` is started 5 times: time from spawn
 *     until GET /ping answers on its control socket (median).
 *  3. JSON lines with the peers' keys, then one line of ratios against the targets (the headline
 *     is the sequential variant, timed the way the peers are).
 *
 * Timing follows the peers: setup_ms covers connect only (netns creation is netns_create_ms).
 * teardown_ms is deleteSandbox for all N: tnet deletes the namespace and lets the kernel take the
 * veth with it, which the kernel finishes asynchronously; that tail is reported separately as
 * teardown_kernel_ms (until the last host-side veth is gone) so the cheap path is not hidden.
 * cpu_stall_pct (every line) is the share of the phase's wall time in which some task waited for a
 * CPU (/proc/pressure/cpu): this machine is shared, and a high value means the number is inflated.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Controller as ControllerT } from '../libnetwork/controller.js';
import { batches, benchOutput, daemonAnswers, median, r2, run, sleep, stallMeter, type EndpointResult } from './bench-kit.js';

const { fail, progress, emit, runIsolated, prepareHost } = benchOutput('bench-endpoints');

type ControllerModule = typeof import('../libnetwork/controller.js');
type KernelModule = typeof import('../libnetwork/kernel/index.js');
type DnsModule = typeof import('../dns/service.js');

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PEERS = resolve(ROOT, '../shared/peers');
const SUBNET = '10.77.0.0/16'; // the peers use 10.88.0.0/16, in their own namespaces
const NET = 'bench';
const TARGETS = { vsCniBridge: 6, vsIpBatch: 1, teardownPerEndpointMs: 1.5, daemonPingMs: 300 };

const { values: opt } = parseArgs({
  options: {
    n: { type: 'string', default: '300' },
    batch: { type: 'string', default: '32' },
    settle: { type: 'string', default: process.env.SETTLE ?? '2' },
    'no-peers': { type: 'boolean', default: false },
    rounds: { type: 'string', default: '1' },
  },
});
const N = Number(opt.n);
const BATCH = Number(opt.batch);
const SETTLE_S = Number(opt.settle);
const ROUNDS = Number(opt.rounds);
if (!Number.isInteger(N) || N < 2) fail(`--n must be an integer >= 2 (got ${opt.n})`);
if (!Number.isInteger(BATCH) || BATCH < 1) fail(`--batch must be a positive integer (got ${opt.batch})`);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) fail(`--rounds must be a positive integer (got ${opt.rounds})`);

// ------------------------------------------------------------------ small helpers

/** Runs `fn` and returns its result with its stall % (see stallMeter). */
async function withStall<T>(fn: () => Promise<T> | T): Promise<[T, number | undefined]> {
  const stall = stallMeter();
  const out = await fn();
  return [out, stall()];
}


// ------------------------------------------------------------------ host side: peers, isolation, ratios

/** One peer run: its JSON line on stdout, its progress passed through to our stderr. */
async function runPeer(tool: string): Promise<EndpointResult> {
  progress(`peer ${tool} x${N}`);
  const [out, stall] = await withStall(() => run(join(PEERS, 'endpoint-setup.sh'), [tool, String(N)], { SETTLE: String(SETTLE_S) }));
  const line = out.trim().split('\n').pop()!;
  return { ...(JSON.parse(line) as EndpointResult), cpu_stall_pct: stall };
}


/** Median of `key` over the lines that match, across rounds. */
function med(lines: readonly EndpointResult[], match: (r: EndpointResult) => boolean, key: string): number {
  return median(lines.filter(match).map((r) => r[key] as number));
}

/** The closing line: peer / tnet per-endpoint ratios (medians over rounds) against the targets. */
function ratios(peers: EndpointResult[], tnet: EndpointResult[], daemonPingMs: number): object {
  const perEp = (tool: string, variant?: string) =>
    med(variant ? tnet : peers, (r) => r.tool === tool && r.variant === variant, 'per_endpoint_ms');
  const cni = perEp('cni-bridge');
  const ipb = perEp('ip-batch');
  const out: Record<string, unknown> = { ratios: true, n: N, rounds: ROUNDS };
  for (const v of ['sequential', 'concurrent']) {
    out[`${v}.cni_bridge_over_tnet`] = r2(cni / perEp('tnet', v));
    out[`${v}.ip_batch_over_tnet`] = r2(ipb / perEp('tnet', v));
    out[`${v}.teardown_per_endpoint_ms`] = med(tnet, (r) => r.variant === v, 'teardown_per_endpoint_ms');
  }
  out.daemon_ping_ms = daemonPingMs;
  out.loadavg_1m = r2(loadavg()[0]!);
  // The headline is the sequential variant: one operation per endpoint, as the peers are timed.
  const vsCni = out['sequential.cni_bridge_over_tnet'] as number;
  const vsIpb = out['sequential.ip_batch_over_tnet'] as number;
  const teardown = out['sequential.teardown_per_endpoint_ms'] as number;
  out.targets = {
    cni_bridge_over_tnet: `${vsCni} >= ${TARGETS.vsCniBridge}`,
    ip_batch_over_tnet: `${vsIpb} > ${TARGETS.vsIpBatch}`,
    teardown_per_endpoint_ms: `${teardown} <= ${TARGETS.teardownPerEndpointMs}`,
    daemon_ping_ms: `${daemonPingMs} <= ${TARGETS.daemonPingMs}`,
  };
  out.met = {
    cni_bridge: vsCni >= TARGETS.vsCniBridge,
    ip_batch: vsIpb > TARGETS.vsIpBatch,
    teardown: teardown <= TARGETS.teardownPerEndpointMs,
    daemon_ping: daemonPingMs <= TARGETS.daemonPingMs,
  };
  return out;
}

async function hostMain(): Promise<void> {
  prepareHost(ROOT, !opt['no-peers']);
  const peers: EndpointResult[] = [];
  const tnet: EndpointResult[] = [];
  const pings: number[] = [];
  // Peers and tnet alternate, round after round, so a busy spell on this shared machine hits both.
  for (let round = 1; round <= ROUNDS; round++) {
    const tag = ROUNDS > 1 ? { round } : {};
    if (!opt['no-peers']) {
      for (const tool of ['cni-bridge', 'ip-batch']) {
        const p = { ...(await runPeer(tool)), ...tag };
        peers.push(p);
        emit(p);
      }
    }
    for (const l of runIsolated()) {
      emit({ ...l, ...tag });
      if ('variant' in l) tnet.push(l as EndpointResult);
      if ('daemon_ping_ms' in l) pings.push((l as { daemon_ping_ms: number }).daemon_ping_ms);
    }
  }
  if (peers.length) emit(ratios(peers, tnet, median(pings)));
  if (tnet.some((t) => !t.verified)) fail('a tnet variant was not verified (see above)');
}

// ------------------------------------------------------------------ isolated side: tnet

let core: ControllerModule;
let kernel: KernelModule;
let dnsService: DnsModule;

async function loadCore(): Promise<void> {
  // Through a variable so the compiled code is loaded as is (no loader on the hot path), while
  // the types come from the sources above.
  const dist = join(ROOT, 'dist/libnetwork');
  core = (await import(join(dist, 'controller.js'))) as ControllerModule;
  kernel = (await import(join(dist, 'kernel/index.js'))) as KernelModule;
  dnsService = (await import(join(ROOT, 'dist/dns/service.js'))) as DnsModule;
}

/** The kernel frees deleted namespaces (and their veths) asynchronously: wait until it has. */
async function waitHostVethsGone(timeoutMs = 60_000): Promise<number> {
  const t0 = performance.now();
  const h = kernel.Rtnl.open();
  try {
    while (performance.now() - t0 < timeoutMs) {
      const veths = (await kernel.linkList(h)).filter((l) => l.kind === 'veth');
      if (veths.length === 0) return performance.now() - t0;
      await sleep(10);
    }
  } finally {
    h.close();
  }
  throw new Error(`host-side veths still present ${timeoutMs} ms after teardown`);
}

async function settle(why: string): Promise<void> {
  progress(`settle ${SETTLE_S}s (${why})`);
  await sleep(SETTLE_S * 1000);
}

/** Runs `fn(i)` for i = 1..N, sequentially or in batches, and returns the total wall time. */
async function timeAll(batch: number, fn: (i: number) => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await batches(N, batch, fn);
  return performance.now() - t0;
}

/** Every endpoint has a distinct IPv4 (from the controller), a sample has it on eth0, s1 pings sN. */
function verify(c: ControllerT): void {
  const netId = c.network(NET).id;
  const eps = c.endpoints().filter((e) => e.networkId === netId);
  if (eps.length !== N) throw new Error(`${eps.length} endpoints ready, expected ${N}`);
  const ipOf = new Map<string, string>();
  for (const e of eps) {
    if (!e.ipv4) throw new Error(`endpoint of ${e.name} has no IPv4`);
    ipOf.set(e.name, e.ipv4.toString());
  }
  if (new Set(ipOf.values()).size !== N) throw new Error('two endpoints share an IPv4 address');
  const sample = [...new Set([1, 2, Math.ceil(N / 2), N - 1, N])];
  for (const i of sample) {
    const want = `${ipOf.get(`s${i}`)}/16`;
    const got = run('ip', ['-n', `tn-s${i}`, '-4', '-o', 'addr', 'show', 'dev', 'eth0']);
    if (!got.includes(`inet ${want} `)) throw new Error(`tn-s${i} eth0 lacks ${want}: ${got.trim()}`);
  }
  run('ip', ['netns', 'exec', 'tn-s1', 'ping', '-c', '2', '-i', '0.2', '-W', '1', ipOf.get(`s${N}`)!]);
  progress(`verified: ${N} addresses, sample ${sample.join(',')} on eth0, ping s1 -> s${N} ok`);
}

/** What the run could have left in our private namespace: namespaces, links, nft tables. */
function leftovers(): string[] {
  const out: string[] = [];
  const ns = readdirSync('/run/netns');
  if (ns.length) out.push(`netns: ${ns.slice(0, 3).join(' ')}${ns.length > 3 ? ' ...' : ''}`);
  const links = run('ip', ['-o', 'link', 'show']).split('\n').filter((l) => l && !/^\d+: lo:/.test(l));
  if (links.length) out.push(`links: ${links.length}`);
  const tables = spawnSync('nft', ['list', 'tables'], { encoding: 'utf8' }).stdout?.trim();
  if (tables) out.push(`nft: ${tables}`);
  return out;
}

/** One variant: fresh state, N sandboxes connected, verified, torn down. */
async function variant(name: string, batch: number): Promise<EndpointResult> {
  const stateDir = mkdtempSync(join(tmpdir(), 'tnet-bench-'));
  const c = await core.Controller.open({ stateDir, scope: '' }); // tn-sN, as the daemon names them
  // As the daemon runs it: every sandbox gets its 127.0.0.11 listeners and resolv.conf as it joins.
  const dns = await dnsService.startDnsService(c, { upstreams: ['127.0.0.1:9'] });
  let verified = false;
  try {
    await c.createNetwork({ name: NET, subnet: SUBNET });
    await settle(`before ${name}`);

    const stall = stallMeter();
    progress(`${name}: ${N} sandboxes`);
    const nsMs = await timeAll(batch, (i) => c.createSandbox({ name: `s${i}` }));
    progress(`${name}: ${N} connects`);
    const setupMs = await timeAll(batch, (i) => c.connect(NET, `s${i}`));
    const setupStall = stall();

    try {
      verify(c);
      verified = true;
    } catch (e) {
      progress(`${name}: NOT verified: ${(e as Error).message}`);
    }

    progress(`${name}: teardown`);
    const tTeardown = performance.now();
    const teardownMs = await timeAll(batch, (i) => c.deleteSandbox(`s${i}`));
    const tNet = performance.now();
    await c.deleteNetwork(NET);
    const netDelMs = performance.now() - tNet;
    await waitHostVethsGone();
    const kernelMs = performance.now() - tTeardown;

    const left = leftovers();
    if (left.length) {
      progress(`${name}: left behind: ${left.join('; ')}`);
      verified = false;
    }
    return {
      tool: 'tnet',
      variant: name,
      n: N,
      setup_ms: r2(setupMs),
      per_endpoint_ms: r2(setupMs / N),
      teardown_ms: r2(teardownMs),
      netns_create_ms: r2(nsMs),
      verified,
      ...(batch > 1 ? { batch } : {}),
      netns_per_endpoint_ms: r2(nsMs / N),
      teardown_per_endpoint_ms: r2(teardownMs / N),
      teardown_kernel_ms: r2(kernelMs),
      network_delete_ms: r2(netDelMs),
      cpu_stall_pct: setupStall, // during sandbox creation + setup
    };
  } finally {
    await dns.close();
    c.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

/** SIGTERM to our own child by its pid; SIGKILL if it has not exited 5 s later. */
async function stopByPid(pid: number | undefined, gone: () => boolean, exited: Promise<void>): Promise<void> {
  if (pid === undefined || gone()) return;
  process.kill(pid, 'SIGTERM');
  const timer = setTimeout(() => {
    if (!gone()) process.kill(pid, 'SIGKILL');
  }, 5000);
  await exited;
  clearTimeout(timer);
}

/** Starts `tnet daemon` (compiled, plain node), times spawn -> first /ping answer, stops it by pid. */
async function daemonStart(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'tnet-bench-daemon-'));
  const sock = join(dir, 's.sock');
  const t0 = performance.now();
  const child = spawn(process.execPath, [join(ROOT, 'dist/cli/main.js'), 'daemon', '--state-dir', dir, '--socket', sock], {
    stdio: 'ignore',
  });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  try {
    for (;;) {
      if (await daemonAnswers(sock)) return performance.now() - t0;
      if (child.exitCode !== null) throw new Error(`tnet daemon exited ${child.exitCode} before answering`);
      if (performance.now() - t0 > 10_000) throw new Error('tnet daemon did not answer /ping within 10 s');
      await sleep(2);
    }
  } finally {
    await stopByPid(child.pid, () => child.exitCode !== null, exited);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function isolatedMain(): Promise<void> {
  await loadCore();
  emit(await variant('sequential', 1)); // each variant settles before it starts timing
  emit(await variant('concurrent', BATCH));

  await settle('before daemon starts');
  const starts: number[] = [];
  const [, stall] = await withStall(async () => {
    for (let i = 0; i < 5; i++) starts.push(await daemonStart());
  });
  progress(`daemon /ping after ${starts.map((s) => s.toFixed(0)).join(', ')} ms`);
  emit({ tool: 'tnet', measure: 'daemon_ping', daemon_ping_ms: r2(median(starts)), starts_ms: starts.map(r2), cpu_stall_pct: stall });
}

if (process.env.TNET_BENCH_ISOLATED === '1') await isolatedMain();
else await hostMain();
