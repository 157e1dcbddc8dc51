import { spawn } from 'node:child_process';
import { mkdirSync, openSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEFAULT_SOCKET = '/run/tnet/tnet.sock';

export interface ApiError {
  code: string;
  message: string;
  object?: string;
}

export class ApiFailure extends Error {
  readonly status: number;
  readonly error: ApiError;
  constructor(status: number, error: ApiError) {
    super(error.message);
    this.status = status;
    this.error = error;
  }
}

/** A client of the daemon's control API over its unix socket. */
export class Client {
  readonly socket: string;
  constructor(socket: string) {
    this.socket = socket;
  }

  call<T>(method: string, path: string, body?: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      let sent = false;
      const req = request(
        { socketPath: this.socket, method, path, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (e) => reject(this.lost(method, path, e)));
          res.on('end', () => {
            if (!res.complete) return reject(this.lost(method, path, new Error('the answer was cut short')));
            const text = Buffer.concat(chunks).toString();
            let json: unknown;
            try {
              json = text ? (JSON.parse(text) as unknown) : undefined;
            } catch {
              return reject(new ApiFailure(res.statusCode ?? 500, { code: 'internal', message: `the daemon answered ${method} ${path} with something that is not JSON: ${text.slice(0, 200)}` }));
            }
            const status = res.statusCode ?? 500;
            if (status >= 400) {
              const error = (json as { error?: ApiError } | undefined)?.error;
              reject(new ApiFailure(status, error?.message ? error : { code: status < 500 ? 'invalid-argument' : 'internal', message: `the daemon refused ${method} ${path} (HTTP ${status})` }));
            } else resolve(json as T);
          });
        },
      );
      req.on('finish', () => (sent = true));
      req.on('error', (e: NodeJS.ErrnoException) => reject(sent || !['ENOENT', 'ECONNREFUSED', 'EACCES'].includes(e.code ?? '') ? this.lost(method, path, e) : this.unreachable(e)));
      req.end(data);
    });
  }

  /** No daemon listens on the socket (or it is not ours to use): nothing was sent. */
  private unreachable(e: NodeJS.ErrnoException): ApiFailure {
    const why = e.code === 'EACCES' ? 'permission denied (the control socket is root-only)' : e.code === 'ENOENT' ? 'the socket does not exist' : 'nothing listens on it';
    return new ApiFailure(503, { code: 'unavailable', message: `cannot reach the tnet daemon at ${this.socket}: ${why}; start it with \`tnet daemon\` (or run any tnet command as root to start one)` });
  }

  /**
   * The daemon went away with the request in flight (killed, crashed: "socket hang up"). A query
   * changed nothing; a change may or may not have been applied, and the restarted daemon's
   * reconcile finishes or undoes a half-done one, so the user must look before retrying.
   */
  private lost(method: string, path: string, e: Error): ApiFailure {
    const what = `the tnet daemon stopped in the middle of ${method} ${path} (${e.message})`;
    if (method === 'GET') return new ApiFailure(503, { code: 'unavailable', message: `${what}; nothing was changed, try again` });
    const check = path.startsWith('/networks') ? 'tnet network ls' : path.startsWith('/sandboxes') ? 'tnet sandbox ls' : 'tnet sandbox inspect SANDBOX';
    return new ApiFailure(503, {
      code: 'unavailable',
      message: `${what}: the change may or may not have been applied. The next tnet command restarts the daemon, which finishes or undoes a half-done change; check with \`${check}\` before trying again`,
    });
  }

  async ping(): Promise<boolean> {
    try {
      await this.call('GET', '/ping');
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Makes sure a daemon answers on the socket, starting one in the background if none does,
   * so that `tnet ...` works on its own. The daemon's log goes to STATE_DIR/daemon.log.
   */
  async ensureDaemon(stateDir: string): Promise<void> {
    if (await this.ping()) return;
    let logFd: number;
    try {
      mkdirSync(stateDir, { recursive: true, mode: 0o700 });
      logFd = openSync(join(stateDir, 'daemon.log'), 'a');
    } catch (e) {
      throw new ApiFailure(503, { code: 'unavailable', message: `no tnet daemon answers on ${this.socket}, and none can be started: ${(e as Error).message} (check --state-dir, or start one with \`tnet daemon\`)` });
    }
    const main = fileURLToPath(new URL('./main.js', import.meta.url));
    const child = spawn(process.execPath, [main, 'daemon', '--state-dir', stateDir, '--socket', this.socket], {
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: { ...process.env, TNET_LOG_LEVEL: process.env.TNET_LOG_LEVEL ?? 'info' },
    });
    child.unref();
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (await this.ping()) return;
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new ApiFailure(503, { code: 'unavailable', message: `the tnet daemon did not start; see ${join(stateDir, 'daemon.log')}` });
  }
}
