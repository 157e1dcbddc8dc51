/**
 * Lab benchmark (issue 9, "Speed"): create and destroy three labs, timed against the ip-batch floor
 * of the peer kit for the same number of endpoints, in the same run.
 * A benchmark, not a test: it prints JSON lines on stdout and progress on stderr.
 *
 * Command (as root, from the repository root; the core runs from dist/, so build it first):
 *
 *   npx tsc -p tsconfig.json && \
 *   node --import ./node_modules/@tapjs/typescript/dist/esm/import.mjs scripts/bench-labs.ts [--rounds 3]
 *
 * Options: --rounds R (default 1; medians over rounds), --settle S (seconds, default $SETTLE or 2),
 * --only lan|leaf-spine|ring (repeatable), --no-peers (tnet only), --no-cli (in-process only),
 * --no-dns (without the DNS service the daemon runs), --ring N / --lan N (sizes, for profiling).
 *
 * The labs:
 *   lan         300 nodes on one LAN (a bridge network, addresses from its subnet): 300 links
 *   leaf-spine  8 spines x 32 leaves, every leaf to every spine, auto-numbered /31s: 256 links
 *   ring        1000 nodes, each linked to the next, auto-numbered /31s: 1000 links
 *
 * What it does:
 *  1. The peer, from the host namespace: ../shared/peers/endpoint-setup.sh ip-batch N for N = 300,
 *     256 and 1000 (N namespaces, N veths on one bridge, addresses and routes, one `ip -batch` per
 *     namespace: iproute2's floor).
 *  2. tnet, re-executed in its own network + mount namespace (test/private-namespace.ts), two ways:
 *       controller  Controller.applyLab / destroyLab in-process (the engine alone), with the DNS
 *                   service as the daemon runs it (127.0.0.11 in every node), unless --no-dns
 *       cli         `tnet create FILE` / `tnet destroy NAME` against a `tnet daemon` started here:
 *                   what a user waits for, the CLI's own start included
 *     After each create, before anything else: every node's namespace exists, and a sample of
 *     links (20, evenly spread) carries a ping across at once (no retry): "every node reachable
 *     when create returns". After each destroy: nothing is left (namespaces, links);
 *     destroy_kernel_ms is until the kernel has freed the last link.
 *  3. One closing line: medians, ratios (ip-batch per endpoint / tnet per link: >= 1 means at or
 *     below the floor), and the targets (ring created < 5 s, destroyed < 3 s).
 *
 * ip-batch's setup_ms excludes making its namespaces (netns_create_ms); a lab create includes
 * them, so the floor is given both ways: per endpoint without namespaces (the peers' number) and
 * with them (setup + netns create: the same work as a lab's create). cpu_stall_pct is the share of
 * the phase's wall time in which some task waited for a CPU: this machine is shared.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import type { Controller as ControllerT } from '../libnetwork/controller.js';
import type { LabApplyResult } from '../libnetwork/lab/apply.js';
import type { LabSpec } from '../libnetwork/lab/topology.js';
import { benchOutput, daemonAnswers, median, r2, run, sleep, stallMeter, type EndpointResult } from './bench-kit.js';

const { fail, progress, emit, runIsolated, prepareHost } = benchOutput('bench-labs');

type ControllerModule = typeof import('../libnetwork/controller.js');
type DnsModule = typeof import('../dns/service.js');

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const PEERS = resolve(ROOT, '../shared/peers');
const MAIN = join(ROOT, 'dist/cli/main.js');
const TARGETS = { ringCreateMs: 5000, ringDestroyMs: 3000, ipBatchOverTnet: 1 };

const { values: opt } = parseArgs({
  options: {
    rounds: { type: 'string', default: '1' },
    settle: { type: 'string', default: process.env.SETTLE ?? '2' },
    only: { type: 'string', multiple: true },
    'no-peers': { type: 'boolean', default: false },
    'no-cli': { type: 'boolean', default: false },
    'no-dns': { type: 'boolean', default: false },
    ring: { type: 'string', default: '1000' },
    lan: { type: 'string', default: '300' },
  },
});
const ROUNDS = Number(opt.rounds);
const SETTLE_S = Number(opt.settle);
const RING = Number(opt.ring);
const LAN = Number(opt.lan);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) fail(`--rounds must be a positive integer (got ${opt.rounds})`);
if (!Number.isInteger(RING) || RING < 3) fail(`--ring must be an integer >= 3 (got ${opt.ring})`);
if (!Number.isInteger(LAN) || LAN < 2 || LAN > 1000) fail(`--lan must be an integer in 2..1000 (got ${opt.lan})`);

// ------------------------------------------------------------------ the labs

interface Topology {
  name: string;
  spec: LabSpec;
  links: number;
  nodes: number;
}

function lanLab(n: number): Topology {
  const nodes: LabSpec['nodes'] = {};
  const links: LabSpec['links'] = [];
  for (let i = 1; i <= n; i++) {
    nodes[`n${i}`] = {};
    links.push({ endpoints: [`n${i}:eth0`, 'lan0'] });
  }
  return { name: 'lan', spec: { name: 'blan', networks: { lan0: { subnet: '10.60.0.0/22' } }, nodes, links }, links: n, nodes: n };
}

function leafSpineLab(spines: number, leaves: number): Topology {
  const nodes: LabSpec['nodes'] = {};
  const links: LabSpec['links'] = [];
  for (let s = 1; s <= spines; s++) nodes[`s${s}`] = {};
  for (let l = 1; l <= leaves; l++) nodes[`l${l}`] = {};
  for (let s = 1; s <= spines; s++) for (let l = 1; l <= leaves; l++) links.push({ endpoints: [`s${s}:eth${l}`, `l${l}:eth${s}`] });
  return { name: 'leaf-spine', spec: { name: 'bfabric', networks: {}, nodes, links }, links: links.length, nodes: spines + leaves };
}

function ringLab(n: number): Topology {
  const nodes: LabSpec['nodes'] = {};
  const links: LabSpec['links'] = [];
  for (let i = 1; i <= n; i++) {
    nodes[`n${i}`] = {};
    links.push({ endpoints: [`n${i}:eth1`, `n${(i % n) + 1}:eth2`] });
  }
  return { name: 'ring', spec: { name: 'bring', networks: {}, nodes, links }, links: n, nodes: n };
}

const ALL = () => [lanLab(LAN), leafSpineLab(8, 32), ringLab(RING)];
const selected = () => ALL().filter((t) => !opt.only?.length || opt.only.includes(t.name));

// ------------------------------------------------------------------ small helpers

/** Runs a command, resolving with its exit code (for pings in parallel). */
function runAsync(cmd: string, args: string[]): Promise<number> {
  return new Promise((res) => {
    const c = spawn(cmd, args, { stdio: 'ignore' });
    c.on('error', () => res(127));
    c.on('close', (code) => res(code ?? 1));
  });
}

