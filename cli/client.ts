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
      const req = request(
        { socketPath: this.socket, method, path, headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {} },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString();
            const json = text ? (JSON.parse(text) as unknown) : undefined;
            if ((res.statusCode ?? 500) >= 400) reject(new ApiFailure(res.statusCode ?? 500, (json as { error: ApiError }).error));
            else resolve(json as T);
          });
        },
      );
      req.on('error', reject);
      req.end(data);
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
    mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const logFd = openSync(join(stateDir, 'daemon.log'), 'a');
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
