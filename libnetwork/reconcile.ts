/**
 * The reconcile at start (a controller concern, DESIGN "Owned and findable"): the kernel is made
 * to match the store after a restart, a crash or a reboot. It must itself survive a kill -9 at
 * any point: every step reads the kernel again and does only what is still lacking, so the next
 * start finishes what this one began.
 */
import type { Core } from './core.js';
import type { Attachment, Driver } from './driverapi.js';
import { forgetEndpoint, gatewayProviderOf, gatewaysOf, teardownEndpoint } from './endpoint.js';
import { failpoint } from './failpoint.js';
import { type SandboxView, configureInterface, loProblem, removeInterface, sandboxSideProblems, viewSandbox } from './iface.js';
import { Netns, linkDelIfExists, linkList, linkSetUp, netnsAdd, netnsExists, withRtnl } from './kernel/index.js';
import { log } from './log.js';
import type { Endpoint, Network, Sandbox } from './model.js';
import { forgetNetwork } from './network.js';
import { removeNamespace } from './sandbox.js';
import { transaction } from './txn.js';

/** What the sandbox should show of an endpoint, from its records alone. */
export function sandboxSideWant(net: Network, ep: Endpoint) {
  const addresses = [
    ...(ep.ipv4 && net.ipv4 ? [{ address: ep.ipv4.toString(), prefixLen: net.ipv4.subnet.prefix }] : []),
    ...(ep.ipv6 && net.ipv6 ? [{ address: ep.ipv6.toString(), prefixLen: net.ipv6.subnet.prefix }] : []),
  ];
  return { ifname: ep.ifname, addresses, gateways: ep.gatewayProvider ? gatewaysOf(net) : [] };
}

/**
 * Makes a sandbox's default-route provider the one the rule names (gatewayProviderOf): after a
 * crash in a disconnect, a sandbox may have no provider recorded, or a stale flag. Left alone
 * while one of its endpoints is mid-operation (a live repair). Returns how many flags changed.
 */
export function rederiveGatewayProvider(core: Core, sb: Sandbox): number {
  const eps = core.state.endpointsOfSandbox(sb.id);
  if (eps.some((e) => e.state !== 'ready')) return 0;
  const provider = gatewayProviderOf(core, sb);
  const changes = eps.filter((e) => e.gatewayProvider !== (e.id === provider?.id));
  if (changes.length === 0) return 0;
  core.state.tx(() => {
    for (const e of changes) core.state.setGatewayProvider(e.id, !e.gatewayProvider);
  });
  log.info({ sandbox: sb.name, provider: provider?.ifname }, 'reconcile: default-route provider re-derived');
  return changes.length;
}

/**
 * `live`: a running controller repairs itself (`tnet doctor --repair`): records that are not ready
 * belong to operations in flight (the start's reconcile undid those of a crash), so they are left
 * alone, and each sandbox is repaired under its lock.
 */
export async function reconcile(core: Core, drivers: ReadonlyMap<string, Driver>, opts: { live?: boolean } = {}): Promise<void> {
  const t0 = performance.now();
  const state = core.state;
  if (!opts.live) await undoInterrupted(core);
  failpoint('reconcile:undone');
  // 2. The links this instance tagged and no record wants go (endpoints first: they sit on
  //    bridges), whatever driver made them; then each driver makes its side match: networks,
  //    endpoints' host sides, the firewall.
  const nets = state.networks();
  const eps = state.endpoints();
  await removeUnwantedLinks(core, nets, eps);
  const typeOf = new Map(nets.map((n) => [n.id, n.driver]));
  for (const [type, d] of drivers) {
    await d.restore(nets.filter((n) => n.driver === type), eps.filter((e) => typeOf.get(e.networkId) === type));
  }
  failpoint('reconcile:restored');
  // 3. For each lab sandbox, under its lock: who supplies its default routes is derived from the
  //    store, not remembered; then a sandbox that vanished (a reboot) comes back, and each
  //    endpoint is judged from the sandbox side (interface, up, addresses, default routes) and
  //    by its driver about its own.
  for (const sb0 of state.sandboxes()) {
    if (sb0.kind !== 'lab' || sb0.state !== 'ready') continue;
    await core.locks.exclusive(sb0.id, async () => {
      const sb = state.sandbox(sb0.id);
      if (sb?.state !== 'ready') return;
      rederiveGatewayProvider(core, sb);
      await reconcileSandbox(core, sb);
    });
  }
  log.info({ ms: Math.round(performance.now() - t0) }, 'reconciled');
}

