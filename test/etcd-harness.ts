/**
 * A real etcd (Debian etcd-server) for a test, with TLS client authentication: a CA, a server
 * certificate for 127.0.0.1 and a client certificate, made here with openssl in a temporary
 * directory that stop() removes. Listens on 127.0.0.1 of the test's own network namespace
 * (isolate() gave it one), on free ports. Start and health wait follow ../shared/peers/etcd.sh:
 * start, then poll `etcdctl endpoint health` every 100 ms; the process is stopped by its pid.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface EtcdTls {
  readonly ca: string;
  readonly cert: string;
  readonly key: string;
}

export interface Etcd {
  /** The `--store` value: etcds://HOST:PORT (HOST: 127.0.0.1 unless startEtcd was given another). */
  readonly url: string;
  readonly tls: EtcdTls;
  readonly pid: () => number | undefined;
  /** Stops (SIGTERM, then SIGKILL after 5 s) and waits for the exit; the data stays for start(). */
  stop(): Promise<void>;
  /** Starts again on the same data directory and waits until healthy. */
  start(): Promise<void>;
  /** kill -9. */
  kill(): Promise<void>;
  /** Compacts the history up to the current revision (etcdctl compact); returns that revision. */
  compact(): Promise<number>;
  /** Runs etcdctl against this etcd (with the client certificate); throws on failure. */
  ctl(...args: string[]): string;
  /** Stops etcd and removes the certificates and data. */
  destroy(): Promise<void>;
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.error?.message ?? ''}${r.stderr}`);
  return r.stdout;
}

/** A CA, a server certificate with IP SAN 127.0.0.1 (+ localhost, + `extraIps`), a client certificate. */
export function makeCerts(dir: string, extraIps: readonly string[] = []): EtcdTls & { serverCert: string; serverKey: string } {
  const p = (f: string) => join(dir, f);
  const key = (f: string) => run('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p(f)]);
  key('ca.key');
  run('openssl', ['req', '-x509', '-new', '-key', p('ca.key'), '-subj', '/CN=tnet test CA', '-days', '1', '-out', p('ca.crt')]);
  const sign = (name: string, cn: string, ext: string) => {
    key(`${name}.key`);
    run('openssl', ['req', '-new', '-key', p(`${name}.key`), '-subj', `/CN=${cn}`, '-out', p(`${name}.csr`)]);
    writeFileSync(p(`${name}.ext`), ext);
    run('openssl', ['x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '1', '-extfile', p(`${name}.ext`), '-out', p(`${name}.crt`)]);
  };
  const sans = ['IP:127.0.0.1', ...extraIps.map((ip) => `IP:${ip}`), 'DNS:localhost'].join(',');
  sign('server', 'etcd', `subjectAltName=${sans}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  sign('client', 'tnet', 'extendedKeyUsage=clientAuth\n');
  return { ca: p('ca.crt'), cert: p('client.crt'), key: p('client.key'), serverCert: p('server.crt'), serverKey: p('server.key') };
}

/** A port nothing listens on now (the kernel's pick for port 0). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * `tls: false`: plain etcd:// without certificates (the default is TLS with client authentication).
 * `host`: the address clients use (default 127.0.0.1), e.g. an underlay bridge's address that
 * namespaced "hosts" reach; it goes into the server certificate, and etcd also listens on
 * 127.0.0.1.
 */
export async function startEtcd(opts: { tls?: boolean; host?: string } = {}): Promise<Etcd> {
  const secure = opts.tls !== false;
  const host = opts.host ?? '127.0.0.1';
  const dir = mkdtempSync(join(tmpdir(), 'tnet-etcd-'));
  const certs = makeCerts(dir, host === '127.0.0.1' ? [] : [host]);
  const clientPort = await freePort();
  const peerPort = await freePort();
  const scheme = secure ? 'https' : 'http';
  const endpoint = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${clientPort}`;
  const listen = host === '127.0.0.1' ? endpoint : `${endpoint},${scheme}://127.0.0.1:${clientPort}`;
  const tlsArgs = secure ? ['--cert-file', certs.serverCert, '--key-file', certs.serverKey, '--client-cert-auth', '--trusted-ca-file', certs.ca] : [];
  const ctlTls = secure ? [`--cacert=${certs.ca}`, `--cert=${certs.cert}`, `--key=${certs.key}`] : [];
  const ctl = (...args: string[]) =>
    spawnSync('etcdctl', [`--endpoints=${endpoint}`, ...ctlTls, '--command-timeout=2s', ...args], {
      encoding: 'utf8',
      timeout: 10_000,
      env: { ...process.env, ETCDCTL_API: '3' },
    });
  let child: ChildProcess | undefined;
  const logFile = join(dir, 'etcd.log');

  const start = async () => {
    const out = openSync(logFile, 'a');
    child = spawn(
      'etcd',
      [
        '--name', 'tnet-test',
        '--data-dir', join(dir, 'data'),
        '--listen-client-urls', listen,
        '--advertise-client-urls', endpoint,
        '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
        '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
        '--initial-cluster', `tnet-test=http://127.0.0.1:${peerPort}`,
        ...tlsArgs,
        '--logger', 'zap',
        '--log-level', 'warn',
      ],
      { stdio: ['ignore', out, out], detached: true },
    );
    const c = child;
    for (let i = 0; i < 300; i++) {
      if (c.exitCode !== null || c.signalCode !== null) break;
      if (ctl('endpoint', 'health').status === 0) return;
      await sleep(100);
    }
    const tail = readFileSync(logFile, 'utf8').split('\n').slice(-8).join('\n');
    await stop();
    throw new Error(`etcd did not become healthy at ${endpoint}:\n${tail}`);
  };

  const waitExit = async (c: ChildProcess, ms: number) => {
    const end = Date.now() + ms;
    while (c.exitCode === null && c.signalCode === null && Date.now() < end) await sleep(50);
    return c.exitCode !== null || c.signalCode !== null;
  };

  const stop = async () => {
    const c = child;
    child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill('SIGTERM');
    if (!(await waitExit(c, 5000))) {
      c.kill('SIGKILL');
      await waitExit(c, 5000);
    }
  };

  await start();
  return {
    url: `${secure ? 'etcds' : 'etcd'}://${endpoint.slice(endpoint.indexOf('//') + 2)}`,
    tls: { ca: certs.ca, cert: certs.cert, key: certs.key },
    pid: () => child?.pid,
    stop,
    start,
    kill: async () => {
      const c = child;
      child = undefined;
      if (!c) return;
      c.kill('SIGKILL');
      await waitExit(c, 5000);
    },
    compact: async () => {
      const r = ctl('endpoint', 'status', '-w', 'json');
      if (r.status !== 0) throw new Error(`etcdctl endpoint status: ${r.stderr}`);
      const rev = (JSON.parse(r.stdout) as { Status: { header: { revision: number } } }[])[0]!.Status.header.revision;
      const c = ctl('compact', String(rev), '--physical');
      if (c.status !== 0) throw new Error(`etcdctl compact ${rev}: ${c.stderr}`);
      return rev;
    },
    ctl: (...args: string[]) => {
      const r = ctl(...args);
      if (r.status !== 0) throw new Error(`etcdctl ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    },
    destroy: async () => {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
