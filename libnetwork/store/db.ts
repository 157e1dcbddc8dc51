import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

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
  const db = new Database(join(dir, 'tnet.db'));
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db, migrations);
  return db;
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

