/**
 * Docker parity, issue 13 "Tests": a docker-compose project (Debian's docker-compose 1.29, the
 * Python v1 `docker-compose`) against the test's own dockerd (Debian docker.io 20.10), side by
 * side: once with Docker's bridge driver and default IPAM (the oracle), once with tnet as network
 * and IPAM driver; outcomes compared.
 *
 * The project (test/e2e/compose/docker-compose.yml): services web (busybox httpd, a published
 * port, aliases on both networks, a static ipv4_address) and client; network front (the driver's,
 * default IPAM, driver_opts with com.docker.network.container_iface_prefix and an unknown key) and
 * network back (the driver's, IPAM driver's with a subnet). Checked: `up -d` succeeds, the services
 * resolve each other by service name and alias (dockerd's embedded DNS answers for plugin networks)
 * and ping by name, the static address is the one given, the published port answers on the host's
 * 127.0.0.1, `down` removes the containers and the networks, and tnet has nothing left (its own
 * view, `tnet network ls`, and links in the test's namespace).
 *
 * Skips with the reason printed when docker-compose is not installed or cannot talk to the dockerd.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { sh, until } from '../integration/harness.js';
import { type Dockerd, type Run, type TnetPlugin, ROOT, dockerAsync, httpGet, importBusybox, isolateDocker, startDockerd, startTnet, tnetLeftovers } from './docker-harness.js';

const COMPOSE = '/usr/bin/docker-compose';
const FILE = join(ROOT, 'test/e2e/compose/docker-compose.yml');
/** web's port 80 is published here (the test's namespace is its own: no other file uses it). */
const PORT = 18480;
const STATIC = '10.97.0.10';

if (process.env.TNET_ISOLATED !== '1' && !existsSync(COMPOSE)) {
  t.plan(0, `e2e: docker-compose not installed (missing ${COMPOSE}; apt-get install docker-compose, as scripts/setup.sh does)`);
  process.exit(0);
}
await isolateDocker();

/**
 * `docker-compose ...` for `project` against this test's dockerd only: DOCKER_HOST is its socket,
 * no DOCKER_* or COMPOSE_* from the caller's environment, a private, empty client configuration.
 */
function compose(d: Dockerd, config: string, project: string, vars: Record<string, string>, ...args: string[]): Run {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !/^(DOCKER|COMPOSE)_/.test(k)) env[k] = v;
  Object.assign(env, {
    DOCKER_HOST: `unix://${d.sock}`,
    DOCKER_CONFIG: config,
    COMPOSE_FILE: FILE,
    COMPOSE_PROJECT_NAME: project,
    COMPOSE_HTTP_TIMEOUT: '120',
    COMPOSE_INTERACTIVE_NO_CLI: '1',
    ...vars,
  });
  const r = spawnSync(COMPOSE, ['--ansi', 'never', ...args], { encoding: 'utf8', timeout: 240_000, env });
  return { code: r.status ?? 1, out: (r.stdout ?? '').trim(), err: (r.stderr ?? r.error?.message ?? '').trim() };
}

/** busybox nslookup inside a container: the addresses it printed (not the server's). */
async function nslookup(d: Dockerd, ctr: string, name: string): Promise<string[]> {
  const r = await dockerAsync(d, ['exec', ctr, 'timeout', '8', 'nslookup', name]);
  return [...(r.out + '\n' + r.err).matchAll(/^Address:\s+(\d+\.\d+\.\d+\.\d+)\s*$/gm)].map((m) => m[1]!).sort();
}


/** The `tnet` command against the daemon the test started (its control socket is in its state directory). */
function tnetCli(tnet: TnetPlugin, ...args: string[]): Run {
  const r = spawnSync(process.execPath, [join(ROOT, 'dist/cli/main.js'), ...args, '--state-dir', tnet.stateDir, '--socket', join(tnet.stateDir, 'control.sock')], {
    encoding: 'utf8',
    timeout: 60_000,
  });
  return { code: r.status ?? 1, out: (r.stdout ?? '').trim(), err: (r.stderr ?? '').trim() };
}

/** Links in the test's namespace other than lo and dockerd's docker0 (what a network leaves). */
const hostLinks = () => sh("ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1").out.split('\n').filter((l) => l && l !== 'lo' && l !== 'docker0');

interface Outcome {
  up: boolean;
  /** name looked up from a container -> the service@network its addresses belong to */
  names: Record<string, string[]>;
  pings: Record<string, boolean>;
  staticIp: string;
  webIfaces: string;
  frontOptions: Record<string, string>;
  port: string;
  down: boolean;
  leftContainers: string[];
  leftNetworks: string[];
  leftLinks: string[];
}

