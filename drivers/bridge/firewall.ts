import type { NftCommand } from '../../libnetwork/kernel/index.js';
import type { Subnet } from '../../libnetwork/ipam/subnet.js';

/**
 * tnet's nftables layout: one `inet tnet` table that tnet alone writes. Base chains dispatch
 * through verdict maps keyed by bridge name to one small chain set per network, so adding or
 * removing a network or a published port is adding or deleting map elements: no rule handles
 * to track, and each operation is one transaction.
 *
 *   forward      iifname vmap @fwd_in   -> n-ID-in   traffic leaving bridge ID
 *                oifname vmap @fwd_out  -> n-ID-out  traffic entering bridge ID from elsewhere
 *   prerouting   fib daddr type local jump published   (published ports, DNAT)
 *   output       same, for connections from the host itself
 *   postrouting  oifname vmap @post_out -> n-ID-pout  hairpin and localhost masquerade
 *                iifname vmap @post_in  -> n-ID-pin   masquerade towards the outside
 *
 * Bridged traffic between two ports of one bridge reaches the forward hook through
 * br_netfilter (bridge-nf-call-iptables=1), which is what makes ICC off work.
 */
export const FAMILY = 'inet';
export const TABLE = 'tnet';

export interface FirewallNet {
  readonly id: string;
  readonly bridge: string;
  readonly internal: boolean;
  readonly icc: boolean;
  readonly masquerade: boolean;
  readonly subnet4: Subnet | undefined;
  readonly subnet6: Subnet | undefined;
}

export interface Publish {
  readonly proto: string;
  /** '' = every host address */
  readonly hostIp: string;
  readonly hostPort: number;
  readonly target: string; // container address
  readonly containerPort: number;
}

const T = { family: FAMILY, table: TABLE };
const TABLE_OBJ = { family: FAMILY, name: TABLE };
const chainName = (n: FirewallNet, part: string) => `n-${n.id.slice(0, 12)}-${part}`;

const meta = (key: string) => ({ meta: { key } });
const payload = (protocol: string, field: string) => ({ payload: { protocol, field } });
const eq = (left: unknown, right: unknown) => ({ match: { op: '==', left, right } });
const ne = (left: unknown, right: unknown) => ({ match: { op: '!=', left, right } });
const isIn = (left: unknown, right: unknown) => ({ match: { op: 'in', left, right } });
const prefix = (s: Subnet) => ({ prefix: { addr: s.first.toString(), len: s.prefix } });
const ACCEPT = { accept: null };
const DROP = { drop: null };
const MASQ = { masquerade: null };

const rule = (chain: string, ...expr: unknown[]): NftCommand => ({ add: { rule: { ...T, chain, expr } } });
const baseChain = (name: string, type: string, hook: string, prio: number): NftCommand => ({
  add: { chain: { ...T, name, type, hook, prio, policy: 'accept' } },
});

const MAPS: Record<string, { type: string | string[]; map: string }> = {
  fwd_in: { type: 'ifname', map: 'verdict' },
  fwd_out: { type: 'ifname', map: 'verdict' },
  post_in: { type: 'ifname', map: 'verdict' },
  post_out: { type: 'ifname', map: 'verdict' },
  // published host ports -> the endpoint's chain of DNAT rules (a verdict map: nft 1.0.6
  // crashes parsing a JSON dnat whose address comes from a concatenated map)
  pub4: { type: ['ipv4_addr', 'inet_proto', 'inet_service'], map: 'verdict' },
  pub6: { type: ['ipv6_addr', 'inet_proto', 'inet_service'], map: 'verdict' },
  pubany: { type: ['inet_proto', 'inet_service'], map: 'verdict' },
};

/**
 * The whole table from scratch, with these networks and published ports, as one transaction:
 * replaces whatever tnet's table held (the start-up reconcile), and never touches other tables.
 */
