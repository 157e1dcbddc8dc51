/**
 * The records of labs and wires in SQLite. As for the CNM objects (state.ts), a row is written
 * before the kernel objects it stands for (state 'creating') and flipped after, so a lab
 * interrupted at any point is found, by its owner, by `tnet destroy NAME` and the next create.
 */
import type { Lifecycle, Owner } from '../model.js';
import type { Db, Migration } from './db.js';

export const labMigrations: Migration[] = [
  {
    // Labs (their spec and plan, what of them is made), wires (point-to-point veths between two
    // sandboxes) and the processes a lab's `run:` started. Wire ends go with their sandbox row.
    id: 'core-4',
    sql: `
      CREATE TABLE labs (
        name TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        spec TEXT NOT NULL,
        plan TEXT NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL
      );
      -- What of a lab is made, with the signature of the settings it was made with: a re-create
      -- compares these to the new plan and changes only what differs.
      CREATE TABLE lab_parts (
        lab TEXT NOT NULL,
        kind TEXT NOT NULL,
        key TEXT NOT NULL,
        sig TEXT NOT NULL,
        PRIMARY KEY (lab, kind, key)
      ) WITHOUT ROWID;
      CREATE TABLE wires (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        key TEXT NOT NULL,
        state TEXT NOT NULL,
        a_sandbox TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
        a_ifname TEXT NOT NULL,
        b_sandbox TEXT NOT NULL REFERENCES sandboxes(id) ON DELETE CASCADE,
        b_ifname TEXT NOT NULL,
        mtu INTEGER NOT NULL,
        config TEXT NOT NULL,
        created TEXT NOT NULL,
        UNIQUE (owner, key),
        UNIQUE (a_sandbox, a_ifname),
        UNIQUE (b_sandbox, b_ifname)
      );
      CREATE INDEX wires_by_owner ON wires(owner);
      CREATE INDEX wires_by_b ON wires(b_sandbox);
      CREATE TABLE lab_processes (
        lab TEXT NOT NULL,
        node TEXT NOT NULL,
        pid INTEGER NOT NULL,
        start TEXT NOT NULL,
        cmd TEXT NOT NULL,
        PRIMARY KEY (lab, node, pid)
      );
    `,
  },
];

export interface LabRow {
  name: string;
  state: Lifecycle;
  spec: string;
  plan: string;
  created: string;
  updated: string;
}

/** A wire as recorded: which sandbox holds each end, under which interface name. */
export interface WireRecord {
  readonly id: string;
  readonly owner: Owner;
  /** What the owner calls it (a lab: "r1:eth1|r2:eth1"). */
  readonly key: string;
  readonly state: Lifecycle;
  readonly aSandbox: string;
  readonly aIfname: string;
  readonly bSandbox: string;
  readonly bIfname: string;
  readonly mtu: number;
  /** Addresses, shaping: JSON the wire's maker reads back (wire.ts WireConfig). */
  readonly config: string;
  readonly created: string;
}

interface WireRow {
  id: string; owner: string; key: string; state: string; a_sandbox: string; a_ifname: string; b_sandbox: string; b_ifname: string;
  mtu: number; config: string; created: string;
}

const toWire = (r: WireRow): WireRecord => ({
  id: r.id, owner: r.owner as Owner, key: r.key, state: r.state as Lifecycle, aSandbox: r.a_sandbox, aIfname: r.a_ifname,
  bSandbox: r.b_sandbox, bIfname: r.b_ifname, mtu: r.mtu, config: r.config, created: r.created,
});

export interface ProcessRecord {
  lab: string;
  node: string;
  pid: number;
  /** Field 22 of /proc/PID/stat: a recycled pid has another, so it is never signalled. */
  start: string;
  cmd: string;
}

