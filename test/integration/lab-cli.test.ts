import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { assertClean, isolate, stateDir } from './harness.js';

// The lab verbs of the `tnet` command against the control API on a unix socket, served here by a
// Controller and the API server in this process (what `tnet daemon` runs). The verbs run
// in-process (their run()), except a few through the command itself for its exit codes: each
// command started from the sources costs seconds on a loaded machine.

await isolate();
const { Controller } = await import('../../libnetwork/controller.js');
const { controlServer } = await import('../../libnetwork/api/server.js');
const create = await import('../../cli/create.js');
const destroy = await import('../../cli/destroy.js');
const ls = await import('../../cli/ls.js');
const inspect = await import('../../cli/inspect.js');
const graph = await import('../../cli/graph.js');

const dir = stateDir(t);
const sock = join(dir, 'tnet.sock');
process.env.TNET_SOCKET = sock;
process.env.TNET_STATE_DIR = dir;
const c = await Controller.open({ stateDir: dir });
const app = await controlServer(Promise.resolve(c));
await app.listen({ path: sock });
t.teardown(async () => {
  await app.close();
  c.close();
});

/** A verb's run() with its output captured. */
async function verb(v: { run(argv: string[], after?: string[]): Promise<number> }, ...argv: string[]): Promise<{ code: number; out: string }> {
  let out = '';
  const write = process.stdout.write;
  process.stdout.write = ((chunk: string | Uint8Array) => ((out += chunk.toString()), true)) as typeof process.stdout.write;
  try {
    return { code: await v.run(argv, []), out };
  } finally {
    process.stdout.write = write;
  }
}

// the command itself, transpile-only with only the TypeScript loader of this test's node flags
const MAIN = join(import.meta.dirname, '../../cli/main.ts');
const NODE = process.execArgv.filter((a) => a.includes('typescript'));
async function tnet(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  try {
    const r = await promisify(execFile)(process.execPath, [...NODE, MAIN, ...args], { env: { ...process.env, TS_NODE_TRANSPILE_ONLY: '1' }, timeout: 60_000 });
    return { code: 0, out: r.stdout, err: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, out: x.stdout ?? '', err: x.stderr ?? '' };
  }
}

const file = join(dir, 'lab1.yml');
writeFileSync(
  file,
  `name: lab1
networks:
  lan0: { subnet: 10.10.0.0/24, mtu: 9000 }
nodes:
  r1: { sysctls: { net.ipv4.ip_forward: 1 } }
  r2: { loopback: 10.0.0.2/32 }
  h1: {}
links:
  - endpoints: ["r1:eth1", "r2:eth1"]
    mtu: 1500
  - endpoints: ["h1:eth0", "lan0"]
  - endpoints: ["r1:eth2", "lan0"]
    ipv4: 10.10.0.254/24
`,
);
const bad = join(dir, 'bad.yml');
writeFileSync(bad, 'name: bad\nnodes:\n  a: {}\nlinks:\n  - endpoints: ["a:eth0", "zz:eth0"]\n');

t.test('create, look, exec, graph, destroy by file', async (tt) => {
  const dry = await verb(create, '--dry-run', file);
  tt.equal(dry.code, 0, 'dry-run exits 0');
  tt.match(dry.out, /r1\s+eth1\s+10\.254\.\d+\.\d+\/31\s+1500\s+r2:eth1/, 'the plan shows r1:eth1 with its /31 and MTU');
  tt.match(dry.out, /would create: node r1/, 'and what would be made');
  tt.same(JSON.parse((await verb(ls, '--json')).out), [], 'a dry run makes nothing');

  const made = await verb(create, file);
  tt.match(made.out, /lab lab1: 3 nodes, 3 links, 1 networks; created 7/, 'create says what it made');
  tt.match((await verb(create, file)).out, /lab lab1: up to date/, 'the same file again changes nothing');
  tt.same(JSON.parse((await verb(ls, '--json')).out).map((l: { name: string; nodes: number }) => [l.name, l.nodes]), [['lab1', 3]], 'ls --json');
  tt.match((await verb(ls)).out, /^NAME\s+STATE\s+NODES[^\n]*\nlab1\s+ready\s+3/, 'ls prints a table');
  const d = JSON.parse((await verb(inspect, 'lab1', '--json')).out) as { nodes: { name: string; interfaces: { addresses: string[] }[] }[] };
  const h1 = d.nodes.find((n) => n.name === 'h1')!.interfaces[0]!.addresses[0]!.split('/')[0]!;
  tt.match((await verb(inspect, 'lab1')).out, /NODE\s+NETNS\s+INTERFACE\s+ADDRESSES\s+MTU\s+TO/, 'inspect prints a table');
  tt.match((await verb(graph, 'lab1', '--format', 'mermaid')).out, /10\.10\.0\.254/, 'graph of a running lab shows its addresses');
  tt.match((await verb(graph, file, '--format', 'dot')).out, /^graph /, 'graph of a file, dot');
  tt.match((await verb(create, '--help')).out, /^Usage: tnet create FILE\|-/, 'create --help');

  // through the command: exit codes
  const ping = await tnet('exec', 'lab1', 'r1', '--', 'ping', '-c1', '-W2', h1);
  tt.equal(ping.code, 0, 'exec LAB NODE runs in the node');
  tt.match(ping.out, /1 received/, 'and its output comes through');
  tt.equal((await tnet('exec', 'lab1', 'r1', '--', 'sh', '-c', 'exit 7')).code, 7, "exec returns the command's exit code");
  const b = await tnet('create', bad);
  tt.equal(b.code, 2, 'a bad file: exit 2');
  tt.match(b.err, /bad\.yml:5:\d+: .*"zz"/, 'with file:line:column and the unknown node');

  tt.match((await verb(destroy, file)).out, /lab lab1: removed \d+ objects/, 'destroy FILE');
  tt.match((await verb(destroy, 'lab1')).out, /nothing to remove/, 'destroy twice is fine, and says so');
  tt.equal((await tnet('inspect', 'lab1')).code, 3, 'inspect of a gone lab: not found (3)');
  await assertClean(tt);
});
