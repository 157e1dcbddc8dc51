/**
 * The tnet DNS server process for scripts/bench-dns.ts (not run on its own in normal use).
 *
 *   bench-dns-server.ts HOSTS_FILE ADDR PORT
 *
 * Loads the "IP NAME" lines of HOSTS_FILE (dns-peers.sh writes /tmp/tnet-peers/dns/hosts: c0000..c0999
 * in bench.test) as endpoints of one network named `bench.test`, so `c0000.bench.test` is the
 * endpoint `c0000` as `name.networkName`, and any other name under bench.test is NXDOMAIN (tnet
 * answers for a network's zone), the same data dnsmasq/unbound/nsd serve. Names outside bench.test
 * are loaded fully qualified.
 *
 * Scope: the benchmark's own scope is a gateway-style network scope (`{ networkId }`) whose network
 * has the subnet 127.0.0.0/8, so it answers loopback clients (dnsperf) and goes through the same
 * source-address check a gateway listener does for containers.
 *
 * Prints one JSON line {"ready":true,...} on stdout when it answers; on SIGTERM/SIGINT it prints
 * its counters to stderr and exits.
 */
import { readFileSync } from 'node:fs';
import { DnsServer } from '../dns/index.js';

const [hostsFile = '/tmp/tnet-peers/dns/hosts', addr = '127.0.0.60', port = '5310'] = process.argv.slice(2);
const ZONE = 'bench.test';

const server = new DnsServer();
server.setNetwork({ networkId: 'bench', name: ZONE, internal: false, subnets: ['127.0.0.0/8'] });
let n = 0;
for (const line of readFileSync(hostsFile, 'utf8').split('\n')) {
  const [ip, name] = line.trim().split(/\s+/);
  if (!ip || !name) continue;
  const lower = name.toLowerCase().replace(/\.$/, '');
  const short = lower.endsWith(`.${ZONE}`) ? lower.slice(0, -ZONE.length - 1) : lower;
  server.setEndpoint({
    endpointId: `ep${n++}`,
    networkId: 'bench',
    names: [short],
    ...(ip.includes(':') ? { ipv6: ip } : { ipv4: ip }),
  });
}
const h = await server.addListener({ host: addr, port: Number(port) }, { networkId: 'bench' });
process.stdout.write(`${JSON.stringify({ ready: true, records: n, udp: h.udp, pid: process.pid })}\n`);

const stop = () => {
  process.stderr.write(`[bench-dns-server] ${JSON.stringify(server.stats)}\n`);
  void h.close().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