export function rebuild(nets: readonly FirewallNet[], published: ReadonlyMap<string, readonly Publish[]>): NftCommand[] {
  const cmds: NftCommand[] = [
    // "add" first so that "delete" cannot fail on a fresh host; then recreate.
    { add: { table: TABLE_OBJ } },
    { delete: { table: TABLE_OBJ } },
    { add: { table: TABLE_OBJ } },
    { add: { set: { ...T, name: 'bridges', type: 'ifname' } } },
  ];
  for (const [name, m] of Object.entries(MAPS)) cmds.push({ add: { map: { ...T, name, ...m } } });
  cmds.push(
    baseChain('forward', 'filter', 'forward', 0),
    rule('forward', { vmap: { key: meta('iifname'), data: '@fwd_in' } }),
    rule('forward', { vmap: { key: meta('oifname'), data: '@fwd_out' } }),
    { add: { chain: { ...T, name: 'published' } } },
    rule('published', { vmap: { key: { concat: [payload('ip', 'daddr'), meta('l4proto'), payload('th', 'dport')] }, data: '@pub4' } }),
    rule('published', { vmap: { key: { concat: [payload('ip6', 'daddr'), meta('l4proto'), payload('th', 'dport')] }, data: '@pub6' } }),
    rule('published', { vmap: { key: { concat: [meta('l4proto'), payload('th', 'dport')] }, data: '@pubany' } }),
    baseChain('prerouting', 'nat', 'prerouting', -100),
    rule('prerouting', eq({ fib: { result: 'type', flags: ['daddr'] } }, 'local'), { jump: { target: 'published' } }),
    baseChain('output', 'nat', 'output', -100),
    rule('output', eq({ fib: { result: 'type', flags: ['daddr'] } }, 'local'), { jump: { target: 'published' } }),
    baseChain('postrouting', 'nat', 'postrouting', 100),
    rule('postrouting', { vmap: { key: meta('oifname'), data: '@post_out' } }),
    rule('postrouting', { vmap: { key: meta('iifname'), data: '@post_in' } }),
  );
  for (const n of nets) cmds.push(...addNetwork(n));
  for (const [endpointId, list] of published) cmds.push(...publish(endpointId, list));
  return cmds;
}

/** Removes tnet's table if it is there ("add" first so the delete cannot fail). */
export function dropTable(): NftCommand[] {
  return [{ add: { table: TABLE_OBJ } }, { delete: { table: TABLE_OBJ } }];
}

const element = (op: 'add' | 'delete', name: string, elem: unknown[]): NftCommand => ({
  [op]: { element: { ...T, name, elem } },
});

/** The chains and map entries of one network. */
export function addNetwork(n: FirewallNet): NftCommand[] {
  const [cin, cout, pin, pout] = ['in', 'out', 'pin', 'pout'].map((p) => chainName(n, p)) as [string, string, string, string];
  const cmds: NftCommand[] = [cin, cout, pin, pout].map((name) => ({ add: { chain: { ...T, name } } }));
  // Leaving the bridge: to the same bridge only if ICC; never to another tnet bridge; out only if not internal.
  cmds.push(rule(cin, eq(meta('oifname'), n.bridge), n.icc ? ACCEPT : DROP));
  cmds.push(rule(cin, eq(meta('oifname'), '@bridges'), DROP));
  if (n.internal) cmds.push(rule(cin, DROP));
  // Entering the bridge from elsewhere: replies and published ports only.
  cmds.push(rule(cout, isIn({ ct: { key: 'state' } }, ['established', 'related']), ACCEPT));
  if (!n.internal) cmds.push(rule(cout, isIn({ ct: { key: 'status' } }, 'dnat'), ACCEPT));
  cmds.push(rule(cout, DROP));
  if (!n.internal && n.masquerade) {
    for (const s of [n.subnet4, n.subnet6]) {
      if (s) cmds.push(rule(pin, eq(payload(s.family === 4 ? 'ip' : 'ip6', 'saddr'), prefix(s)), ne(meta('oifname'), n.bridge), MASQ));
    }
  }
  // A published port reached from the same bridge (hairpin) or from the host's loopback must
  // come back through tnet's NAT, so its source is rewritten to the bridge's address.
  cmds.push(rule(pout, eq(meta('iifname'), n.bridge), isIn({ ct: { key: 'status' } }, 'dnat'), MASQ));
  cmds.push(rule(pout, eq(payload('ip', 'saddr'), { prefix: { addr: '127.0.0.0', len: 8 } }), MASQ));
  cmds.push(
    element('add', 'bridges', [n.bridge]),
    element('add', 'fwd_in', [[n.bridge, { jump: { target: cin } }]]),
    element('add', 'fwd_out', [[n.bridge, { jump: { target: cout } }]]),
    element('add', 'post_in', [[n.bridge, { jump: { target: pin } }]]),
    element('add', 'post_out', [[n.bridge, { jump: { target: pout } }]]),
  );
  return cmds;
}