// ------------------------------------------------------------------ host side: the peer, isolation, ratios

interface TnetResult {
  tool: 'tnet';
  lab: string;
  variant: string;
  nodes: number;
  links: number;
  create_ms: number;
  create_per_link_ms: number;
  destroy_ms: number;
  destroy_kernel_ms: number;
  reachable: string;
  verified: boolean;
  [k: string]: unknown;
}

async function runPeer(n: number): Promise<EndpointResult> {
  progress(`peer ip-batch x${n}`);
  const stall = stallMeter();
  const out = run(join(PEERS, 'endpoint-setup.sh'), ['ip-batch', String(n)], { SETTLE: String(SETTLE_S) });
  const r = { ...(JSON.parse(out.trim().split('\n').pop()!) as EndpointResult), cpu_stall_pct: stall() };
  // The kernel frees the peer's N namespaces after it exits, in the background: wait (N/100 s),
  // or the next lab is timed against that work (a 300-node LAN took 2.6 s alone, 7.2 s right
  // after ip-batch 1000 with a 2 s settle, on this machine).
  const wait = Math.max(SETTLE_S, n / 100);
  progress(`settle ${wait}s (the kernel frees the peer's namespaces)`);
  await sleep(wait * 1000);
  return r;
}


function closing(peers: EndpointResult[], tnet: TnetResult[]): object {
  const out: Record<string, unknown> = { ratios: true, rounds: ROUNDS, loadavg_1m: r2(loadavg()[0]!) };
  const met: Record<string, boolean> = {};
  const targets: Record<string, string> = {};
  for (const topo of selected()) {
    const ps = peers.filter((p) => p.n === topo.links);
    const floor = ps.length ? median(ps.map((p) => p.per_endpoint_ms)) : undefined;
    const floorNs = ps.length ? median(ps.map((p) => (p.setup_ms + p.netns_create_ms) / p.n)) : undefined;
    if (floor !== undefined) out[`${topo.name}.ip_batch_per_endpoint_ms`] = r2(floor);
    if (floorNs !== undefined) out[`${topo.name}.ip_batch_per_endpoint_with_netns_ms`] = r2(floorNs);
    for (const v of ['controller', 'cli']) {
      const ts = tnet.filter((t) => t.lab === topo.name && t.variant === v);
      if (!ts.length) continue;
      const k = `${topo.name}.${v}`;
      const perLink = median(ts.map((t) => t.create_per_link_ms));
      out[`${k}.create_ms`] = median(ts.map((t) => t.create_ms));
      out[`${k}.destroy_ms`] = median(ts.map((t) => t.destroy_ms));
      out[`${k}.destroy_kernel_ms`] = median(ts.map((t) => t.destroy_kernel_ms));
      out[`${k}.create_per_link_ms`] = perLink;
      out[`${k}.verified`] = ts.every((t) => t.verified);
      if (floor !== undefined) out[`${k}.ip_batch_over_tnet`] = r2(floor / perLink);
      if (floorNs !== undefined) {
        out[`${k}.ip_batch_with_netns_over_tnet`] = r2(floorNs / perLink);
        targets[`${k}.per_link`] = `${perLink} ms <= ip-batch ${r2(floorNs)} ms (with its namespaces), ${floor === undefined ? '?' : r2(floor)} ms (without)`;
        met[`${k}.per_link_vs_ip_batch_with_netns`] = floorNs / perLink >= TARGETS.ipBatchOverTnet;
        met[`${k}.per_link_vs_ip_batch`] = floor! / perLink >= TARGETS.ipBatchOverTnet;
      }
      if (topo.name === 'ring' && topo.nodes === 1000) {
        const c = out[`${k}.create_ms`] as number;
        const d = out[`${k}.destroy_ms`] as number;
        targets[`${k}.create`] = `${c} ms < ${TARGETS.ringCreateMs}`;
        targets[`${k}.destroy`] = `${d} ms < ${TARGETS.ringDestroyMs}`;
        met[`${k}.create`] = c < TARGETS.ringCreateMs;
        met[`${k}.destroy`] = d < TARGETS.ringDestroyMs;
        met[`${k}.reachable`] = ts.every((t) => t.verified);
      }
    }
  }
  out.targets = targets;
  out.met = met;
  return out;
}

