/**
 * Named crash points, for the tests that prove a kill -9 anywhere in an operation is repaired by
 * the next start's reconcile: with TNET_FAILPOINT=NAME in its environment, a process kills itself
 * (SIGKILL, no clean-up) when it reaches that point. Unset, a failpoint is one string compare.
 */
const armed = process.env.TNET_FAILPOINT;

export function failpoint(name: string): void {
  if (armed === name) process.kill(process.pid, 'SIGKILL');
}