/** Names each service looks up, and pings. */
const LOOKUPS: [from: 'web' | 'client', name: string][] = [
  ['client', 'web'], ['client', 'www'], ['client', 'api'],
  ['web', 'client'], ['web', 'cli'],
];

/** The project with `driver` for both networks and `ipam` for back: up, names, ports, down. */
async function scenario(t: Test, d: Dockerd, tnet: TnetPlugin, config: string, img: string, driver: 'bridge' | 'tnet'): Promise<Outcome> {
  const project = `cmp-${driver}`;
  const vars = { TNET_E2E_IMAGE: img, TNET_E2E_DRIVER: driver, TNET_E2E_IPAM: driver === 'tnet' ? 'tnet' : 'default', TNET_E2E_PORT: String(PORT) };
  const c = (...args: string[]) => compose(d, config, project, vars, ...args);
  t.teardown(() => void c('down', '--timeout', '1')); // after a failure: before dockerd stops

  const up = c('up', '-d');
  t.equal(up.code, 0, `${project}: docker-compose up -d ${up.code ? up.err : ''}`);
  const id = (svc: string) => c('ps', '-q', svc).out;
  const ctr = { web: id('web'), client: id('client') };
  t.ok(ctr.web && ctr.client, `${project}: both services have a container`);

  // Every address of each container: service@network -> address.
  const where = new Map<string, string>();
  for (const svc of ['web', 'client'] as const) {
    const f = '{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}';
    for (const kv of d.docker('inspect', '-f', f, ctr[svc]).out.split(/\s+/).filter(Boolean)) {
      const [net = '', ip = ''] = kv.split('=');
      where.set(ip, `${svc}@${net.replace(`${project}_`, '')}`);
    }
  }
  t.comment(`${project}: addresses ${JSON.stringify(Object.fromEntries(where))}`);
  const staticIp = [...where].find(([, v]) => v === 'web@back')?.[0] ?? '';
  t.equal(staticIp, STATIC, `${project}: web's address on back is the static ipv4_address`);

  const names: Record<string, string[]> = {};
  const looked = await Promise.all(LOOKUPS.map(([from, name]) => nslookup(d, ctr[from], name)));
  LOOKUPS.forEach(([from, name], i) => (names[`${from}->${name}`] = looked[i]!.map((ip) => where.get(ip) ?? `unknown:${ip}`)));
  t.comment(`${project}: names ${JSON.stringify(names)}`);
  t.same(names['client->www'], ['web@front'], `${project}: client resolves web's alias www (front)`);
  t.same(names['client->api'], ['web@back'], `${project}: client resolves web's alias api (back), the static address`);
  t.same(names['web->cli'], ['client@back'], `${project}: web resolves client's alias cli (back)`);
  t.ok(names['client->web']!.length > 0 && names['client->web']!.every((s) => s.startsWith('web@')), `${project}: client resolves the service name web`);
  t.ok(names['web->client']!.length > 0 && names['web->client']!.every((s) => s.startsWith('client@')), `${project}: web resolves the service name client`);

  const pings: Record<string, boolean> = {};
  for (const [from, name] of [['client', 'web'], ['client', 'api'], ['web', 'client'], ['web', 'cli']] as const) {
    pings[`${from}->${name}`] = (await dockerAsync(d, ['exec', ctr[from], 'ping', '-c', '1', '-W', '2', name])).code === 0;
  }
  t.ok(Object.values(pings).every(Boolean), `${project}: ping by name and alias ${JSON.stringify(pings)}`);

  const webIfaces = d.docker('exec', ctr.web, 'ls', '/sys/class/net').out.split(/\s+/).filter((i) => i && i !== 'lo').sort().join(' ');
  const frontInfo = d.docker('network', 'inspect', `${project}_front`);
  const frontOptions = frontInfo.code === 0 ? ((JSON.parse(frontInfo.out)[0].Options ?? {}) as Record<string, string>) : {};
  t.same(frontOptions, { 'com.docker.network.container_iface_prefix': 'ceth', 'tnet.e2e.unknown': '1' }, `${project}: docker network inspect shows front's driver_opts`);

  let port = '';
  await until(() => (port = httpGet('127.0.0.1', PORT)) === 'hello-from-container', 5000);
  t.equal(port, 'hello-from-container', `${project}: the published port answers on 127.0.0.1:${PORT}`);

  const daemonMode = process.env.TNET_E2E_PLUGIN !== 'plugin';
  if (driver === 'tnet' && daemonMode) {
    const ls = tnetCli(tnet, 'network', 'ls', '--json');
    t.equal(ls.code, 0, `tnet network ls --json ${ls.err}`);
    const nets = ls.code === 0 ? (JSON.parse(ls.out) as { name: string; endpoints: unknown[] }[]) : [];
    t.same(nets.map((n) => n.endpoints.length), [2, 2], `tnet: two networks, two endpoints each ${JSON.stringify(nets.map((n) => n.name))}`);
    t.match(tnet.log(), /bridge option \\?"tnet\.e2e\.unknown\\?" ignored/, "tnet's log says the unknown driver_opts key was ignored");
  }

  const down = c('down', '--timeout', '2');
  t.equal(down.code, 0, `${project}: docker-compose down ${down.code ? down.err : ''}`);
  const label = `label=com.docker.compose.project=${project}`;
  const leftContainers = d.docker('ps', '-aq', '--filter', label).out.split('\n').filter(Boolean);
  const leftNetworks = d.docker('network', 'ls', '-q', '--filter', label).out.split('\n').filter(Boolean);
  await until(() => hostLinks().length === 0, 5000);
  const leftLinks = hostLinks();
  t.same(leftContainers, [], `${project}: down removed the containers`);
  t.same(leftNetworks, [], `${project}: down removed the networks`);
  t.same(leftLinks, [], `${project}: no bridge or veth left in the namespace`);
  if (driver === 'tnet') {
    if (daemonMode) {
      const ls = tnetCli(tnet, 'network', 'ls', '--json');
      t.same(ls.code === 0 ? JSON.parse(ls.out) : ls.err, [], 'tnet network ls: no network left');
    } else t.comment('the plugin on its own serves no control API: tnet network ls not asked');
    t.same(tnetLeftovers(), { links: [], tables: [], dockerUser: [] }, 'nothing tnet made is left');
  }
  return {
    up: up.code === 0, names, pings, staticIp, webIfaces, frontOptions, port, down: down.code === 0, leftContainers, leftNetworks, leftLinks,
  };
}