/** Statements over the lab tables; synchronous like State (one JS thread, no interleaving). */
export class LabStore {
  private readonly q;
  constructor(readonly db: Db) {
    this.q = {
      lab: db.prepare('SELECT * FROM labs WHERE name = ?'),
      labs: db.prepare('SELECT * FROM labs ORDER BY created, name'),
      labUpsert: db.prepare(`INSERT INTO labs (name, state, spec, plan, created, updated) VALUES (@name, @state, @spec, @plan, @created, @updated)
        ON CONFLICT (name) DO UPDATE SET state = excluded.state, spec = excluded.spec, plan = excluded.plan, updated = excluded.updated`),
      labState: db.prepare('UPDATE labs SET state = ? WHERE name = ?'),
      labDelete: db.prepare('DELETE FROM labs WHERE name = ?'),
      parts: db.prepare('SELECT kind, key, sig FROM lab_parts WHERE lab = ?'),
      partPut: db.prepare('INSERT OR REPLACE INTO lab_parts (lab, kind, key, sig) VALUES (?, ?, ?, ?)'),
      partDelete: db.prepare('DELETE FROM lab_parts WHERE lab = ? AND kind = ? AND key = ?'),
      partsDelete: db.prepare('DELETE FROM lab_parts WHERE lab = ?'),
      wire: db.prepare('SELECT * FROM wires WHERE id = ?'),
      wires: db.prepare('SELECT * FROM wires ORDER BY created'),
      wiresByOwner: db.prepare('SELECT * FROM wires WHERE owner = ? ORDER BY created'),
      wiresBySandbox: db.prepare('SELECT * FROM wires WHERE a_sandbox = ? OR b_sandbox = ?'),
      wireInsert: db.prepare(`INSERT INTO wires (id, owner, key, state, a_sandbox, a_ifname, b_sandbox, b_ifname, mtu, config, created)
        VALUES (@id, @owner, @key, @state, @aSandbox, @aIfname, @bSandbox, @bIfname, @mtu, @config, @created)`),
      wireState: db.prepare('UPDATE wires SET state = ? WHERE id = ?'),
      wireDelete: db.prepare('DELETE FROM wires WHERE id = ?'),
      procs: db.prepare('SELECT * FROM lab_processes WHERE lab = ? ORDER BY node, pid'),
      procInsert: db.prepare('INSERT OR REPLACE INTO lab_processes (lab, node, pid, start, cmd) VALUES (@lab, @node, @pid, @start, @cmd)'),
      procDelete: db.prepare('DELETE FROM lab_processes WHERE lab = ? AND node = ? AND pid = ?'),
    };
  }

  lab(name: string): LabRow | undefined {
    return this.q.lab.get(name) as LabRow | undefined;
  }
  labs(): LabRow[] {
    return this.q.labs.all() as LabRow[];
  }
  putLab(r: LabRow): void {
    this.q.labUpsert.run(r);
  }
  setLabState(name: string, state: Lifecycle): void {
    this.q.labState.run(state, name);
  }
  deleteLab(name: string): void {
    this.q.labDelete.run(name);
    this.q.partsDelete.run(name);
  }

  parts(lab: string): Map<string, string> {
    const out = new Map<string, string>();
    for (const r of this.q.parts.all(lab) as { kind: string; key: string; sig: string }[]) out.set(`${r.kind}/${r.key}`, r.sig);
    return out;
  }
  putPart(lab: string, kind: string, key: string, sig: string): void {
    this.q.partPut.run(lab, kind, key, sig);
  }
  deletePart(lab: string, kind: string, key: string): void {
    this.q.partDelete.run(lab, kind, key);
  }

  wire(id: string): WireRecord | undefined {
    const r = this.q.wire.get(id) as WireRow | undefined;
    return r && toWire(r);
  }
  wires(owner?: Owner): WireRecord[] {
    const rows = (owner === undefined ? this.q.wires.all() : this.q.wiresByOwner.all(owner)) as WireRow[];
    return rows.map(toWire);
  }
  wiresOfSandbox(sandboxId: string): WireRecord[] {
    return (this.q.wiresBySandbox.all(sandboxId, sandboxId) as WireRow[]).map(toWire);
  }
  insertWire(w: WireRecord): void {
    this.q.wireInsert.run(w);
  }
  setWireState(id: string, state: Lifecycle): void {
    this.q.wireState.run(state, id);
  }
  deleteWire(id: string): void {
    this.q.wireDelete.run(id);
  }

  processes(lab: string): ProcessRecord[] {
    return this.q.procs.all(lab) as ProcessRecord[];
  }
  insertProcess(p: ProcessRecord): void {
    this.q.procInsert.run(p);
  }
  deleteProcess(p: Pick<ProcessRecord, 'lab' | 'node' | 'pid'>): void {
    this.q.procDelete.run(p.lab, p.node, p.pid);
  }
}
