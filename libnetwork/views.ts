import type { Endpoint, Network, Sandbox } from './model.js';

/**
 * What `inspect`/`ls --json` show: plain JSON, addresses as text. The wire format of the control API.
 * `details` is what the network's driver adds (a bridge's name): views assume no driver.
 */
export function networkView(
  n: Network,
  details: Readonly<Record<string, string>> = {},
  eps: readonly Endpoint[] = [],
  sandboxName?: (id: string) => string | undefined,
) {
  return {
    id: n.id,
    name: n.name,
    owner: n.owner,
    driver: n.driver,
    internal: n.internal,
    ...details,
    ipv4: n.ipv4 ? { subnet: n.ipv4.subnet.toString(), gateway: n.ipv4.gateway?.toString() } : undefined,
    ipv6: n.ipv6 ? { subnet: n.ipv6.subnet.toString(), gateway: n.ipv6.gateway?.toString() } : undefined,
    options: n.options,
    labels: n.labels,
    created: n.created,
    endpoints: eps.map((e) => endpointView(e, sandboxName?.(e.sandboxId ?? ''))),
  };
}

export function endpointView(e: Endpoint, sandbox?: string) {
  return {
    id: e.id,
    sandbox,
    ifname: e.ifname,
    hostIfname: e.hostIfname,
    ipv4: e.ipv4?.toString(),
    ipv6: e.ipv6?.toString(),
    mac: e.mac,
    aliases: e.aliases,
    ports: e.ports,
  };
}

export function sandboxView(s: Sandbox, eps: readonly Endpoint[] = [], networkName?: (id: string) => string | undefined) {
  return {
    id: s.id,
    name: s.name,
    owner: s.owner,
    netns: s.netns,
    created: s.created,
    endpoints: eps.map((e) => ({ network: networkName?.(e.networkId), ...endpointView(e) })),
  };
}