async function hostMain(): Promise<void> {
  prepareHost(ROOT, !opt['no-peers']);
  const peers: EndpointResult[] = [];
  const tnet: TnetResult[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    const tag = ROUNDS > 1 ? { round } : {};
    if (!opt['no-peers']) {
      for (const n of [...new Set(selected().map((t) => t.links))]) {
        const p = { ...(await runPeer(n)), ...tag };
        peers.push(p);
        emit(p);
      }
    }
    for (const l of runIsolated()) {
      emit({ ...l, ...tag });
      if ((l as TnetResult).tool === 'tnet') tnet.push(l as TnetResult);
    }
  }
  emit(closing(peers, tnet));
  if (tnet.some((t) => !t.verified)) fail('a tnet lab was not verified (see above)');
}


// ------------------------------------------------------------------ isolated side: tnet

/** Namespaces and non-lo links in the benchmark's own namespace: what a destroy must leave at zero. */
function leftovers(): { netns: number; links: number } {
  const netns = readdirSync('/run/netns').length;
  const links = run('ip', ['-o', 'link', 'show']).split('\n').filter((l) => l && !/^\d+: lo:/.test(l)).length;
  return { netns, links };
}

async function untilClean(timeoutMs = 60_000): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < timeoutMs) {
    const l = leftovers();
    if (l.netns === 0 && l.links === 0) return performance.now() - t0;
    await sleep(10);
  }
  throw new Error(`left behind ${timeoutMs} ms after destroy: ${JSON.stringify(leftovers())}`);
}

