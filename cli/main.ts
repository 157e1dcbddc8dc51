#!/usr/bin/env node
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { ApiFailure, Client, DEFAULT_SOCKET } from './client.js';
import { formatPorts, parsePrivatePort, portsOf } from './port.js';
import { parsePublish } from './publish.js';

/** Exit codes: scripts can tell a mistake from a missing object from a collision. */
export const EXIT = { ok: 0, error: 1, usage: 2, notFound: 3, conflict: 4, unsupported: 5, unavailable: 69 } as const;

const CODE_EXIT: Record<string, number> = {
  'invalid-argument': EXIT.usage, 'not-found': EXIT.notFound, conflict: EXIT.conflict, busy: EXIT.conflict,
  unsupported: EXIT.unsupported, unavailable: EXIT.unavailable,
};

class Usage extends Error {}

/** The lab verbs, loaded on use (cli/create.ts, destroy.ts, ls.ts, inspect.ts, graph.ts). */
const LAB_VERBS: Record<string, () => Promise<{ run(argv: string[], after: string[]): Promise<number> }>> = {
  create: () => import('./create.js'),
  destroy: () => import('./destroy.js'),
  ls: () => import('./ls.js'),
  inspect: () => import('./inspect.js'),
  graph: () => import('./graph.js'),
};

const GLOBAL = `Global options:
  --state-dir DIR   state directory (default $TNET_STATE_DIR or /var/lib/tnet)
  --socket PATH     daemon control socket (default $TNET_SOCKET or ${DEFAULT_SOCKET})
  -h, --help        help for any command`;

