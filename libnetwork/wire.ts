/**
 * Wires: a point-to-point veth between two sandboxes, a core object of its own (not a network and
 * not a driver), with an owner (a lab). The row is written before the veth exists; the veth is
 * made in one RTM_NEWLINK in end A's namespace with its peer born in end B's (no move: moving a
 * link costs ~17 ms in the kernel); both ends carry tnet's ownership alias and the same MTU; the
 * addresses and `up` of both ends go out pipelined right behind it. A wire goes with its
 * namespaces (a lab's destroy deletes namespaces, not links); on its own, deleting end A deletes
 * the pair.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import type { Core } from './core.js';
import { TnetError, unsupported } from './errors.js';
import { Netns, Rtnl, addrAdd, cidr, inNetns, isErrno, linkAdd, linkByName, linkDelIfExists, linkSetAlias, linkSetUp } from './kernel/index.js';
import { log } from './log.js';
import type { Owner, Sandbox } from './model.js';
import { LabStore, type WireRecord } from './store/labs.js';
import { newId } from './store/state.js';

/** What a wire is made with, besides its ends' names (stored as the row's config). */
export interface WireConfig {
  /** CIDRs of end A and end B. */
  a: string[];
  b: string[];
  /** tbf rate on both ends ("100mbit"). */
  rate?: string;
  /** netem: refused where the kernel has none. */
  delay?: string;
  loss?: string;
}

export interface WireRequest {
  key: string;
  a: Sandbox;
  aIfname: string;
  b: Sandbox;
  bIfname: string;
  mtu: number;
  config: WireConfig;
}

const stores = new WeakMap<object, LabStore>();
/** The lab tables of a core's database (one statement set per database). */
export function labStore(core: Core): LabStore {
  let s = stores.get(core.state.db);
  if (!s) stores.set(core.state.db, (s = new LabStore(core.state.db)));
  return s;
}

/** The alias both ends carry: the same `tnet:<instance>:` prefix as every link tnet makes. */
export const wireTag = (core: Core, id: string) => `tnet:${core.state.instance}:wire:${id}`;

/**
 * One netlink handle per namespace for a batch of work, opened on first use and closed together:
 * opening one costs ~70 µs (a setns round), and a lab's nodes each take part in several wires.
 */
export class NsHandles {
  private readonly open = new Map<string, Rtnl>();
  get(path: string): Rtnl {
    let h = this.open.get(path);
    if (!h) this.open.set(path, (h = Rtnl.open(Netns.atPath(path))));
    return h;
  }
  /**
   * Closes the handle of a namespace about to go: a handle keeps its namespace alive, and one kept
   * past a remake at the same path would configure the old namespace instead of the new one.
   */
  forget(path: string): void {
    this.open.get(path)?.close();
    this.open.delete(path);
  }
  close(): void {
    for (const h of this.open.values()) h.close();
    this.open.clear();
  }
}

/** netem is a module this kernel may not have (none here): asked for, a wire is refused up front. */
export function netemAvailable(): boolean {
  if (existsSync('/sys/module/sch_netem')) return true;
  try {
    const rel = readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim();
    const dir = `/lib/modules/${rel}/kernel/net/sched`;
    return readdirSync(dir).some((f) => f.startsWith('sch_netem.'));
  } catch {
    return false;
  }
}

/** Refuses what this machine cannot do before anything is recorded. */
export function checkWireConfig(key: string, c: WireConfig): void {
  if ((c.delay !== undefined || c.loss !== undefined) && !netemAvailable())
    throw unsupported(
      `link ${key}: delay and loss need the kernel's netem qdisc (sch_netem), which this kernel does not have; remove delay/loss or use a kernel with netem`,
      `link ${key}`,
    );
  if (c.rate !== undefined && !/^\d+(\.\d+)?([kmg]?bit|[kmg]?bps)$/i.test(c.rate))
    throw new TnetError('invalid-argument', `link ${key}: rate "${c.rate}" is not a tc rate such as 100mbit or 10kbit`, { object: `link ${key}` });
}

