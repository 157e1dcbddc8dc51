/**
 * The lab file loader: YAML or JSON (JSON is YAML, so one parser), checked by checkLab(), every
 * problem placed at FILE:LINE:COLUMN: the key or value it is about, or the mapping a missing key
 * belongs in. Syntax errors and duplicate keys are problems too; all are reported at once.
 */
import { readFile } from 'node:fs/promises';
import { Alias, type Document, isMap, isPair, isScalar, isSeq, LineCounter, type Node, parseDocument, visit } from 'yaml';
import { checkLab } from '../libnetwork/lab/check.js';
import type { LabProblem, LabSpec, SpecPath } from '../libnetwork/lab/topology.js';

/** A problem in a file. `line` and `column` count from 1; 0 when the problem is the whole file (unreadable). */
export interface FileProblem {
  file: string;
  line: number;
  column: number;
  message: string;
  /** Where in the lab, for problems found by checkLab(). */
  path?: SpecPath;
}

/** What `-` reads from, and how problems name it. */
export const STDIN_NAME = '<stdin>';

/** Reads and checks a lab file (`-`: standard input). Never throws for a user's mistake. */
export async function loadLabFile(path: string): Promise<{ lab?: LabSpec; problems: FileProblem[] }> {
  const name = path === '-' ? STDIN_NAME : path;
  let text: string;
  try {
    text = path === '-' ? await readStdin() : await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why =
      code === 'ENOENT'
        ? 'no such file'
        : code === 'EISDIR'
          ? 'is a directory, not a lab file'
          : code === 'EACCES'
            ? 'permission denied'
            : (e as Error).message;
    return { problems: [{ file: name, line: 0, column: 0, message: `cannot read the lab file: ${why}` }] };
  }
  return parseLabText(text, name);
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Parses and checks a lab given as text; `fileName` is what problems are prefixed with. */
export function parseLabText(text: string, fileName: string): { lab?: LabSpec; problems: FileProblem[] } {
  const lineCounter = new LineCounter();
  // YAML 1.2 core schema: `yes`/`on` stay text, as JSON would have them; unique keys. Merge keys
  // (`<<: *defaults`) as containerlab files use them for shared node settings.
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true, strict: true, merge: true });
  const at = (offset: number) => {
    const { line, col } = lineCounter.linePos(offset);
    return { line, column: col };
  };
  const syntax: FileProblem[] = doc.errors
    .filter((e) => e.code !== 'DUPLICATE_KEY')
    .map((e) => ({ file: fileName, ...at(e.pos[0]), message: yamlMessage(e.message) }));
  // The parser places a duplicate key at the value before it: find them ourselves, at the key.
  visit(doc, {
    Map(_, map) {
      const first = new Map<string, number>();
      for (const pair of map.items) {
        const key = keyText(pair.key);
        const offset = rangeStart(pair.key);
        if (key === undefined || key === '<<' || offset === undefined) continue;
        const seen = first.get(key);
        if (seen === undefined) first.set(key, offset);
        else {
          const message = `key "${key}" is given twice in this mapping (first on line ${at(seen).line}); keys must be unique: merge or remove one`;
          syntax.push({ file: fileName, ...at(offset), message });
        }
      }
    },
  });
  // A duplicate key leaves a usable document (the last value wins): check the rest too.
  if (doc.errors.some((e) => e.code !== 'DUPLICATE_KEY')) return { problems: sortProblems(syntax) };
  let input: unknown;
  try {
    // An anchor merged into every node of a 10000-node lab is fine; aliases of aliases of aliases
    // (a "billion laughs") multiply past this and are refused before they eat the memory.
    input = doc.toJS({ maxAliasCount: 100_000 });
  } catch (e) {
    const why = /alias count/i.test((e as Error).message)
      ? 'its YAML aliases expand to too much data (aliases of aliases, a resource exhaustion attack?)'
      : (e as Error).message;
    return { problems: [{ file: fileName, line: 1, column: 1, message: `the file cannot be read as a lab: ${why}` }] };
  }
  if (input === null || input === undefined) {
    const message = 'the file is empty; a lab needs at least a name and its nodes (name: lab1, nodes: {r1: {}})';
    return { problems: sortProblems([...syntax, { file: fileName, line: 1, column: 1, message }]) };
  }
  const { lab, problems } = checkLab(input);
  const placed = problems.map((p) => ({ file: fileName, ...at(offsetOf(doc, p)), message: p.message, path: p.path }));
  const all = sortProblems([...syntax, ...placed]);
  return all.length ? { problems: all } : { lab: lab!, problems: [] };
}

/** The yaml package's words for what is wrong, without its "at line L, column C" and snippet. */
function yamlMessage(message: string): string {
  const head = message.split(/ at line \d+, column \d+/)[0]!.trim();
  return `not valid YAML or JSON: ${head.charAt(0).toLowerCase()}${head.slice(1)}`;
}

/**
 * Where in the text a problem is: the key itself for `at: 'key'`, else the value at the path; for
 * a path that goes further than the file (a missing key), the deepest part that exists.
 */
function offsetOf(doc: Document, problem: LabProblem): number {
  let node: unknown = doc.contents;
  let keyOffset: number | undefined;
  let best = rangeStart(node) ?? 0;
  for (let i = 0; i < problem.path.length; i++) {
    const seg = problem.path[i]!;
    if (node instanceof Alias) node = node.resolve(doc);
    if (isMap(node)) {
      // The last of duplicate keys: its value is the one that was checked.
      const pair = [...node.items].reverse().find((it) => isPair(it) && keyText(it.key) === String(seg));
      if (!pair) break;
      keyOffset = rangeStart(pair.key);
      const last = i === problem.path.length - 1;
      if (last && problem.at === 'key' && keyOffset !== undefined) return keyOffset;
      node = pair.value;
      // An empty value (`h1:`) has no text of its own: its key stands for it.
      best = (isScalar(node) && node.value === null && node.source === '' ? undefined : rangeStart(node)) ?? keyOffset ?? best;
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg];
      if (item === undefined) break;
      node = item;
      best = rangeStart(node) ?? best;
    } else break;
  }
  return best;
}

function keyText(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value);
  return undefined;
}

function rangeStart(node: unknown): number | undefined {
  if (node && typeof node === 'object' && 'range' in node) {
    const r = (node as Node).range;
    if (r) return r[0];
  }
  return undefined;
}

function sortProblems(problems: FileProblem[]): FileProblem[] {
  return problems
    .map((p, i) => ({ p, i }))
    .sort((a, b) => a.p.line - b.p.line || a.p.column - b.p.column || a.i - b.i)
    .map((x) => x.p);
}

/** One line per problem, `FILE:LINE:COL: message` (`FILE: message` for the whole file), by position. */
export function formatProblems(problems: readonly FileProblem[]): string {
  return sortProblems([...problems])
    .map((p) => (p.line > 0 ? `${p.file}:${p.line}:${p.column}: ${p.message}` : `${p.file}: ${p.message}`))
    .join('\n');
}
