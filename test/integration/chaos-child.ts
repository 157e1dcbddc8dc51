/**
 * The chaos tests' child (chaos.test.ts): opens the state (the start-up reconcile), runs one
 * operation and exits; armed with TNET_FAILPOINT it dies with SIGKILL at that point instead.
 * Argument: JSON [stateDir, op, ...args].
 */
import { Controller } from '../../libnetwork/controller.js';

const [dir, op, ...args] = JSON.parse(process.argv[2]!) as [string, string, ...string[]];
const c = await Controller.open({ stateDir: dir });
const [a = '', b = '', extra] = args;
if (op === 'create-network') await c.createNetwork({ name: a, subnet: b });
else if (op === 'delete-network') await c.deleteNetwork(a);
else if (op === 'create-sandbox') await c.createSandbox({ name: a });
else if (op === 'delete-sandbox') await c.deleteSandbox(a);
else if (op === 'connect') await c.connect(a, b, extra ? { ports: JSON.parse(extra) } : {});
else if (op === 'disconnect') await c.disconnect(a, b);
else if (op !== 'open') throw new Error(`chaos child: unknown operation ${op}`);
c.close();
process.exit(0);
