/**
 * Macvlan endpoint setup benchmark (issue 11, "Speed"): N lab sandboxes joined to one macvlan
 * network (bridge mode) on a veth parent: the sub-interface born in the sandbox, address, routes,
 * up. Timed against the CNI macvlan plugin (+ host-local IPAM) in the same run.
 * A benchmark, not a test: it prints JSON lines on stdout and progress on stderr.
 *
 * Command (as root, from the repository root; the core runs from dist/, so build it first):
 *
 *   npx tsc -p tsconfig.json && \
 *   node --import ./node_modules/@tapjs/typescript/dist/esm/import.mjs scripts/bench-macvlan.ts [--n 300] [--rounds 3]
 *
 * Options: --n N (default 300), --settle S (seconds, default $SETTLE or 2), --rounds R (peer and
 * tnet alternate R times; the ratios use medians; default 1), --no-peers (tnet only), --batch B
 * (the concurrent variant's width, default 32).
 *
 * What it does:
 *  1. The peer, from the host namespace (it builds its own pk-* namespaces, with a veth parent, as
 *     the kernel here has no dummy links): ../shared/peers/endpoint-setup.sh cni-macvlan N.
 *  2. tnet, re-executed in its own network + mount namespace as the tests are (the host is never
 *     touched): a veth parent with its far end up, one macvlan network on it, N sandboxes made
 *     (timed apart, as the peer's `ip netns add`), then N connects one after the other (timed:
 *     setup_ms; then again, fresh, in batches of B at once: the concurrent variant), verified (every endpoint has its IPv4, a sample holds it on eth0 as a macvlan, s1
 *     pings sN), torn down (deleteSandbox each: teardown_ms), nothing left. The DNS service runs as
 *     in the daemon (127.0.0.11 listeners and resolv.conf in every sandbox): the peer does less.
 *  3. JSON lines with the peer's keys, then one line of ratios against the targets (>= 6x faster
 *     than CNI macvlan per endpoint, < 1 ms per endpoint).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Controller as ControllerT } from '../libnetwork/controller.js';
import { batches, benchOutput, median, r2, run, sleep, stallMeter, type EndpointResult } from './bench-kit.js';

const { fail, progress, emit, runIsolated, prepareHost } = benchOutput('bench-macvlan');

type ControllerModule = typeof import('../libnetwork/controller.js');
type DnsModule = typeof import('../dns/service.js');

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PEERS = resolve(ROOT, '../shared/peers');
const SUBNET = '10.77.0.0/16';
const NET = 'bench';
const PARENT = 'bench-ul0';
const TARGETS = { vsCniMacvlan: 6, perEndpointMs: 1 };

const { values: opt } = parseArgs({
  options: {
    n: { type: 'string', default: '300' },
    settle: { type: 'string', default: process.env.SETTLE ?? '2' },
    'no-peers': { type: 'boolean', default: false },
    rounds: { type: 'string', default: '1' },
    batch: { type: 'string', default: '32' },
  },
});
const N = Number(opt.n);
const SETTLE_S = Number(opt.settle);
const ROUNDS = Number(opt.rounds);
const BATCH = Number(opt.batch);
if (!Number.isInteger(BATCH) || BATCH < 1) fail(`--batch must be a positive integer (got ${opt.batch})`);
if (!Number.isInteger(N) || N < 2) fail(`--n must be an integer >= 2 (got ${opt.n})`);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) fail(`--rounds must be a positive integer (got ${opt.rounds})`);


// ------------------------------------------------------------------ host side: the peer, isolation, ratios

async function runPeer(): Promise<EndpointResult> {
  progress(`peer cni-macvlan x${N}`);
  const stall = stallMeter();
  const out = run(join(PEERS, 'endpoint-setup.sh'), ['cni-macvlan', String(N)], { SETTLE: String(SETTLE_S) });
  return { ...(JSON.parse(out.trim().split('\n').pop()!) as EndpointResult), cpu_stall_pct: stall() };
}


async function hostMain(): Promise<void> {
  prepareHost(ROOT, !opt['no-peers']);
  const peers: EndpointResult[] = [];
  const tnet: EndpointResult[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const tag = ROUNDS > 1 ? { round } : {};
    if (!opt['no-peers']) {
      const p = { ...(await runPeer()), ...tag };
      peers.push(p);
      emit(p);
    }
    for (const l of runIsolated<EndpointResult>()) {
      tnet.push(l);
      emit({ ...l, ...tag });
    }
  }
  const seq = tnet.filter((r) => r.variant === 'sequential');
  const conc = tnet.filter((r) => r.variant === 'concurrent');
  const tnetMs = median(seq.map((r) => r.per_endpoint_ms));
  const concMs = median(conc.map((r) => r.per_endpoint_ms));
  const out: Record<string, unknown> = { ratios: true, n: N, rounds: ROUNDS, tnet_per_endpoint_ms: tnetMs, tnet_concurrent_per_endpoint_ms: concMs };
  if (peers.length) {
    const peerMs = median(peers.map((r) => r.per_endpoint_ms));
    const ratio = r2(peerMs / tnetMs);
    const concRatio = r2(peerMs / concMs);
    // Per round (the peer and tnet back to back): on this shared machine a busy spell can hit one
    // round only, and the paired ratios show it.
    const paired = peers.map((p, i) => r2(p.per_endpoint_ms / (seq[i]?.per_endpoint_ms ?? NaN)));
    Object.assign(out, {
      cni_macvlan_per_endpoint_ms: peerMs,
      cni_macvlan_over_tnet: ratio,
      cni_macvlan_over_tnet_concurrent: concRatio,
      cni_macvlan_over_tnet_by_round: paired,
      teardown_cni_macvlan_over_tnet: r2(median(peers.map((r) => r.teardown_ms)) / median(seq.map((r) => r.teardown_ms))),
      targets: { cni_macvlan_over_tnet: `${ratio} >= ${TARGETS.vsCniMacvlan}`, per_endpoint_ms: `${tnetMs} < ${TARGETS.perEndpointMs}` },
      met: { cni_macvlan: ratio >= TARGETS.vsCniMacvlan, per_endpoint: tnetMs < TARGETS.perEndpointMs, concurrent_per_endpoint: concMs < TARGETS.perEndpointMs },
    });
  }
  out.loadavg_1m = r2(loadavg()[0]!);
  emit(out);
  if (tnet.some((t) => !t.verified)) fail('the tnet run was not verified (see above)');
}

// ------------------------------------------------------------------ isolated side: tnet

function verify(c: ControllerT): void {
  const netId = c.network(NET).id;
  const eps = c.endpoints().filter((e) => e.networkId === netId);
  if (eps.length !== N) throw new Error(`${eps.length} endpoints ready, expected ${N}`);
  const ipOf = new Map<string, string | undefined>(eps.map((e) => [e.name, e.ipv4?.toString()]));
  if ([...ipOf.values()].some((a) => !a) || new Set(ipOf.values()).size !== N) throw new Error('an endpoint lacks an IPv4, or two share one');
  const sample = [...new Set([1, 2, Math.ceil(N / 2), N])];
  for (const i of sample) {
    const got = run('ip', ['-n', `tn-s${i}`, '-d', '-o', 'addr', 'show', 'dev', 'eth0']);
    const link = run('ip', ['-n', `tn-s${i}`, '-d', '-o', 'link', 'show', 'dev', 'eth0']);
    if (!got.includes(`inet ${ipOf.get(`s${i}`)}/16 `) || !/macvlan mode bridge/.test(link)) throw new Error(`tn-s${i} eth0 is not the macvlan with its address: ${got}${link}`);
  }
  run('ip', ['netns', 'exec', 'tn-s1', 'ping', '-c', '2', '-i', '0.2', '-W', '1', ipOf.get(`s${N}`)!]);
  progress(`verified: ${N} addresses, sample ${sample.join(',')} on eth0 (macvlan), ping s1 -> s${N} ok`);
}

async function isolatedMain(): Promise<void> {
  const core = (await import(join(ROOT, 'dist/libnetwork/controller.js'))) as ControllerModule;
  const dnsService = (await import(join(ROOT, 'dist/dns/service.js'))) as DnsModule;
  run('sh', ['-c', `ip link set lo up && ip link add ${PARENT} type veth peer name ${PARENT}p && ip link set ${PARENT}p up && ip link set ${PARENT} up`]);
  try {
    for (const [variant, batch] of [['sequential', 1], ['concurrent', BATCH]] as const) await variantMain(core, dnsService, variant, batch);
  } finally {
    spawnSync('ip', ['link', 'del', PARENT]);
  }
}

/**
 * One variant on a fresh state: sequential (what the peer and `tnet connect` in a loop do) or
 * concurrent (the calls in batches, as a lab's LAN ports or many Docker containers starting).
 */
