/**
 * Sandboxes tnet owns: a named network namespace (`tn-[SCOPE-]NAME`) with lo up, its resolv.conf,
 * and its removal with every endpoint in it. Docker's sandboxes are dockerd's (endpoint.ts join).
 */
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { type Core, explain, ownedElsewhere, readySandbox } from './core.js';
import { forgetEndpoint, teardownEndpoint } from './endpoint.js';
import { conflict } from './errors.js';
import { failpoint } from './failpoint.js';
import { Netns, linkSetUp, netnsAdd, netnsDel, netnsExists, withRtnl } from './kernel/index.js';
import type { Owner, Sandbox } from './model.js';
import { checkName, netnsName } from './names.js';
import { newId } from './store/state.js';
import { transaction } from './txn.js';

export async function createSandbox(core: Core, req: { name: string; owner?: Owner }): Promise<Sandbox> {
  const name = checkName('sandbox', req.name);
  const owner = req.owner ?? '';
  return core.locks.exclusive(`sandbox-name:${owner}:${name}`, async () => {
    if (core.state.findSandbox(name, owner)?.name === name) throw conflict(`sandbox "${name}" already exists`, `sandbox "${name}"`);
    const nsName = netnsName(core.scope, name);
    if (netnsExists(nsName))
      throw conflict(`a network namespace named "${nsName}" already exists and this tnet instance does not own it`, `netns "${nsName}"`);
    const sb: Sandbox = {
      id: newId(), name, owner, kind: 'lab', state: 'creating', netns: Netns.named(nsName).path, created: new Date().toISOString(),
    };
    core.state.unsynced(() => core.state.insertSandbox(sb));
    failpoint('create-sandbox:intent');
    try {
      await transaction(async (t) => {
        const ns = await t.step(`netns ${nsName}`, () => netnsAdd(nsName), () => netnsDel(nsName));
        failpoint('create-sandbox:netns');
        await withRtnl(ns, (h) => linkSetUp(h, 'lo'));
      });
    } catch (e) {
      core.state.deleteSandbox(sb.id);
      throw explain(e);
    }
    core.state.setSandboxState(sb.id, 'ready');
    const ready = { ...sb, state: 'ready' as const };
    core.events.emit('sandbox', 'up', ready);
    return ready;
  });
}

export async function deleteSandbox(core: Core, ref: string, opts: { owner?: Owner } = {}): Promise<void> {
  const owner = opts.owner ?? '';
  const found = readySandbox(core, ref, opts.owner === undefined ? undefined : owner);
  await core.locks.exclusive(found.id, async () => {
    const sb = readySandbox(core, found.id);
    if (sb.owner !== owner) throw ownedElsewhere('sandbox', sb.name, sb.owner);
    core.state.unsynced(() => core.state.setSandboxState(sb.id, 'deleting'));
    failpoint('delete-sandbox:deleting');
    const eps = core.state.endpointsOfSandbox(sb.id);
    for (const ep of eps) await teardownEndpoint(core, core.state.network(ep.networkId)!, ep, { sandboxGoing: true });
    failpoint('delete-sandbox:torn-down');
    removeNamespace(core, sb);
    failpoint('delete-sandbox:ns-gone');
    for (const ep of eps) await forgetEndpoint(core, core.state.network(ep.networkId)!, ep, { durableLater: true });
    failpoint('delete-sandbox:forgotten');
    core.state.tx(() => core.state.deleteSandbox(sb.id)); // the one fsync of the whole delete
    for (const ep of eps) core.events.emit('endpoint', 'down', ep, core.state.network(ep.networkId)!, sb);
    core.events.emit('sandbox', 'down', sb);
  });
}

export function removeNamespace(core: Core, sb: Sandbox): void {
  if (sb.kind !== 'lab') return;
  const nsName = sb.netns.slice(sb.netns.lastIndexOf('/') + 1);
  if (netnsExists(nsName)) netnsDel(nsName);
  rmSync(`${core.etcNetns}/${nsName}`, { recursive: true, force: true });
}

/** Writes the sandbox's resolv.conf (read by `ip netns exec` and `tnet exec`). */
export function writeResolvConf(core: Core, sb: Sandbox, content: string): void {
  if (sb.kind !== 'lab') return;
  const dir = `${core.etcNetns}/${sb.netns.slice(sb.netns.lastIndexOf('/') + 1)}`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(`${dir}/resolv.conf`, content);
}
