import type { Driver, DriverFactory } from '../../libnetwork/driverapi.js';

/** A driver that records what the controller asks of it and makes nothing (it knows which endpoints are joined). */
export function recordingDriver(type: string, log: () => string[]): DriverFactory {
  const joined = new Set<string>();
  const driver: Driver = {
    checkNetwork: async (r) => {
      if (r.options['com.docker.network.bridge.nosuch']) throw new Error('unknown bridge option');
      return r.options;
    },
    createNetwork: async (n) => void log().push(`createNetwork ${n.id.slice(0, 4)}`),
    deleteNetwork: async (n) => void log().push(`deleteNetwork ${n.id.slice(0, 4)}`),
    join: async (n, ep) => {
      log().push(`join ${ep.id.slice(0, 4)}`);
      joined.add(ep.id);
      const gw = n.internal ? {} : { gateway4: n.ipv4?.gateway, gateway6: n.ipv6?.gateway };
      return { where: 'handoff', srcName: `tnc${ep.id.slice(0, 11)}`, ...gw, staticRoutes: [] };
    },
    leave: async (_n, ep) => {
      log().push(`leave ${ep.id.slice(0, 4)}`);
      joined.delete(ep.id);
    },
    endpointIntact: async (_n, ep) => joined.has(ep.id),
    createEndpoint: async (_n, ep) => void log().push(`createEndpoint ${ep.id.slice(0, 4)}`),
    deleteEndpoint: async (_n, ep) => void log().push(`deleteEndpoint ${ep.id.slice(0, 4)}`),
    programExternalConnectivity: async (_n, ep, ports) => void log().push(`program ${ep.id.slice(0, 4)} ${ports.map((p) => p.hostPort).join(',')}`),
    revokeExternalConnectivity: async (_n, ep, ports) => void log().push(`revoke ${ep.id.slice(0, 4)} ${ports.map((p) => p.hostPort).join(',')}`),
    restore: async () => undefined,
  };
  return { type, scope: 'local', options: { keys: [], aliases: {} }, create: () => driver };
}

