import { createRtNetlink, type RtNetlinkSocket } from 'netlink';
import { KernelError, errnoOf } from './error.js';
import { type Netns, inNetns } from './netns.js';

/**
 * A route-netlink socket bound for life to one namespace (the one it was created in).
 * Every kernel verb (linkAdd, addrAdd, routeAdd...) takes one; requests on one handle may be
 * in flight together, which is how tnet pipelines an endpoint's setup.
 * Close it when done: an open socket keeps its namespace alive.
 */
export class Rtnl {
  readonly sock: RtNetlinkSocket;
  readonly ns: Netns | undefined;
  private constructor(sock: RtNetlinkSocket, ns: Netns | undefined) {
    this.sock = sock;
    this.ns = ns;
  }

  /** Opens a handle in `ns` (undefined: the process's own namespace). */
  static open(ns?: Netns): Rtnl {
    const sock = inNetns(ns, () => createRtNetlink());
    return new Rtnl(sock, ns);
  }

  /** Where this handle works, for error messages: "" or " in netns tn-a". */
  get where(): string {
    return this.ns ? ` in ${String(this.ns)}` : '';
  }

  /** Runs one request, turning the package's plain Error into a KernelError naming op and object. */
  async call<T>(op: string, object: string, request: () => Promise<T>): Promise<T> {
    try {
      return await request();
    } catch (e) {
      throw new KernelError(op, object + this.where, errnoOf(e), e);
    }
  }

  close(): void {
    this.sock.socket.close();
  }
}

/** Opens a handle in `ns`, runs `fn`, closes the handle. */
export async function withRtnl<T>(ns: Netns | undefined, fn: (h: Rtnl) => Promise<T>): Promise<T> {
  const h = Rtnl.open(ns);
  try {
    return await fn(h);
  } finally {
    h.close();
  }
}
