/**
 * A unix-socket HTTP server that listens before the application behind it has loaded.
 *
 * fastify, pino, the netlink addon and the state cost a few hundred ms of start-up; dockerd gives up
 * on a plugin that does not answer, and `tnet` waits on the daemon's /ping. So a plain node:http
 * server listens first and answers the few requests that need no state itself ("early answers"),
 * holds every other request, and hands all of them to the real handler once it is attached.
 *
 * Imports only node: modules, on purpose: this file is on the start-up path.
 */
import { chmodSync, chownSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

/** "METHOD /path" -> the JSON body answered before the application is ready (a function is called per request). */
export type EarlyAnswers = Readonly<Record<string, unknown>>;

/** Whether something answers on the socket (a live server we must not steal the path from). */
export function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

export class SocketInUse extends Error {
  constructor(readonly path: string) {
    super(`another process is serving ${path} (is a tnet daemon already running?)`);
  }
}

export class EarlySocket {
  readonly server: Server;
  private handler: Handler | undefined;
  private readonly held: [IncomingMessage, ServerResponse][] = [];

  constructor(private readonly early: EarlyAnswers) {
    this.server = createServer((req, res) => this.request(req, res));
  }

  private request(req: IncomingMessage, res: ServerResponse): void {
    if (this.handler) return this.handler(req, res);
    const entry = this.early[`${req.method} ${(req.url ?? '').split('?')[0]}`];
    if (entry === undefined) {
      this.held.push([req, res]);
      return;
    }
    req.resume();
    req.on('end', () => {
      const body = typeof entry === 'function' ? (entry as () => unknown)() : entry;
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    });
  }

  /** The server to give the application (fastify's serverFactory): its handler takes over from here. */
  attach(handler: Handler): Server {
    this.handler = handler;
    return this.server;
  }

  /** The application is ready: the held requests go to it, in arrival order. */
  release(): void {
    for (const [req, res] of this.held.splice(0)) this.handler!(req, res);
  }

  /** The application failed to load: held requests get a 503 naming why, instead of hanging. */
  fail(why: string): void {
    for (const [req, res] of this.held.splice(0)) {
      req.resume();
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'unavailable', message: why }, Err: why }));
    }
  }

  /**
   * Listens on `path` with `mode` from the first instant (the umask covers the bind, so there is
   * never a window where the socket is more open), owned by root and `gid` when given. A stale
   * socket file is replaced; a live one is refused with SocketInUse.
   */
  async listen(path: string, mode: number, gid?: number): Promise<void> {
    mkdirSync(dirname(path), { recursive: true, mode: 0o755 });
    try {
      if (statSync(path).isSocket() && (await socketAlive(path))) throw new SocketInUse(path);
      rmSync(path, { force: true });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const old = process.umask(~mode & 0o777);
    try {
      await new Promise<void>((resolve, reject) => {
        this.server.once('error', reject);
        this.server.listen({ path }, () => {
          this.server.off('error', reject);
          resolve();
        });
      });
    } finally {
      process.umask(old);
    }
    chmodSync(path, mode);
    if (gid !== undefined) chownSync(path, 0, gid);
  }

  async close(): Promise<void> {
    this.fail('the server is stopping');
    if (this.server.listening) await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
