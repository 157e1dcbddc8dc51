/**
 * Named crash points, for the tests that prove a kill -9 anywhere in an operation is repaired by
 * the next start's reconcile: with TNET_FAILPOINT=NAME in its environment, a process kills itself
 * (SIGKILL, no clean-up) when it reaches that point; NAME@K at its K-th pass (a point inside a
 * loop, such as the reconcile's per-endpoint repair). Unset, a failpoint is one string compare.
 */
const spec = process.env.TNET_FAILPOINT;
const at = spec?.lastIndexOf('@') ?? -1;
const armed = at > 0 ? spec!.slice(0, at) : spec;
let remaining = at > 0 ? Number(spec!.slice(at + 1)) : 1;

export function failpoint(name: string): void {
  if (armed === name && --remaining <= 0) process.kill(process.pid, 'SIGKILL');
}

/** Every failpoint name the core passes, by operation class: what the chaos tests sample. */
export const FAILPOINTS = {
  createNetwork: ['create-network:intent', 'create-network:pools', 'create-network:bridge-untagged', 'create-network:made', 'create-network:ready'],
  deleteNetwork: ['delete-network:deleting', 'delete-network:driver-done', 'network:pools-released'],
  createSandbox: ['create-sandbox:intent', 'create-sandbox:netns'],
  deleteSandbox: ['delete-sandbox:deleting', 'delete-sandbox:torn-down', 'delete-sandbox:ns-gone', 'delete-sandbox:forgotten'],
  connect: ['connect:intent', 'connect:allocated', 'connect:joined', 'connect:configured', 'connect:published', 'connect:ready'],
  disconnect: ['disconnect:deleting', 'endpoint:unpublished', 'disconnect:left', 'disconnect:forgotten', 'disconnect:gateway-handed'],
  reconcile: ['reconcile:undone', 'reconcile:restored', 'reconcile:netns-made', 'reconcile:endpoint-left', 'reconcile:endpoint-joined', 'reconcile:endpoint-configured'],
} as const;