/**
 * Records and makes wires. `handles` are shared with the caller (a lab's nodes use the same ones).
 * At most `concurrency` wires are in flight. On an error the wires made so far are taken back and
 * their rows deleted, and the error goes on. Rows stay 'creating' until `markReady` (the caller
 * flips them with its own commit).
 */
export async function createWires(
  core: Core, owner: Owner, reqs: readonly WireRequest[], handles: NsHandles, opts: { concurrency?: number; onDone?: () => void } = {},
): Promise<WireRecord[]> {
  const store = labStore(core);
  for (const r of reqs) checkWireConfig(r.key, r.config);
  const now = new Date().toISOString();
  const rows: WireRecord[] = reqs.map((r) => ({
    id: newId(), owner, key: r.key, state: 'creating', aSandbox: r.a.id, aIfname: r.aIfname, bSandbox: r.b.id, bIfname: r.bIfname,
    mtu: r.mtu, config: JSON.stringify(r.config), created: now,
  }));
  core.state.unsynced(() => {
    for (const w of rows) store.insertWire(w);
  });
  const made: number[] = [];
  let failed: unknown;
  let next = 0;
  const worker = async () => {
    while (failed === undefined && next < reqs.length) {
      const i = next++;
      try {
        await makeWire(core, rows[i]!, reqs[i]!, handles);
        made.push(i);
        opts.onDone?.();
      } catch (e) {
        failed ??= e;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(opts.concurrency ?? 32, reqs.length) }, worker));
  if (failed !== undefined) {
    for (const i of made) await linkDelIfExists(handles.get(reqs[i]!.a.netns), reqs[i]!.aIfname).catch(() => undefined);
    core.state.unsynced(() => {
      for (const w of rows) store.deleteWire(w.id);
    });
    throw failed;
  }
  await shape(reqs);
  return rows;
}

async function makeWire(core: Core, w: WireRecord, r: WireRequest, handles: NsHandles): Promise<void> {
  const hA = handles.get(r.a.netns);
  const hB = handles.get(r.b.netns);
  const tag = wireTag(core, w.id);
  const created = await linkAdd(hA, {
    kind: 'veth', name: r.aIfname, mtu: r.mtu, alias: tag, up: true,
    peer: { name: r.bIfname, ns: Netns.atPath(r.b.netns), mtu: r.mtu },
  });
  // B's side: its tag, addresses and up in one pipelined burst; A's addresses alongside.
  const aIndex = created.index ?? (await linkByName(hA, r.aIfname))!.index;
  const bIndex = created.peerIndex ?? (await linkByName(hB, r.bIfname))?.index;
  if (bIndex === undefined) throw new TnetError('kernel', `wire ${r.key}: the peer "${r.bIfname}" did not appear in ${r.b.netns}`, { object: `wire ${r.key}` });
  const work: Promise<unknown>[] = [linkSetAlias(hB, r.bIfname, tag), linkSetUp(hB, r.bIfname)];
  for (const c of r.config.a) work.push(addrAdd(hA, aIndex, r.aIfname, cidr(c)));
  for (const c of r.config.b) work.push(addrAdd(hB, bIndex, r.bIfname, cidr(c)));
  const results = await Promise.allSettled(work);
  const bad = results.find((x) => x.status === 'rejected');
  if (bad) {
    await linkDelIfExists(hA, r.aIfname).catch(() => undefined);
    throw (bad as PromiseRejectedResult).reason;
  }
}

/**
 * tbf on both ends of every shaped wire: one `tc -batch` per namespace that has any (shaping is
 * rare in labs; tc's qdisc encoding is not worth redoing in netlink for it).
 */
