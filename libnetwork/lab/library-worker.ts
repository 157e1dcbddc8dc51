/**
 * The process that owns one library lab (library.ts starts it). It runs as PID 1 of its own PID,
 * network and mount namespaces, with private tmpfs mounts on every directory tnet writes runtime
 * state to, and an in-process Controller whose state lives on one of them: so when it dies, for
 * whatever reason, the kernel takes everything with it (every process in the PID namespace, the
 * mounts that hold the node namespaces, the namespaces and their links). Nothing the lab made is
 * ever visible outside.
 *
 * It talks to the test process over stdin/stdout, one JSON object a line:
 *   request  {"id":1,"op":"apply","spec":{...},"dryRun":false}
 *   answer   {"id":1,"ok":true,"result":...} | {"id":1,"ok":false,"error":{"code","message","object"}}
 *   progress {"id":1,"progress":{"done","total","what"}}
 * and announces itself with {"ready":true} once the controller (and the lab DNS) are up. Stdin
 * closing means the test process is gone: the worker exits at once, which destroys the lab.
 * Logs go to stderr (libnetwork/log.ts).
 */
import { createInterface } from 'node:readline';
import { Controller } from '../controller.js';
import { isTnetError } from '../errors.js';
import { startDnsService, type DnsService } from '../../dns/index.js';
import type { LabSpec } from './topology.js';

/** Under the private tmpfs on /run/tnet: gone with the mount namespace. */
const STATE_DIR = '/run/tnet/lab-state';

interface Request {
  id: number;
  op: 'apply' | 'destroy' | 'details' | 'netns' | 'labs';
  spec?: LabSpec;
  dryRun?: boolean;
  name?: string;
  node?: string;
}

const send = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

async function main(): Promise<void> {
  const controller = await Controller.open({ stateDir: STATE_DIR, scope: '' });
  // Names resolve inside the nodes as under the daemon: 127.0.0.11 in every node, resolv.conf in
  // the (private) /etc/netns. A lab still works without it (a kernel without what DNS needs).
  let dns: DnsService | undefined;
  try {
    dns = await startDnsService(controller, {});
  } catch (e) {
    process.stderr.write(`lab worker: no DNS in the lab's nodes: ${(e as Error).message}\n`);
  }
  let lab: string | undefined;

  const exit = (code: number) => {
    // No graceful teardown needed: leaving the namespaces is the teardown.
    process.exit(code);
  };
  process.stdin.on('end', () => exit(0));
  process.on('SIGTERM', () => exit(0));
  process.on('SIGINT', () => exit(0));

  const handle = async (req: Request): Promise<unknown> => {
    switch (req.op) {
      case 'apply': {
        const r = await controller.applyLab(req.spec!, {
          dryRun: req.dryRun,
          onProgress: (p) => send({ id: req.id, progress: p }),
        });
        if (!req.dryRun) lab = req.spec!.name;
        return r;
      }
      case 'details':
        return controller.labDetails(req.name ?? lab!);
      case 'labs':
        return controller.labs();
      case 'netns':
        return controller.labNodeNetns(req.name ?? lab!, req.node!);
      case 'destroy': {
        // Stops the nodes' processes gently (SIGTERM first) before the namespaces go.
        const r = lab ? await controller.destroyLab(lab) : { removed: 0 };
        await dns?.close();
        controller.close();
        return r;
      }
    }
    throw new Error(`unknown request "${String((req as { op: unknown }).op)}"`);
  };

  // One request at a time, in order: a lab is changed by one caller.
  let chain: Promise<void> = Promise.resolve();
  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  rl.on('line', (line) => {
    if (!line.trim()) return;
    let req: Request;
    try {
      req = JSON.parse(line) as Request;
    } catch {
      send({ id: -1, ok: false, error: { code: 'internal', message: `lab worker: not JSON: ${line.slice(0, 200)}` } });
      return;
    }
    chain = chain.then(async () => {
      try {
        const result = await handle(req);
        send({ id: req.id, ok: true, result: result ?? null });
      } catch (e) {
        const err = e as Error;
        send({
          id: req.id,
          ok: false,
          error: { code: isTnetError(e) ? e.code : 'internal', message: err.message, object: isTnetError(e) ? e.object : undefined },
        });
      }
      if (req.op === 'destroy') exit(0);
    });
  });
  send({ ready: true, pid: process.pid });
}

main().catch((e: Error) => {
  process.stderr.write(`lab worker: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