export function deleteNetwork(n: FirewallNet): NftCommand[] {
  const cmds: NftCommand[] = [
    element('delete', 'fwd_in', [n.bridge]),
    element('delete', 'fwd_out', [n.bridge]),
    element('delete', 'post_in', [n.bridge]),
    element('delete', 'post_out', [n.bridge]),
    element('delete', 'bridges', [n.bridge]),
  ];
  for (const p of ['in', 'out', 'pin', 'pout']) {
    const name = chainName(n, p);
    cmds.push({ flush: { chain: { ...T, name } } }, { delete: { chain: { ...T, name } } });
  }
  return cmds;
}

const portChain = (endpointId: string) => `p-${endpointId.slice(0, 12)}`;

function portKeys(list: readonly Publish[]): Map<string, unknown[]> {
  const by = new Map<string, unknown[]>();
  const seen = new Set<string>();
  for (const p of list) {
    const name = p.hostIp === '' ? 'pubany' : p.hostIp.includes(':') ? 'pub6' : 'pub4';
    const key = p.hostIp === '' ? { concat: [p.proto, p.hostPort] } : { concat: [p.hostIp, p.proto, p.hostPort] };
    const id = JSON.stringify([name, key]);
    if (seen.has(id)) continue; // an every-address port DNATs to both families from one key
    seen.add(id);
    by.set(name, [...(by.get(name) ?? []), key]);
  }
  return by;
}

/** An endpoint's published ports: a chain of DNAT rules, and the map keys that lead to it. */
export function publish(endpointId: string, list: readonly Publish[]): NftCommand[] {
  if (list.length === 0) return [];
  const chain = portChain(endpointId);
  const cmds: NftCommand[] = [{ add: { chain: { ...T, name: chain } } }];
  for (const p of list) {
    const v6 = p.target.includes(':');
    const match: unknown[] = [eq(meta('nfproto'), v6 ? 'ipv6' : 'ipv4')];
    if (p.hostIp !== '') match.push(eq(payload(v6 ? 'ip6' : 'ip', 'daddr'), p.hostIp));
    match.push(eq(meta('l4proto'), p.proto), eq(payload('th', 'dport'), p.hostPort));
    cmds.push(rule(chain, ...match, { dnat: { family: v6 ? 'ip6' : 'ip', addr: p.target, port: p.containerPort } }));
  }
  for (const [name, keys] of portKeys(list)) {
    cmds.push(element('add', name, keys.map((k) => [k, { jump: { target: chain } }])));
  }
  return cmds;
}

export function unpublish(endpointId: string, list: readonly Publish[]): NftCommand[] {
  if (list.length === 0) return [];
  const chain = portChain(endpointId);
  const cmds: NftCommand[] = [...portKeys(list)].map(([name, keys]) => element('delete', name, keys));
  cmds.push({ flush: { chain: { ...T, name: chain } } }, { delete: { chain: { ...T, name: chain } } });
  return cmds;
}
