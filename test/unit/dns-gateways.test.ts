import dgram from 'node:dgram';
import { EventEmitter } from 'node:events';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { GATEWAY_MODES, gatewayModeFrom, parseGatewayMode, startDnsService, type DnsServiceOptions } from '../../dns/service.js';
import { IpAddr } from '../../libnetwork/ipam/address.js';
import { Subnet } from '../../libnetwork/ipam/subnet.js';
import type { Controller } from '../../libnetwork/controller.js';
import type { Network } from '../../libnetwork/model.js';

// The DNS listeners on network gateways hold port 53 on the host, which takes `-p 53` from every
// Docker user: they are opt-in (`gateways`; the daemon's TNET_DNS_GATEWAYS).

describe('gateway mode as typed', () => {
  it('accepts none, docker and all, in any case, blanks ignored', () => {
    expect(GATEWAY_MODES).toEqual(['none', 'docker', 'all']);
    expect(parseGatewayMode('none')).toBe('none');
    expect(parseGatewayMode('docker')).toBe('docker');
    expect(parseGatewayMode(' ALL ')).toBe('all');
  });

  it('refuses anything else, naming the choices', () => {
    for (const bad of ['', 'yes', 'true', '1', 'docker,all', 'dockers'])
      expect(() => parseGatewayMode(bad)).toThrow(/is not a DNS gateway mode; use one of none, docker, all/);
  });
});

describe("a process's gateway mode (the daemon's)", () => {
  it('is none unless asked: the flag wins over TNET_DNS_GATEWAYS, which wins over the default', () => {
    expect(gatewayModeFrom(undefined, {})).toBe('none');
    expect(gatewayModeFrom(undefined, { TNET_DNS_GATEWAYS: '' })).toBe('none');
    expect(gatewayModeFrom(undefined, { TNET_DNS_GATEWAYS: 'docker' })).toBe('docker');
    expect(gatewayModeFrom('all', { TNET_DNS_GATEWAYS: 'docker' })).toBe('all');
    expect(gatewayModeFrom('none', { TNET_DNS_GATEWAYS: 'docker' })).toBe('none');
    expect(() => gatewayModeFrom('on', {})).toThrow(/^"on" is not a DNS gateway mode/);
  });

  it('names the variable when its value is bad', () => {
    expect(() => gatewayModeFrom(undefined, { TNET_DNS_GATEWAYS: 'on' })).toThrow(/^TNET_DNS_GATEWAYS: "on" is not a DNS gateway mode/);
  });
});

/** Just what the DNS service reads of a controller: its objects and its events. */
function fakeController(nets: Network[]): Controller {
  const ee = new EventEmitter();
  return Object.assign(ee, {
    networks: () => nets,
    endpoints: () => [],
    sandboxes: () => [],
    writeResolvConf: () => undefined,
  }) as unknown as Controller;
}

function network(name: string, owner: Network['owner'], subnet: string, gateway: string): Network {
  return {
    id: name.padEnd(64, '0'), name, driver: 'bridge', state: 'ready', internal: false,
    ipv4: { poolId: 'p', subnet: Subnet.parse(subnet), gateway: IpAddr.parse(gateway) }, ipv6: undefined,
    options: {}, labels: {}, owner, addresses: 'external', created: new Date(0).toISOString(),
  } as unknown as Network;
}

describe('startDnsService gateway listeners', () => {
  // 192.0.2.x (TEST-NET-1) is on no interface here: a listener that tries to bind reports why it
  // cannot, and none takes a port.
  const docker = network('dk', 'docker', '192.0.2.0/24', '192.0.2.1');
  const lab = network('lab', '', '192.0.2.128/25', '192.0.2.129');
  const gateways = async (mode: DnsServiceOptions['gateways']) => {
    const c = fakeController([docker, lab]);
    const dns = await startDnsService(c, { upstreams: ['127.0.0.1:9'], sandboxes: false, logger: pino({ level: 'silent' }), ...(mode ? { gateways: mode } : {}) });
    await dns.settled();
    const st = dns.status().gateways;
    // and one that appears later follows the same rule
    const later = network('dk2', 'docker', '198.18.0.0/24', '198.18.0.1');
    c.emit('network', 'up', later);
    await dns.settled();
    const after = Object.keys(dns.status().gateways).length;
    await dns.close();
    return { names: Object.values(st).flat().map((s) => s.name), after, statuses: Object.values(st).flat() };
  };

  it('listens on no gateway by default', async () => {
    const r = await gateways(undefined);
    expect(r.names).toEqual([]);
    expect(r.after).toBe(0);
  });

  it("'none' is the default said out loud", async () => {
    expect((await gateways('none')).names).toEqual([]);
  });

  it("'docker' asks for the gateways of Docker networks, port 53", async () => {
    const r = await gateways('docker');
    expect(r.names).toEqual(['dk']);
    expect(r.statuses[0]).toMatchObject({ address: '192.0.2.1:53', listening: false });
    expect(r.statuses[0]!.error).toMatch(/EADDRNOTAVAIL|EACCES|address not available|permission denied/i);
    expect(r.after).toBe(2);
  });

  it("'all' adds every other network's", async () => {
    expect((await gateways('all')).names.sort()).toEqual(['dk', 'lab']);
  });
});

describe('gatewayPort', () => {
  it('0: each gateway listener gets a free port, the same for UDP and TCP, shown by status()', async () => {
    const c = fakeController([network('lo', 'docker', '127.0.0.0/8', '127.0.0.1')]);
    const dns = await startDnsService(c, { upstreams: ['127.0.0.1:9'], sandboxes: false, logger: pino({ level: 'silent' }), gateways: 'docker', gatewayPort: 0 });
    try {
      await dns.settled();
      const [st] = Object.values(dns.status().gateways).flat();
      expect(st).toMatchObject({ name: 'lo', listening: true });
      expect(st!.port).toBeGreaterThan(1024);
      expect(st!.address).toBe(`127.0.0.1:${st!.port}`);
      // it answers there (a name it does not know, from an address inside the network: forwarded,
      // and the dead upstream makes that SERVFAIL), over UDP
      const sock = dgram.createSocket('udp4');
      const reply = await new Promise<Buffer>((res) => {
        sock.once('message', (m) => res(m));
        sock.send(Buffer.from('abcd010000010000000000000161016e0000010001', 'hex'), st!.port!, '127.0.0.1');
      });
      sock.close();
      expect(reply.readUInt16BE(0)).toBe(0xabcd);
      expect(reply[2]! & 0x80).toBe(0x80); // a response
    } finally {
      await dns.close();
    }
  });

  it('refuses a port outside 0-65535', async () => {
    await expect(startDnsService(fakeController([]), { upstreams: [], gatewayPort: 70000, logger: pino({ level: 'silent' }) })).rejects.toThrow(/DNS gateway port 70000 is not in 0-65535/);
  });
});
