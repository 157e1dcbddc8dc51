import { createRtNetlink, type RtNetlinkSocket } from 'netlink';
import { KernelError, errnoOf } from './error.js';
import { type Netns, inNetns } from './netns.js';

/**
 * A route-netlink socket bound for life to one namespace (the one it was created in).
 * Every kernel verb (linkAdd, addrAdd, routeAdd...) takes one; requests on one handle may be
 * in flight together, which is how tnet pipelines an endpoint's setup.
 * Close it when done: an open socket keeps its namespace alive.
 */
const RCVBUF = 8 << 20;

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
    // An 'error' event without a listener would throw inside the addon's native callback and
    // abort the process; requests in flight still fail on their own.
    // Replies to a burst of pipelined requests can outrun a 208 KiB receive buffer; an overrun
    // sets the socket's error (EPOLLERR), which the addon cannot report without aborting.
    sock.socket.socket.setRecvBufferSize(RCVBUF);
    sock.socket.on('error', (e) => process.emitWarning(`netlink socket${ns ? ` in ${String(ns)}` : ''}: ${e.message}`));
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

  /**
   * Runs a dump request (every link, address or route) on a socket of its own in this handle's
   * namespace. On a shared socket a dump collides with everything else in flight there: the kernel
   * refuses a second dump (EBUSY), and the netlink package ends a multipart reply at the first
   * other message (the ACK of a concurrent request: "Multipart message not terminated properly").
   */
  async dump<T>(op: string, object: string, request: (sock: RtNetlinkSocket) => Promise<T>): Promise<T> {
    const own = Rtnl.open(this.ns);
    try {
      return await this.call(op, object, () => request(own.sock));
    } finally {
      own.close();
    }
  }

  close(): void {
    // Never close inside the socket's own native callback: our code often runs in the
    // microtasks drained there, and the addon aborts the process (Napi::Error) if the socket
    // it is still handling is gone. setImmediate runs after that callback has returned.
    setImmediate(() => this.sock.socket.close());
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