const HELP: Record<string, string> = {
  '': `tnet — container networking for Docker, labs and CI

Usage: tnet COMMAND [OPTIONS]

Commands:
  daemon                              run the tnet daemon (started on demand by other commands)
  network create|ls|inspect|rm        manage networks
  sandbox create|ls|inspect|rm        manage sandboxes (network namespaces)
  connect NETWORK SANDBOX             attach a sandbox to a network
  disconnect NETWORK SANDBOX          detach it
  exec SANDBOX -- CMD [ARGS...]       run a command inside a sandbox
  port REF [PRIVATE_PORT[/PROTO]]     list published ports (of Docker containers too, which docker port cannot show)
  create FILE|-                       build a lab from a topology file (run again on a changed file: apply the difference)
  destroy NAME|FILE|--all             remove a lab and everything it owns (no file needed)
  ls                                  list labs
  inspect NAME                        a lab's nodes, interfaces, addresses, links and networks
  exec LAB NODE -- CMD [ARGS...]      run a command in a lab's node
  graph NAME|FILE                     a picture of a lab (--format mermaid|dot|svg)
  doctor [--repair] [--json]          compare the state with the kernel; list (and repair) every difference

${GLOBAL}

Exit codes: 0 ok, 1 error, 2 bad input, 3 not found, 4 conflict or in use, 5 unsupported here, 69 daemon unavailable.`,
  daemon: `Usage: tnet daemon [--state-dir DIR] [--socket PATH] [--plugin-dir DIR] [--no-docker-plugin] [--dns-upstream ADDR]...
                   [--dns-gateways MODE] [--remove-orphans]
                   [--store URL [--store-ca FILE] [--store-cert FILE --store-key FILE] [--store-ttl S] [--advertise-addr IP|IF]]

Runs the daemon: the control socket, Docker's plugin sockets (PLUGIN_DIR/tnet.sock: the NetworkDriver
"-d tnet" and the IpamDriver "--ipam-driver tnet"), then reconciles the kernel with the saved state.

Options:
  --plugin-dir DIR      where dockerd looks for plugins (default $TNET_PLUGIN_DIR or /run/docker/plugins)
  --no-docker-plugin    serve the control API only (also TNET_DOCKER_PLUGIN=0)
  --dns-upstream ADDR   where DNS forwards names tnet does not know: IP, IP:PORT or [IPv6]:PORT
                        (repeatable, tried in order; default $TNET_DNS_UPSTREAMS, comma-separated,
                        or the nameservers of the host's /etc/resolv.conf)
  --dns-gateways MODE   none (default), docker or all: answer DNS on the gateway address of each
                        Docker network (all: every network), port 53, for \`docker run --dns GATEWAY\`.
                        Holds port 53 on the host: \`-p 53\` without a host address then fails.
                        (default $TNET_DNS_GATEWAYS)
  --remove-orphans      the state is empty (new, or its database lost) but the kernel holds what an
                        earlier daemon of this state directory made: remove those objects and start
                        (without it the daemon refuses to start and lists them)

Multi-host (overlay networks; every host runs a daemon pointed at the same etcd):
  --store URL           the global store: etcd://HOST:PORT[,HOST:PORT...], etcds://... for TLS,
                        USER:PASSWORD@ before the hosts for etcd authentication (default $TNET_STORE)
  --store-ca FILE       CA of etcd's server certificate (implies TLS) ($TNET_STORE_CA)
  --store-cert FILE, --store-key FILE
                        client certificate and key, for etcd with --client-cert-auth
                        ($TNET_STORE_CERT, $TNET_STORE_KEY)
  --store-ttl S         this host's lease: its endpoints are withdrawn from the other hosts S seconds
                        after it dies (default 5; $TNET_STORE_TTL)
  --advertise-addr IP|IF
                        this host's VTEP, the underlay address other hosts tunnel to (default: the
                        source address of the route towards the store; $TNET_ADVERTISE_ADDR).
                        Two hosts advertising the same address: the second exits with code 4.
  Without a reachable store the daemon starts anyway, serves local networks and retries every 2 s.

One daemon per state directory: a second one (even with another --socket) exits with code 4 and
the pid of the one holding STATE_DIR/lock.

${GLOBAL}`,
  network: `Usage: tnet network create|ls|inspect|rm ...   (tnet network COMMAND --help for each)`,
  'network create': `Usage: tnet network create NAME [OPTIONS]

Options:
  -d, --driver NAME          driver (default bridge)
  --subnet CIDR              IPv4 subnet (default: the first free of 172.17-31.0.0/16, 192.168.x.0/20)
  --gateway IP               IPv4 gateway (default: the first address of the subnet)
  --ip-range CIDR            hand out dynamic addresses from this part of the subnet only
  --aux-address NAME=IP      reserve an address (repeatable)
  --ipv6                     add an IPv6 subnet (auto: a /64 of a ULA prefix)
  --subnet6 CIDR, --gateway6 IP, --ip-range6 CIDR
  --internal                 no NAT and no way in or out of the network
  -o, --opt KEY=VALUE        driver option (repeatable): Docker's keys, or the driver's short forms;
                             bridge: name=BRIDGE, icc=true|false, masquerade=true|false, mtu=N,
                             host-binding-ipv4=IP, iface-prefix=PREFIX (interfaces PREFIX0, PREFIX1...
                             in sandboxes; default eth). Other keys are accepted and ignored, as
                             Docker's bridge does: the log and network inspect (ignored_options) say so;
                             macvlan: parent=IF (an existing interface; IF.VID makes an 802.1Q
                             sub-interface; none: an internal segment tnet owns), macvlan_mode=
                             bridge|private|vepa|passthru (default bridge), host_access=true (the
                             host and the endpoints reach each other through a shim on the parent)
  --label KEY=VALUE          label (repeatable)
  --json                     print the network as JSON

${GLOBAL}`,
  'network ls': `Usage: tnet network ls [--json]\n\n${GLOBAL}`,
  'network inspect': `Usage: tnet network inspect NAME|ID [--json]\n\n${GLOBAL}`,
  'network rm': `Usage: tnet network rm NAME|ID...\n\nFails if the network still has endpoints.\n\n${GLOBAL}`,
  sandbox: `Usage: tnet sandbox create|ls|inspect|rm ...   (tnet sandbox COMMAND --help for each)`,
  'sandbox create': `Usage: tnet sandbox create NAME [--json]

Creates a network namespace tn-NAME (visible to \`ip netns\`; the daemon's own instance) with lo up.

${GLOBAL}`,
  'sandbox ls': `Usage: tnet sandbox ls [--json]\n\n${GLOBAL}`,
  'sandbox inspect': `Usage: tnet sandbox inspect NAME [--json]\n\n${GLOBAL}`,
  'sandbox rm': `Usage: tnet sandbox rm NAME...\n\nDisconnects the sandbox from every network and deletes its namespace.\n\n${GLOBAL}`,
  connect: `Usage: tnet connect NETWORK SANDBOX [OPTIONS]

Options:
  --ip IP                    static IPv4 address
  --ip6 IP                   static IPv6 address
  --mac MAC                  MAC address (default 02:42 + the IPv4 address)
  --alias NAME               extra DNS name on this network (repeatable)
  -p, --publish SPEC         publish a port: [HOST_IP:][HOST_PORT[-END]:]PORT[-END][/tcp|udp|sctp] (repeatable)
  --json                     print the endpoint as JSON

${GLOBAL}`,
  disconnect: `Usage: tnet disconnect NETWORK SANDBOX\n\n${GLOBAL}`,
  doctor: `Usage: tnet doctor [--repair] [--json]

Compares the daemon's state with the kernel: links, addresses, default routes, namespaces, lo,
the nft table and its rules, the DNS listeners, interrupted operations, duplicated tags and
addresses. Prints every difference in plain words: what is missing, stray, duplicated or wrong,
and which record it belongs to.

Options:
  --repair   fix what a restart's reconcile would (the same code), then check again; refused
             (exit 4) while an operation is in flight
  --json     print the findings as JSON ({found, left} with --repair)

Exit codes: 0 the kernel matches the state (--repair: nothing left), 1 differences found (left),
69 daemon unavailable.

${GLOBAL}`,
  port: `Usage: tnet port SANDBOX|ENDPOINT-ID|CONTAINER [PRIVATE_PORT[/PROTO]] [--json]

Lists the host ports published to a sandbox, a Docker endpoint or a Docker container, as docker port
prints them ("80/tcp -> 0.0.0.0:32768"; with PRIVATE_PORT only "0.0.0.0:32768"). dockerd never reads
the ports of a plugin's networks back (moby/libnetwork#2451): docker port and docker ps show none for
tnet networks, and this shows them.

REF: a sandbox name; a Docker EndpointID or its first digits
  (docker inspect -f '{{.NetworkSettings.Networks.NET.EndpointID}}' CONTAINER);
  or a container name or id, looked up with the docker command (it honours DOCKER_HOST).

${GLOBAL}`,
  exec: `Usage: tnet exec SANDBOX -- CMD [ARGS...]
       tnet exec LAB NODE -- CMD [ARGS...]

Runs CMD inside the sandbox's (or the lab node's) network namespace (with its resolv.conf) and
exits with its status.

${GLOBAL}`,
};