/**
 * Right after create: every node's namespace exists, and a sample of links carries a ping at
 * once (the pings run in parallel; no retry).
 */
async function reachable(plan: LabApplyResult['plan']): Promise<{ ok: number; of: number; late: number; namespaces: boolean }> {
  const names = new Set(readdirSync('/run/netns'));
  const namespaces = Object.values(plan.nodes).every((n) => names.has(n.netns));
  const pairs: [string, string][] = []; // [netns, address]
  const host = (cidr: string) => cidr.split('/')[0]!;
  if (plan.wires.length) {
    const step = Math.max(1, Math.floor(plan.wires.length / 20));
    for (let i = 0; i < plan.wires.length && pairs.length < 20; i += step) {
      const w = plan.wires[i]!;
      pairs.push([plan.nodes[w.a.node]!.netns, host(w.b.addresses[0]!)]);
    }
  } else {
    const nodes = Object.values(plan.nodes);
    const target = nodes[0]!;
    const addr = host(target.interfaces[0]!.addresses[0]!);
    const step = Math.max(1, Math.floor(nodes.length / 20));
    for (let i = step; i < nodes.length && pairs.length < 20; i += step) pairs.push([nodes[i]!.netns, addr]);
  }
  // -W2: on this loaded machine a 1 s reply timeout can be the scheduler, not the network.
  const ping = ([ns, ip]: [string, string]) => runAsync('ip', ['netns', 'exec', ns, 'ping', '-c1', '-W2', '-q', ip]);
  const codes = await Promise.all(pairs.map(ping));
  const failed = pairs.filter((_, i) => codes[i] !== 0);
  // Those that failed, once more a second later: "late" (up, but not yet when create returned) or not at all.
  await sleep(failed.length ? 1000 : 0);
  const late = (await Promise.all(failed.map(ping))).filter((c) => c === 0).length;
  if (failed.length) progress(`not reachable at once: ${failed.map(([ns, ip]) => `${ns} -> ${ip}`).join(', ')} (${late} of them a second later)`);
  return { ok: codes.filter((c) => c === 0).length, of: pairs.length, late, namespaces };
}

let core: ControllerModule;
let dnsService: DnsModule;

async function settle(why: string): Promise<void> {
  progress(`settle ${SETTLE_S}s (${why})`);
  await sleep(SETTLE_S * 1000);
}

/** One lab created, verified and destroyed by an in-process controller. */
async function viaController(c: ControllerT, topo: Topology): Promise<TnetResult> {
  await settle(`before ${topo.name} (controller)`);
  progress(`${topo.name}: create (${topo.nodes} nodes, ${topo.links} links) in-process`);
  const stall = stallMeter();
  const t0 = performance.now();
  const r = await c.applyLab(topo.spec);
  const createMs = performance.now() - t0;
  const createStall = stall();
  const reach = await reachable(r.plan);
  progress(`${topo.name}: created in ${createMs.toFixed(0)} ms; reachable ${reach.ok}/${reach.of}; destroy`);
  const t1 = performance.now();
  await c.destroyLab(topo.spec.name);
  const destroyMs = performance.now() - t1;
  const kernelMs = destroyMs + (await untilClean());
  return result(topo, 'controller', createMs, destroyMs, kernelMs, reach, createStall);
}

