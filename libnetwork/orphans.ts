/**
 * Kernel objects whose records are gone: a state database deleted, emptied (its WAL lost before a
 * checkpoint) or moved aside while the kernel still holds what it described. A new instance would
 * get a new id, so nothing would ever remove them, and they would block new objects of the same
 * names (the nft table, tn-NAME namespaces, user-named bridges). tnet refuses to start on an
 * empty state next to them and says what it found; `--remove-orphans` removes them. They are not
 * adopted: the records that said what they were for (owners, subnets, published ports, names) are
 * lost, and a link alone cannot tell them.
 *
 * What identifies them: the id of the instance that used this state directory, kept in
 * STATE_DIR/instance next to the database (written when the instance is made), and the host-wide
 * names of the directory's scope (the nft table `tnet`/`tnet-SCOPE`, namespaces `tn-[SCOPE-]*`).
 */
import { closeSync, fsyncSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { TnetError } from './errors.js';
import { type Nft, type Rtnl, linkDelIfExists, linkList, netnsDel, netnsList } from './kernel/index.js';
import { log } from './log.js';

export interface InstanceMarker {
  readonly instance: string;
  readonly scope: string;
}

export interface Orphans {
  /** Links tagged by the lost instance (`tnet:ID:`), veths before bridges. */
  readonly links: readonly { name: string; kind: string | undefined; alias: string }[];
  readonly netns: readonly string[];
  /** nft tables, as "FAMILY NAME". */
  readonly tables: readonly string[];
}

const markerFile = (dir: string) => join(dir, 'instance');

export function readMarker(dir: string): InstanceMarker | undefined {
  try {
    const m = JSON.parse(readFileSync(markerFile(dir), 'utf8')) as Partial<InstanceMarker>;
    return typeof m.instance === 'string' && typeof m.scope === 'string' ? { instance: m.instance, scope: m.scope } : undefined;
  } catch {
    return undefined;
  }
}

/** Written (and fsynced) once, when the instance is made: it must outlive a lost database. */
export function writeMarker(dir: string, m: InstanceMarker): void {
  const fd = openSync(markerFile(dir), 'w', 0o600);
  try {
    writeSync(fd, `${JSON.stringify(m)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A default scope is an instance id (8 hex digits): its namespaces are another instance's, never the unscoped one's. */
const SCOPED = /^tn-[0-9a-f]{8}-/;

/**
 * What an earlier instance of this state directory left in the kernel. `previous`: its marker,
 * if it survived; `scope`: the scope the new state would use.
 */
export async function findOrphans(rtnl: Rtnl, nft: Nft, scope: string, previous: InstanceMarker | undefined): Promise<Orphans> {
  const scopes = [...new Set([scope, ...(previous ? [previous.scope] : [])])];
  const links = previous
    ? (await linkList(rtnl))
        .filter((l) => l.alias?.startsWith(`tnet:${previous.instance}:`))
        .map((l) => ({ name: l.name, kind: l.kind, alias: l.alias! }))
        .sort((a, b) => Number(a.kind === 'bridge') - Number(b.kind === 'bridge'))
    : [];
  const netns = netnsList().filter((n) => scopes.some((s) => (s ? n.startsWith(`tn-${s}-`) : n.startsWith('tn-') && !SCOPED.test(n))));
  const names = new Set(scopes.map((s) => (s ? `tnet-${s}` : 'tnet')));
  const tables: string[] = [];
  for (const entry of nft.list('list tables').nftables) {
    const t = entry.table as { family?: string; name?: string } | undefined;
    if (t?.name && names.has(t.name)) tables.push(`${t.family} ${t.name}`);
  }
  return { links, netns, tables };
}

export const anyOrphans = (o: Orphans) => o.links.length + o.netns.length + o.tables.length > 0;

export function describeOrphans(o: Orphans): string {
  const part = (what: string, xs: readonly string[]) =>
    xs.length ? [`${xs.length} ${what} (${xs.slice(0, 6).join(', ')}${xs.length > 6 ? ', ...' : ''})`] : [];
  return [
    ...part('link(s)', o.links.map((l) => `${l.kind ?? 'link'} ${l.name}`)),
    ...part('namespace(s)', o.netns),
    ...part('nft table(s)', o.tables.map((t) => `inet ${t.split(' ')[1]}`)),
  ].join(', ');
}

export function orphansError(dir: string, o: Orphans): TnetError {
  return new TnetError(
    'conflict',
    `the state in ${dir} is empty (new, deleted, or its write-ahead log was lost), but the kernel holds objects an earlier ` +
      `tnet instance of this state directory made: ${describeOrphans(o)}. Their records are gone, so tnet can neither rebuild ` +
      'nor safely reuse them. Start with --remove-orphans to remove them (containers and labs on them lose their network), ' +
      'or restore the state database and start again',
    { object: `state directory ${dir}` },
  );
}

/** Removes what findOrphans found; goes on past an error and reports every one. */
export async function removeOrphans(rtnl: Rtnl, nft: Nft, o: Orphans): Promise<void> {
  const errors: string[] = [];
  for (const l of o.links) await linkDelIfExists(rtnl, l.name).catch((e: unknown) => errors.push(`link ${l.name}: ${String(e)}`));
  for (const n of o.netns) {
    try {
      netnsDel(n);
    } catch (e) {
      errors.push(`netns ${n}: ${String(e)}`);
    }
  }
  for (const t of o.tables) {
    const [family, name] = t.split(' ');
    try {
      nft.apply(`delete orphaned table ${name}`, [{ delete: { table: { family, name } } }]);
    } catch (e) {
      errors.push(`nft table ${name}: ${String(e)}`);
    }
  }
  log.warn({ removed: describeOrphans(o), errors }, 'removed the kernel objects of a lost state');
  if (errors.length) throw new TnetError('kernel', `removing the orphaned objects failed: ${errors.join('; ')}`);
}