/** KEY=VALUE items; `bare`: a KEY alone is KEY with an empty value (Docker's `-o encrypted`). */
function kv(list: string[] | undefined, what: string, bare = false): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of list ?? []) {
    const eq = bare && !item.includes('=') && item !== '' ? item.length : item.indexOf('=');
    if (eq <= 0) throw new Usage(`${what} "${item}" is not KEY=VALUE`);
    out[item.slice(0, eq)] = item.slice(eq + 1);
  }
  return out;
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 2))).join('').trimEnd()).join('\n');
}

type Net = { id: string; name: string; owner: string; driver: string; internal: boolean; scope?: string; bridge?: string; ipv4?: { subnet: string; gateway?: string }; ipv6?: { subnet: string }; endpoints: unknown[] };
type Sb = { id: string; name: string; netns: string; endpoints: { network?: string; ifname: string; ipv4?: string; ipv6?: string }[] };

async function main(argv: string[]): Promise<number> {
  const dashdash = argv.indexOf('--');
  const own = dashdash >= 0 ? argv.slice(0, dashdash) : argv;
  const after = dashdash >= 0 ? argv.slice(dashdash + 1) : [];
  // Lab verbs: one file each, with their own options and --help.
  const labVerb = LAB_VERBS[own[0] ?? ''];
  if (labVerb) return (await labVerb()).run(own.slice(1), after);
  const { values: o, positionals: pos } = parseArgs({
    args: own,
    allowPositionals: true,
    strict: true,
    options: {
      help: { type: 'boolean', short: 'h' }, json: { type: 'boolean' }, 'state-dir': { type: 'string' }, socket: { type: 'string' },
      driver: { type: 'string', short: 'd' }, subnet: { type: 'string' }, gateway: { type: 'string' }, 'ip-range': { type: 'string' },
      'aux-address': { type: 'string', multiple: true }, ipv6: { type: 'boolean' }, subnet6: { type: 'string' }, gateway6: { type: 'string' },
      'ip-range6': { type: 'string' }, internal: { type: 'boolean' }, opt: { type: 'string', short: 'o', multiple: true },
      label: { type: 'string', multiple: true }, ip: { type: 'string' }, ip6: { type: 'string' }, mac: { type: 'string' },
      alias: { type: 'string', multiple: true }, publish: { type: 'string', short: 'p', multiple: true },
      'plugin-dir': { type: 'string' }, 'no-docker-plugin': { type: 'boolean' }, 'dns-upstream': { type: 'string', multiple: true },
      'dns-gateways': { type: 'string' }, repair: { type: 'boolean' }, 'remove-orphans': { type: 'boolean' },
      store: { type: 'string' }, 'store-ca': { type: 'string' }, 'store-cert': { type: 'string' }, 'store-key': { type: 'string' },
      'store-ttl': { type: 'string' }, 'advertise-addr': { type: 'string' },
    },
  });
  const [cmd = '', sub = ''] = pos;
  const topic = ['network', 'sandbox'].includes(cmd) && sub ? `${cmd} ${sub}` : cmd;
  if (o.help || cmd === '' || cmd === 'help') {
    const text = HELP[topic] ?? HELP[cmd];
    if (text === undefined) throw new Usage(`unknown command "${topic}"`);
    process.stdout.write(text + '\n');
    return EXIT.ok;
  }
  const stateDir = o['state-dir'] ?? process.env.TNET_STATE_DIR ?? '/var/lib/tnet';
  const socket = o.socket ?? process.env.TNET_SOCKET ?? DEFAULT_SOCKET;
  if (cmd === 'daemon') {
    const { runDaemon } = await import('./daemon.js');
    const dockerPlugin = !o['no-docker-plugin'] && process.env.TNET_DOCKER_PLUGIN !== '0';
    const dnsUpstreams = o['dns-upstream'] ?? process.env.TNET_DNS_UPSTREAMS?.split(',').filter(Boolean);
    if (dnsUpstreams?.length) {
      const { parseUpstream } = await import('../dns/forwarder.js');
      for (const u of dnsUpstreams) {
        try {
          parseUpstream(u);
        } catch (e) {
          throw new Usage(`--dns-upstream: ${(e as Error).message}`);
        }
      }
    }
    await runDaemon({
      stateDir, socket, dockerPlugin, pluginDir: o['plugin-dir'] ?? process.env.TNET_PLUGIN_DIR, dnsUpstreams, dnsGateways: o['dns-gateways'],
      removeOrphans: o['remove-orphans'], store: await storeOptions(o),
    });
    return -1; // keeps running
  }
  if (!(topic in HELP) || (['network', 'sandbox'].includes(cmd) && !sub)) throw new Usage(`unknown command "${topic}"; see tnet --help`);
  const args = pos.slice(['network', 'sandbox'].includes(cmd) ? 2 : 1);
  const need = (n: number, names: string) => {
    if (args.length !== n) throw new Usage(`tnet ${topic} takes ${names}; see tnet ${topic} --help`);
  };
  const client = new Client(socket);
  const out = (x: unknown) => process.stdout.write(JSON.stringify(x, null, 2) + '\n');

  if (topic === 'exec') {
    if (args.length === 2) return (await import('./lab-exec.js')).run(own.slice(1), after); // LAB NODE
    need(1, 'SANDBOX -- CMD');
    if (after.length === 0) throw new Usage('tnet exec needs a command after "--"');
    await client.ensureDaemon(stateDir);
    const sb = await client.call<Sb>('GET', `/sandboxes/${encodeURIComponent(args[0]!)}`);
    // by the name `ip netns` knows (it also mounts the sandbox's /etc/netns/NAME/resolv.conf)
    const r = spawnSync('ip', ['netns', 'exec', sb.netns.slice(sb.netns.lastIndexOf('/') + 1), ...after], { stdio: 'inherit' });
    if (r.error) throw r.error;
    return r.status ?? 1;
  }

  // Bad input is refused before a daemon is started for it.
  let portFilter: ReturnType<typeof parsePrivatePort> | undefined;
  if (topic === 'port') {
    if (args.length < 1 || args.length > 2) throw new Usage('tnet port takes SANDBOX|ENDPOINT-ID|CONTAINER [PRIVATE_PORT[/PROTO]]; see tnet port --help');
    try {
      portFilter = args[1] === undefined ? undefined : parsePrivatePort(args[1]);
    } catch (e) {
      throw new Usage((e as Error).message);
    }
  }
  await client.ensureDaemon(stateDir);
  switch (topic) {
    case 'network create': {
      need(1, 'NAME');
      const n = await client.call<Net>('POST', '/networks', {
        name: args[0], driver: o.driver, subnet: o.subnet, gateway: o.gateway, ipRange: o['ip-range'],
        auxAddresses: o['aux-address'] ? kv(o['aux-address'], 'aux address') : undefined, ipv6: o.ipv6, subnet6: o.subnet6,
        gateway6: o.gateway6, ipRange6: o['ip-range6'], internal: o.internal, options: kv(o.opt, 'option', true), labels: kv(o.label, 'label'),
      });
      if (o.json) out(n);
      else process.stdout.write(`${n.id}\n`);
      return EXIT.ok;
    }
    case 'network ls': {
      need(0, 'no arguments');
      const nets = await client.call<Net[]>('GET', '/networks');
      if (o.json) out(nets);
      else
        process.stdout.write(table([['NETWORK ID', 'NAME', 'DRIVER', 'SCOPE', 'OWNER', 'SUBNET', 'ENDPOINTS'], ...nets.map((n) => [
          n.id.slice(0, 12), n.name, n.driver + (n.internal ? ' (internal)' : ''), n.scope ?? 'local', n.owner || '-', [n.ipv4?.subnet, n.ipv6?.subnet].filter(Boolean).join(','), String(n.endpoints.length),
        ])]) + '\n');
      return EXIT.ok;
    }
    case 'network inspect':
    case 'sandbox inspect': {
      need(1, 'NAME');
      out(await client.call('GET', `/${cmd === 'network' ? 'networks' : 'sandboxes'}/${encodeURIComponent(args[0]!)}`));
      return EXIT.ok;
    }
    case 'network rm':
    case 'sandbox rm': {
      if (args.length === 0) throw new Usage(`tnet ${topic} takes NAME...`);
      let status: number = EXIT.ok;
      for (const name of args) {
        try {
          await client.call('DELETE', `/${cmd === 'network' ? 'networks' : 'sandboxes'}/${encodeURIComponent(name)}`);
          process.stdout.write(`${name}\n`);
        } catch (e) {
          status = report(e);
        }
      }
      return status;
    }
    case 'sandbox create': {
      need(1, 'NAME');
      const s = await client.call<Sb>('POST', '/sandboxes', { name: args[0] });
      if (o.json) out(s);
      else process.stdout.write(`${s.name}\n`);
      return EXIT.ok;
    }
    case 'sandbox ls': {
      need(0, 'no arguments');
      const sbs = await client.call<Sb[]>('GET', '/sandboxes');
      if (o.json) out(sbs);
      else
        process.stdout.write(table([['NAME', 'NETNS', 'NETWORKS'], ...sbs.map((s) => [
          s.name, s.netns, s.endpoints.map((e) => `${e.network}:${e.ifname}=${[e.ipv4, e.ipv6].filter(Boolean).join(',')}`).join(' '),
        ])]) + '\n');
      return EXIT.ok;
    }
    case 'connect': {
      need(2, 'NETWORK SANDBOX');
      const ports = (o.publish ?? []).flatMap((p) => parsePublish(p));
      const ep = await client.call<{ ipv4?: string; ipv6?: string; ifname: string }>('POST', '/connect', {
        network: args[0], sandbox: args[1], ip: o.ip, ip6: o.ip6, mac: o.mac, aliases: o.alias, ports,
      });
      if (o.json) out(ep);
      else process.stdout.write(`${args[1]} ${ep.ifname} ${[ep.ipv4, ep.ipv6].filter(Boolean).join(' ')}\n`);
      return EXIT.ok;
    }
    case 'port': {
      const only = portFilter;
      const answer = await portsOf(client, args[0]!);
      if (o.json) {
        out(only ? answer.mappings.filter((m) => m.containerPort === only.port && m.proto === only.proto) : answer.mappings);
        return EXIT.ok;
      }
      const lines = formatPorts(answer.mappings, only);
      if (lines === undefined) {
        process.stderr.write(`tnet: no public port '${only!.port}/${only!.proto}' published for ${answer.what}\n`);
        return EXIT.notFound;
      }
      if (lines.length) process.stdout.write(lines.join('\n') + '\n');
      return EXIT.ok;
    }
    case 'doctor': {
      need(0, 'no arguments');
      return (await import('./doctor.js')).doctor(client, { repair: o.repair, json: o.json });
    }
    case 'disconnect': {
      need(2, 'NETWORK SANDBOX');
      await client.call('POST', '/disconnect', { network: args[0], sandbox: args[1] });
      return EXIT.ok;
    }
  }
  throw new Usage(`unknown command "${topic}"`);
}

