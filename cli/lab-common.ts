/**
 * What the lab verbs (create, destroy, ls, inspect, graph, exec LAB NODE) share: their global
 * options, the daemon client, tables. Each verb parses its own options (node:util parseArgs).
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';
import { Client, DEFAULT_SOCKET } from './client.js';

export const GLOBAL_HELP = `Global options:
  --state-dir DIR   state directory (default $TNET_STATE_DIR or /var/lib/tnet)
  --socket PATH     daemon control socket (default $TNET_SOCKET or ${DEFAULT_SOCKET})
  -h, --help        this help`;

/** A mistake in the command line: exit code 2 (cli/main.ts maps code 'invalid-argument' to it). */
export class UsageError extends Error {
  readonly code = 'invalid-argument';
}

type Options = NonNullable<ParseArgsConfig['options']>;

/** Parses a verb's arguments with the global options added; undefined when --help was asked (printed). */
export function parseVerb<O extends Options>(argv: string[], options: O, help: string) {
  const parsed = parseArgs({
    args: argv,
    allowPositionals: true,
    strict: true,
    options: { ...options, help: { type: 'boolean', short: 'h' }, 'state-dir': { type: 'string' }, socket: { type: 'string' } },
  });
  const o = parsed.values as Record<string, string | boolean | string[] | undefined>;
  if (o.help) {
    process.stdout.write(help + '\n');
    return undefined;
  }
  const stateDir = (o['state-dir'] as string | undefined) ?? process.env.TNET_STATE_DIR ?? '/var/lib/tnet';
  const socket = (o.socket as string | undefined) ?? process.env.TNET_SOCKET ?? DEFAULT_SOCKET;
  return { values: o, positionals: parsed.positionals, stateDir, client: new Client(socket) };
}

/** A client whose daemon answers (started if needed). */
export async function daemon(v: { client: Client; stateDir: string }): Promise<Client> {
  await v.client.ensureDaemon(v.stateDir);
  return v.client;
}

export const printJson = (x: unknown) => process.stdout.write(JSON.stringify(x, null, 2) + '\n');

/** Columns padded to the widest cell, as `docker ls` prints. */
export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('').trimEnd()).join('\n');
}