function result(topo: Topology, variant: string, createMs: number, destroyMs: number, kernelMs: number, reach: { ok: number; of: number; late: number; namespaces: boolean }, stall: number | undefined): TnetResult {
  return {
    tool: 'tnet', lab: topo.name, variant, nodes: topo.nodes, links: topo.links,
    create_ms: r2(createMs), create_per_link_ms: r2(createMs / topo.links), destroy_ms: r2(destroyMs), destroy_kernel_ms: r2(kernelMs),
    reachable: `${reach.ok}/${reach.of}`, reachable_a_second_later: reach.late, verified: reach.namespaces && reach.ok === reach.of, cpu_stall_pct: stall,
  };
}

/** The labs through `tnet create` / `tnet destroy` against a daemon of our own. */
async function viaCli(topos: Topology[]): Promise<TnetResult[]> {
  const dir = mkdtempSync(join(tmpdir(), 'tnet-bench-labs-cli-'));
  const socket = join(dir, 'tnet.sock');
  const env = { ...process.env, TNET_SOCKET: socket, TNET_STATE_DIR: dir };
  const daemon = spawn(process.execPath, [MAIN, 'daemon', '--state-dir', dir, '--socket', socket, '--no-docker-plugin'], { stdio: ['ignore', 'ignore', 'inherit'], env });
  const exited = new Promise<void>((r) => daemon.once('exit', () => r()));
  const out: TnetResult[] = [];
  try {
    const t0 = performance.now();
    while (!(await daemonAnswers(socket))) {
      if (daemon.exitCode !== null || performance.now() - t0 > 15_000) throw new Error('tnet daemon did not answer');
      await sleep(20);
    }
    for (const topo of topos) {
      const file = join(dir, `${topo.name}.json`);
      writeFileSync(file, JSON.stringify(topo.spec));
      await settle(`before ${topo.name} (cli)`);
      progress(`${topo.name}: tnet create`);
      const stall = stallMeter();
      const t1 = performance.now();
      const created = spawnSync(process.execPath, [MAIN, 'create', file, '--json'], { encoding: 'utf8', env, maxBuffer: 64 << 20 });
      const createMs = performance.now() - t1;
      const createStall = stall();
      if (created.status !== 0) throw new Error(`tnet create ${topo.name} exited ${created.status}: ${created.stderr}`);
      const plan = (JSON.parse(created.stdout) as LabApplyResult).plan;
      const reach = await reachable(plan);
      progress(`${topo.name}: created in ${createMs.toFixed(0)} ms; reachable ${reach.ok}/${reach.of}; tnet destroy`);
      const t2 = performance.now();
      const destroyed = spawnSync(process.execPath, [MAIN, 'destroy', topo.spec.name], { encoding: 'utf8', env });
      const destroyMs = performance.now() - t2;
      if (destroyed.status !== 0) throw new Error(`tnet destroy ${topo.spec.name} exited ${destroyed.status}: ${destroyed.stderr}`);
      const kernelMs = destroyMs + (await untilClean());
      out.push(result(topo, 'cli', createMs, destroyMs, kernelMs, reach, createStall));
    }
  } finally {
    daemon.kill('SIGTERM');
    const timer = setTimeout(() => daemon.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

async function isolatedMain(): Promise<void> {
  // Through a variable so the compiled code is loaded as is (no loader on the hot path).
  core = (await import(join(ROOT, 'dist/libnetwork/controller.js'))) as ControllerModule;
  dnsService = (await import(join(ROOT, 'dist/dns/service.js'))) as DnsModule;
  const stateDir = mkdtempSync(join(tmpdir(), 'tnet-bench-labs-'));
  const c = await core.Controller.open({ stateDir, scope: '' });
  const dns = opt['no-dns'] ? undefined : await dnsService.startDnsService(c, { upstreams: ['127.0.0.1:9'] });
  try {
    for (const topo of selected()) emit(await viaController(c, topo));
  } finally {
    await dns?.close();
    c.close();
    rmSync(stateDir, { recursive: true, force: true });
  }
  if (!opt['no-cli']) for (const r of await viaCli(selected())) emit(r);
}

if (process.env.TNET_BENCH_ISOLATED === '1') await isolatedMain();
else await hostMain();