async function shape(reqs: readonly WireRequest[]): Promise<void> {
  const lines = new Map<string, string[]>();
  const add = (ns: string, line: string) => {
    let l = lines.get(ns);
    if (!l) lines.set(ns, (l = []));
    l.push(line);
  };
  for (const r of reqs) {
    if (!r.config.rate) continue;
    for (const [sb, ifname] of [[r.a, r.aIfname], [r.b, r.bIfname]] as const)
      add(sb.netns, `qdisc replace dev ${ifname} root tbf rate ${r.config.rate} burst 32kbit latency 50ms`);
  }
  await Promise.all(
    [...lines].map(
      ([path, ls]) =>
        new Promise<void>((resolve, reject) => {
          // tc runs inside the namespace: the child inherits it from a setns'd spawn
          const child = inNetns(Netns.atPath(path), () => spawn('tc', ['-batch', '-'], { stdio: ['pipe', 'ignore', 'pipe'] }));
          let err = '';
          child.stderr.on('data', (d: Buffer) => (err += d.toString()));
          child.on('error', (e) => reject(new TnetError('unsupported', `shaping needs the tc command (iproute2): ${e.message}`)));
          child.on('close', (code) =>
            code === 0 ? resolve() : reject(new TnetError('kernel', `tc in ${path} failed: ${err.trim() || `exit ${code}`}`, { object: path })),
          );
          child.stdin.end(ls.join('\n') + '\n');
        }),
    ),
  );
}

/** Deletes wires (their end A, which takes the peer with it) and their rows. */
export async function deleteWires(core: Core, wires: readonly WireRecord[], handles: NsHandles): Promise<void> {
  const store = labStore(core);
  core.state.unsynced(() => {
    for (const w of wires) store.setWireState(w.id, 'deleting');
  });
  for (const w of wires) {
    const sb = core.state.sandbox(w.aSandbox);
    if (sb && existsSync(sb.netns)) await linkDelIfExists(handles.get(sb.netns), w.aIfname);
  }
  core.state.unsynced(() => {
    for (const w of wires) store.deleteWire(w.id);
  });
}

/**
 * Makes the kernel match the wire rows after a restart or a crash: a wire whose create or delete
 * was interrupted is removed (row and veth); a ready wire whose namespaces both exist but whose
 * veth is gone (a reboot recreated the namespaces) is made again; a wire whose sandbox row is gone
 * went with it (ON DELETE CASCADE).
 */
export async function reconcileWires(core: Core): Promise<void> {
  const store = labStore(core);
  const wires = store.wires();
  if (!wires.length) return;
  const handles = new NsHandles();
  try {
    for (const w of wires) {
      const a = core.state.sandbox(w.aSandbox);
      const b = core.state.sandbox(w.bSandbox);
      const aThere = a !== undefined && existsSync(a.netns);
      if (w.state !== 'ready' || !a || !b || a.state !== 'ready' || b.state !== 'ready') {
        if (aThere) await linkDelIfExists(handles.get(a.netns), w.aIfname).catch((e) => log.warn({ err: e, wire: w.key }, 'reconcile: cannot remove wire'));
        core.state.unsynced(() => store.deleteWire(w.id));
        continue;
      }
      if (!aThere || !existsSync(b.netns)) continue; // the sandbox reconcile brings namespaces back first
      const link = await linkByName(handles.get(a.netns), w.aIfname);
      if (link && link.alias === wireTag(core, w.id)) continue;
      log.info({ wire: w.key }, 'reconcile: recreating wire');
      if (link) continue; // something else holds that name now: never touch what tnet does not own
      const cfg = JSON.parse(w.config) as WireConfig;
      try {
        await makeWire(core, w, { key: w.key, a, aIfname: w.aIfname, b, bIfname: w.bIfname, mtu: w.mtu, config: cfg }, handles);
      } catch (e) {
        if (!isErrno(e, 'EEXIST')) log.warn({ err: e, wire: w.key }, 'reconcile: cannot recreate wire');
      }
    }
  } finally {
    handles.close();
  }
}