function report(e: unknown): number {
  if (e instanceof Usage) {
    process.stderr.write(`tnet: ${e.message}\n`);
    return EXIT.usage;
  }
  if (e instanceof ApiFailure) {
    process.stderr.write(`tnet: ${e.error.message}\n`);
    return CODE_EXIT[e.error.code] ?? EXIT.error;
  }
  const err = e as NodeJS.ErrnoException & { code?: string };
  if (err?.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || err?.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || err?.code === 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL') {
    process.stderr.write(`tnet: ${err.message}\n`);
    return EXIT.usage;
  }
  if (err && 'code' in err && err.code === 'invalid-argument') {
    process.stderr.write(`tnet: ${err.message}\n`);
    return EXIT.usage;
  }
  process.stderr.write(`tnet: ${err instanceof Error ? err.message : String(err)}\n`);
  return EXIT.error;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (e) => {
    process.exitCode = report(e);
  },
);

/** `--store` and its companions (or their TNET_ variables), checked before anything starts. */
async function storeOptions(o: Record<string, unknown>): Promise<import('./daemon.js').StoreOptions | undefined> {
  const get = (flag: string, env: string) => (o[flag] as string | undefined) ?? process.env[env] ?? undefined;
  const url = get('store', 'TNET_STORE');
  const companions = ['store-ca', 'store-cert', 'store-key', 'store-ttl', 'advertise-addr'].filter((f) => o[f] !== undefined);
  if (!url) {
    if (companions.length) throw new Usage(`--${companions[0]} needs --store etcd://HOST:PORT (or TNET_STORE)`);
    return undefined;
  }
  const { parseStoreUrl } = await import('../libnetwork/store/etcd.js');
  try {
    parseStoreUrl(url);
  } catch (e) {
    throw new Usage(`--store: ${(e as Error).message}`);
  }
  const ttlText = get('store-ttl', 'TNET_STORE_TTL');
  const ttl = ttlText === undefined ? undefined : Number(ttlText);
  if (ttl !== undefined && (!/^\d+$/.test(ttlText!) || ttl < 1 || ttl > 3600)) throw new Usage(`--store-ttl ${ttlText}: a whole number of seconds from 1 to 3600`);
  for (const [flag, env] of [['store-cert', 'TNET_STORE_CERT'], ['store-key', 'TNET_STORE_KEY']] as const) {
    const other = flag === 'store-cert' ? get('store-key', 'TNET_STORE_KEY') : get('store-cert', 'TNET_STORE_CERT');
    if (get(flag, env) !== undefined && other === undefined) throw new Usage('--store-cert and --store-key go together (a client certificate and its key)');
  }
  return {
    url, ca: get('store-ca', 'TNET_STORE_CA'), cert: get('store-cert', 'TNET_STORE_CERT'), key: get('store-key', 'TNET_STORE_KEY'),
    ttl, advertise: get('advertise-addr', 'TNET_ADVERTISE_ADDR'),
  };
}