async function variantMain(core: ControllerModule, dnsService: DnsModule, variant: string, batch: number): Promise<void> {
  const stateDir = mkdtempSync(join(tmpdir(), 'tnet-bench-'));
  const c = await core.Controller.open({ stateDir, scope: '' });
  const dns = await dnsService.startDnsService(c, { upstreams: ['127.0.0.1:9'] });
  let verified = false;
  try {
    await c.createNetwork({ name: NET, driver: 'macvlan', subnet: SUBNET, options: { parent: PARENT } });
    progress(`${variant}: settle ${SETTLE_S}s`);
    await sleep(SETTLE_S * 1000);
    const stall = stallMeter();
    let t0 = performance.now();
    await batches(N, batch, (i) => c.createSandbox({ name: `s${i}` }));
    const nsMs = performance.now() - t0;
    t0 = performance.now();
    await batches(N, batch, (i) => c.connect(NET, `s${i}`));
    const setupMs = performance.now() - t0;
    const setupStall = stall();
    try {
      verify(c);
      verified = true;
    } catch (e) {
      progress(`NOT verified: ${(e as Error).message}`);
    }
    t0 = performance.now();
    await batches(N, batch, (i) => c.deleteSandbox(`s${i}`));
    const teardownMs = performance.now() - t0;
    await c.deleteNetwork(NET);
    const left = readdirSync('/run/netns');
    if (left.length) {
      progress(`left behind: ${left.length} namespaces`);
      verified = false;
    }
    emit({
      tool: 'tnet-macvlan', variant, batch, n: N, setup_ms: r2(setupMs), per_endpoint_ms: r2(setupMs / N), teardown_ms: r2(teardownMs),
      netns_create_ms: r2(nsMs), verified, teardown_per_endpoint_ms: r2(teardownMs / N), cpu_stall_pct: setupStall,
    });
  } finally {
    await dns.close();
    c.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
}

if (process.env.TNET_BENCH_ISOLATED === '1') await isolatedMain();
else await hostMain();