t.test('a docker-compose project: -d bridge (default IPAM) and -d tnet (tnet IPAM) side by side', async (t) => {
  const tnet = await startTnet(t);
  const d = await startDockerd(t);
  const config = mkdtempSync(join(tmpdir(), 'tnet-e2e-compose-'));
  t.teardown(() => rmSync(config, { recursive: true, force: true }));

  // Can this docker-compose talk to this dockerd? If not, skip with its words.
  const probeVars = { TNET_E2E_IMAGE: 'none', TNET_E2E_DRIVER: 'bridge', TNET_E2E_IPAM: 'default', TNET_E2E_PORT: String(PORT) };
  const version = compose(d, config, 'probe', probeVars, 'version', '--short');
  const probe = compose(d, config, 'probe', probeVars, 'ps');
  if (version.code !== 0 || probe.code !== 0) {
    t.plan(0, `e2e: ${COMPOSE} cannot talk to the test's dockerd: ${(version.code ? version.err : probe.err) || `exit ${probe.code}`}`);
    return;
  }
  t.comment(`docker-compose ${version.out}, docker ${d.docker('version', '--format', '{{.Server.Version}}').out}`);

  const img = importBusybox(d);
  t.teardown(() => {
    if (t.passing()) return;
    t.comment(`tnet log:\n${tnet.log().slice(-4000)}`);
    t.comment(`dockerd log:\n${d.log().slice(-3000)}`);
  });

  const outcome: Partial<Record<'bridge' | 'tnet', Outcome>> = {};
  // One after the other: the same project, host port and subnet.
  for (const driver of ['bridge', 'tnet'] as const) {
    const t0 = performance.now();
    await t.test(`driver: ${driver}`, async (t) => {
      outcome[driver] = await scenario(t, d, tnet, config, img, driver);
    });
    t.comment(`${driver}: ${Math.round(performance.now() - t0)} ms ${JSON.stringify(outcome[driver])}`);
  }

  const b = outcome.bridge;
  const n = outcome.tnet;
  if (!b || !n) {
    t.fail('a side did not finish');
    return;
  }
  t.match(b.webIfaces, /\bceth\d\b/, `bridge: web's interfaces (container_iface_prefix on front): ${b.webIfaces}`);
  for (const k of ['up', 'names', 'pings', 'staticIp', 'webIfaces', 'frontOptions', 'port', 'down', 'leftContainers', 'leftNetworks', 'leftLinks'] as const) {
    t.same(n[k], b[k], `tnet as the bridge: ${k} ${JSON.stringify(n[k])}`);
  }
});