/** Links in the host namespace under this instance's tag that no network or endpoint record names. */
async function removeUnwantedLinks(core: Core, nets: readonly Network[], eps: readonly Endpoint[]): Promise<void> {
  const wanted = new Set([...nets.map((n) => core.tags.of('network', n.id)), ...eps.map((e) => core.tags.of('endpoint', e.id))]);
  const stale = (await linkList(core.rtnl)).filter((l) => core.tags.mine(l.alias) && !wanted.has(core.tags.owner(l.alias!)));
  stale.sort((a, b) => Number(a.kind === 'bridge') - Number(b.kind === 'bridge'));
  for (const l of stale) {
    log.info({ link: l.name, tag: l.alias }, 'reconcile: removing a link tnet no longer wants');
    await linkDelIfExists(core.rtnl, l.name);
  }
}

/** 1. Undo interrupted operations, innermost objects first. */
async function undoInterrupted(core: Core): Promise<void> {
  const state = core.state;
  for (const ep of state.endpoints()) {
    if (ep.state === 'ready') continue;
    const net = state.network(ep.networkId)!;
    await teardownEndpoint(core, net, ep, { sandboxGoing: false });
    await forgetEndpoint(core, net, ep);
  }
  for (const sb of state.sandboxes()) {
    if (sb.state === 'ready') continue;
    const eps = state.endpointsOfSandbox(sb.id);
    removeNamespace(core, sb);
    for (const ep of eps) await forgetEndpoint(core, state.network(ep.networkId)!, ep);
    state.tx(() => state.deleteSandbox(sb.id));
  }
  for (const net of state.networks()) {
    if (net.state === 'ready') continue;
    await core.driver(net.driver).deleteNetwork(net);
    await forgetNetwork(core, net);
  }
}

async function reconcileSandbox(core: Core, sb: Sandbox): Promise<void> {
  const nsName = sb.netns.slice(sb.netns.lastIndexOf('/') + 1);
  if (!netnsExists(nsName)) {
    log.info({ sandbox: sb.name }, 'reconcile: recreating sandbox namespace');
    netnsAdd(nsName);
    failpoint('reconcile:netns-made');
  }
  const ns = Netns.atPath(sb.netns);
  let view: SandboxView = await viewSandbox(ns);
  if (loProblem(view)) {
    log.info({ sandbox: sb.name }, 'reconcile: bringing lo up');
    await withRtnl(ns, (h) => linkSetUp(h, 'lo'));
  }
  for (const ep of core.state.endpointsOfSandbox(sb.id)) {
    if (ep.state !== 'ready') continue; // mid-operation (a live repair): its operation finishes or undoes it
    const net = core.state.network(ep.networkId)!;
    const d = core.driver(net.driver);
    const want = sandboxSideWant(net, ep);
    const link = view.links.find((l) => l.name === ep.ifname);
    const intact = link !== undefined && ((await d.endpointIntact?.(net, ep)) ?? true);
    if (!intact) {
      log.info({ sandbox: sb.name, network: net.name }, 'reconcile: recreating endpoint');
      await d.leave(net, ep, { sandboxGoing: false });
      await removeInterface(ns, ep.ifname);
      failpoint('reconcile:endpoint-left');
      await transaction(async (t) => {
        const a = await d.join(net, ep, { kind: 'sandbox', ns, ifname: ep.ifname }, t);
        failpoint('reconcile:endpoint-joined');
        await configureInterface(ns, net, ep, a, { defaultRoute: ep.gatewayProvider });
        failpoint('reconcile:endpoint-configured');
      });
      view = await viewSandbox(ns);
      continue;
    }
    const problems = sandboxSideProblems(view, want);
    if (problems.length === 0) continue;
    log.info({ sandbox: sb.name, network: net.name, problems }, 'reconcile: repairing the sandbox side of an endpoint');
    // The driver's static routes are not known without a join; the built-in drivers have none.
    const a: Attachment = {
      where: 'sandbox', ifindex: link.index, staticRoutes: [],
      gateway4: want.gateways.find((g) => g.family === 4), gateway6: want.gateways.find((g) => g.family === 6),
    };
    await configureInterface(ns, net, ep, a, { defaultRoute: ep.gatewayProvider, repair: true });
    failpoint('reconcile:endpoint-configured');
    view = await viewSandbox(ns);
  }
}
