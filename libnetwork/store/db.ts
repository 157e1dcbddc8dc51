import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { TnetError } from '../errors.js';

export type Db = Database.Database;

/** A schema step owned by one module; applied once, in order of `id`, inside a transaction. */
export interface Migration {
  readonly id: string; // e.g. "ipam-1": module name + version, unique across modules
  readonly sql: string;
}

export const DEFAULT_STATE_DIR = '/var/lib/tnet';

/** The state directory: --state-dir wins, then TNET_STATE_DIR, then /var/lib/tnet. */
export function stateDir(override?: string): string {
  return override ?? process.env.TNET_STATE_DIR ?? DEFAULT_STATE_DIR;
}

/**
 * Opens (creating if needed) the SQLite state database under `dir`.
 * WAL + synchronous=FULL: a transaction that returned is on disk, so a kill -9 right after
 * loses nothing committed. busy_timeout lets a second process (a CLI in library mode) wait
 * for the daemon's write instead of failing.
 */
export function openDb(dir: string, migrations: readonly Migration[] = []): Db {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, 'tnet.db');
  let db: Db | undefined;
  try {
    db = new Database(file);
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    migrate(db, migrations);
    // What an earlier run left in the WAL goes into the database file now (see checkpoint).
    checkpoint(db, 'TRUNCATE');
    return db;
  } catch (e) {
    db?.close();
    throw storeError(e, file, 'opening the state');
  }
}

/**
 * Copies the WAL into the database file. Until then every commit lives only in the WAL (SQLite's
 * own checkpoint waits for 1000 pages, which tnet's state may never reach), so losing that one
 * file would lose every network. Run at open, at close and, after durable commits, at most once a
 * second off the request path (State.tx schedules it). PASSIVE never waits for a reader; TRUNCATE
 * (open, close) also empties the WAL file.
 */
export function checkpoint(db: Db, mode: 'PASSIVE' | 'TRUNCATE' = 'PASSIVE'): void {
  db.pragma(`wal_checkpoint(${mode})`);
}

/**
 * A database failure as a person can act on it: which file, what happened, what it means for the
 * operation and what to do. Full disk and damaged file are the two an operator meets; other I/O
 * failures keep SQLite's words next to the file's name; a constraint is left to the caller.
 */
export function storeError(e: unknown, file: string, doing: string): unknown {
  if (e instanceof TnetError || !(e instanceof Error)) return e;
  const code = (e as { code?: unknown }).code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return e;
  if (code === 'SQLITE_FULL')
    return new TnetError(
      'internal',
      `the disk holding the state database ${file} is full: ${doing} was not recorded, so tnet did not make the change ` +
        '(anything it began is undone at the next start); free some space and try again',
      { object: `state ${file}`, cause: e },
    );
  if (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT'))
    return new TnetError(
      'internal',
      `the state database ${file} is damaged or is not a tnet database (${e.message}): tnet cannot tell which networks, ` +
        'sandboxes and ports it made, so it does not start on it; move the file aside (with its -wal file) to start with an ' +
        'empty state, then remove what the lost state made with `tnet daemon --remove-orphans`',
      { object: `state ${file}`, cause: e },
    );
  if (/^SQLITE_(IOERR|READONLY|CANTOPEN|PERM)/.test(code))
    return new TnetError('internal', `state database ${file}: ${doing} failed: ${e.message} (${code}); nothing was recorded`, { object: `state ${file}`, cause: e });
  return e; // a constraint and the like: the caller's to explain
}

/**
 * Applies the migrations not yet recorded in the database. Safe to call again with more.
 * Foreign keys are off while a migration runs (SQLite's way to rebuild a table: dropping the old
 * one would otherwise cascade into the rows that reference it) and checked before it commits.
 */
export function migrate(db: Db, migrations: readonly Migration[]): void {
  db.exec('CREATE TABLE IF NOT EXISTS migrations (id TEXT PRIMARY KEY, applied_at TEXT NOT NULL)');
  const done = new Set(
    (db.prepare('SELECT id FROM migrations').all() as { id: string }[]).map((r) => r.id),
  );
  const record = db.prepare("INSERT INTO migrations (id, applied_at) VALUES (?, datetime('now'))");
  const fk = db.pragma('foreign_keys', { simple: true }) as number;
  for (const m of migrations) {
    if (done.has(m.id)) continue;
    db.pragma('foreign_keys = OFF');
    try {
      db.transaction(() => {
        db.exec(m.sql);
        const broken = db.pragma('foreign_key_check') as unknown[];
        if (broken.length) throw new Error(`migration ${m.id} left ${broken.length} rows with broken references`);
        record.run(m.id);
      }).immediate();
    } finally {
      db.pragma(`foreign_keys = ${fk ? 'ON' : 'OFF'}`);
    }
  }
}

const syncPragmas = new WeakMap<Db, { normal: Database.Statement; full: Database.Statement }>();

/**
 * Runs `fn` as one immediate (write-locking) transaction committed without an fsync of its own
 * (synchronous=NORMAL for that commit; see State.unsynced for when that is safe). The two pragmas
 * are prepared once per database: preparing them per call cost more than the commit here.
 */
export function commitWithoutFsync<T>(db: Db, fn: () => T): T {
  let p = syncPragmas.get(db);
  if (!p) {
    p = { normal: db.prepare('PRAGMA synchronous = NORMAL'), full: db.prepare('PRAGMA synchronous = FULL') };
    syncPragmas.set(db, p);
  }
  p.normal.run();
  try {
    return db.transaction(fn).immediate();
  } finally {
    p.full.run();
  }
}

