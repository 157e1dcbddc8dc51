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
 * A connection to a published port (`ct status dnat`) passes n-ID-in before the ICC and
 * isolation drops, both ways: from the publisher itself, an ICC-off peer, another network.
 * Hairpin traffic (DNATed back into the bridge it came from) is bridged by br_netfilter, not
 * routed: reaching the sender's own port needs hairpin mode on that bridge port (the driver
 * sets it on endpoints that publish ports). What NAT cannot do (IPv6 to an IPv4 container,
 * [::1]) is the driver's userland proxy (proxy.ts).
 *
 * Bridged traffic between two ports of one bridge reaches the forward hook through
 * br_netfilter (bridge-nf-call-iptables=1), which is what makes ICC off work.
 */
export const FAMILY = 'inet';

/** The table of an instance: `tnet` for the host's unscoped instance, `tnet-SCOPE` for the others. */
export const tableName = (scope: string) => (scope ? `tnet-${scope}` : 'tnet');

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

/** The commands on one instance's table; every operation is one transaction of these. */
export class Firewall {
  private readonly T: { family: string; table: string };
  private readonly tableObj: { family: string; name: string };

  constructor(readonly table: string) {
    this.T = { family: FAMILY, table };
    this.tableObj = { family: FAMILY, name: table };
  }

  private rule(chain: string, ...expr: unknown[]): NftCommand {
    return { add: { rule: { ...this.T, chain, expr } } };
  }

  private baseChain(name: string, type: string, hook: string, prio: number): NftCommand {
    return { add: { chain: { ...this.T, name, type, hook, prio, policy: 'accept' } } };
  }

  private element(op: 'add' | 'delete', name: string, elem: unknown[]): NftCommand {
    return { [op]: { element: { ...this.T, name, elem } } };
  }

  /**
   * The whole table from scratch, with these networks and published ports, as one transaction:
   * replaces whatever tnet's table held (the start-up reconcile), and never touches other tables.
   */
  rebuild(nets: readonly FirewallNet[], published: ReadonlyMap<string, readonly Publish[]>): NftCommand[] {
    const cmds: NftCommand[] = [
      // "add" first so that "delete" cannot fail on a fresh host; then recreate.
      { add: { table: this.tableObj } },
      { delete: { table: this.tableObj } },
      { add: { table: this.tableObj } },
      { add: { set: { ...this.T, name: 'bridges', type: 'ifname' } } },
    ];
    for (const [name, m] of Object.entries(MAPS)) cmds.push({ add: { map: { ...this.T, name, ...m } } });
    cmds.push(
      this.baseChain('forward', 'filter', 'forward', 0),
      this.rule('forward', { vmap: { key: meta('iifname'), data: '@fwd_in' } }),
      this.rule('forward', { vmap: { key: meta('oifname'), data: '@fwd_out' } }),
      { add: { chain: { ...this.T, name: 'published' } } },
      this.rule('published', { vmap: { key: { concat: [payload('ip', 'daddr'), meta('l4proto'), payload('th', 'dport')] }, data: '@pub4' } }),
      this.rule('published', { vmap: { key: { concat: [payload('ip6', 'daddr'), meta('l4proto'), payload('th', 'dport')] }, data: '@pub6' } }),
      this.rule('published', { vmap: { key: { concat: [meta('l4proto'), payload('th', 'dport')] }, data: '@pubany' } }),
      this.baseChain('prerouting', 'nat', 'prerouting', -100),
      this.rule('prerouting', eq({ fib: { result: 'type', flags: ['daddr'] } }, 'local'), { jump: { target: 'published' } }),
      this.baseChain('output', 'nat', 'output', -100),
      this.rule('output', eq({ fib: { result: 'type', flags: ['daddr'] } }, 'local'), { jump: { target: 'published' } }),
      this.baseChain('postrouting', 'nat', 'postrouting', 100),
      this.rule('postrouting', { vmap: { key: meta('oifname'), data: '@post_out' } }),
      this.rule('postrouting', { vmap: { key: meta('iifname'), data: '@post_in' } }),
    );
    for (const n of nets) cmds.push(...this.addNetwork(n));
    for (const [endpointId, list] of published) cmds.push(...this.publish(endpointId, list));
    return cmds;
  }

  /** Removes tnet's table if it is there ("add" first so the delete cannot fail). */
  dropTable(): NftCommand[] {
    return [{ add: { table: this.tableObj } }, { delete: { table: this.tableObj } }];
  }


  /** The chains and map entries of one network. */
  addNetwork(n: FirewallNet): NftCommand[] {
    const [cin, cout, pin, pout] = ['in', 'out', 'pin', 'pout'].map((p) => chainName(n, p)) as [string, string, string, string];
    const cmds: NftCommand[] = [cin, cout, pin, pout].map((name) => ({ add: { chain: { ...this.T, name } } }));
    // Leaving the bridge: a connection to a published port (DNATed, both directions) wherever it
    // leads, as Docker's bridge serves it (its proxy or its DNAT before the isolation chains): to
    // the publisher's own port through a host address, to a peer with ICC off, to another
    // network. Then: to the same bridge only if ICC; never to another tnet bridge; out only if
    // not internal (an internal network reaches no published port, as with Docker).
    if (!n.internal) cmds.push(this.rule(cin, isIn({ ct: { key: 'status' } }, 'dnat'), ACCEPT));
    cmds.push(this.rule(cin, eq(meta('oifname'), n.bridge), n.icc ? ACCEPT : DROP));
    cmds.push(this.rule(cin, eq(meta('oifname'), '@bridges'), DROP));
    if (n.internal) cmds.push(this.rule(cin, DROP));
    // Entering the bridge from elsewhere: replies and published ports only.
    cmds.push(this.rule(cout, isIn({ ct: { key: 'state' } }, ['established', 'related']), ACCEPT));
    if (!n.internal) cmds.push(this.rule(cout, isIn({ ct: { key: 'status' } }, 'dnat'), ACCEPT));
    cmds.push(this.rule(cout, DROP));
    if (!n.internal && n.masquerade) {
      for (const s of [n.subnet4, n.subnet6]) {
        if (s) cmds.push(this.rule(pin, eq(payload(s.family === 4 ? 'ip' : 'ip6', 'saddr'), prefix(s)), ne(meta('oifname'), n.bridge), MASQ));
      }
    }
    // A published port reached from the same bridge (hairpin) or from the host's loopback must
    // come back through tnet's NAT, so its source is rewritten to the bridge's address. Matched
    // by source subnet, not by iifname: br_netfilter bridges hairpin DNAT and its postrouting
    // hook has no input interface. Without it a container reaching its own port gets a packet
    // from itself (a martian).
    for (const s of [n.subnet4, n.subnet6]) {
      if (s) cmds.push(this.rule(pout, eq(payload(s.family === 4 ? 'ip' : 'ip6', 'saddr'), prefix(s)), isIn({ ct: { key: 'status' } }, 'dnat'), MASQ));
    }
    cmds.push(this.rule(pout, eq(payload('ip', 'saddr'), { prefix: { addr: '127.0.0.0', len: 8 } }), MASQ));
    cmds.push(
      this.element('add', 'bridges', [n.bridge]),
      this.element('add', 'fwd_in', [[n.bridge, { jump: { target: cin } }]]),
      this.element('add', 'fwd_out', [[n.bridge, { jump: { target: cout } }]]),
      this.element('add', 'post_in', [[n.bridge, { jump: { target: pin } }]]),
      this.element('add', 'post_out', [[n.bridge, { jump: { target: pout } }]]),
    );
    return cmds;
  }

  deleteNetwork(n: FirewallNet): NftCommand[] {
    const cmds: NftCommand[] = [
      this.element('delete', 'fwd_in', [n.bridge]),
      this.element('delete', 'fwd_out', [n.bridge]),
      this.element('delete', 'post_in', [n.bridge]),
      this.element('delete', 'post_out', [n.bridge]),
      this.element('delete', 'bridges', [n.bridge]),
    ];
    for (const p of ['in', 'out', 'pin', 'pout']) {
      const name = chainName(n, p);
      cmds.push({ flush: { chain: { ...this.T, name } } }, { delete: { chain: { ...this.T, name } } });
    }
    return cmds;
  }

  /** An endpoint's published ports: a chain of DNAT rules, and the map keys that lead to it. */
  publish(endpointId: string, list: readonly Publish[]): NftCommand[] {
    if (list.length === 0) return [];
    const chain = portChain(endpointId);
    const cmds: NftCommand[] = [{ add: { chain: { ...this.T, name: chain } } }];
    for (const p of list) {
      const v6 = p.target.includes(':');
      const match: unknown[] = [eq(meta('nfproto'), v6 ? 'ipv6' : 'ipv4')];
      if (p.hostIp !== '') match.push(eq(payload(v6 ? 'ip6' : 'ip', 'daddr'), p.hostIp));
      // ::1 DNATed out of the host is dropped as a martian (IPv6 has no route_localnet): the
      // driver's userland proxy serves it.
      else if (v6) match.push(ne(payload('ip6', 'daddr'), '::1'));
      match.push(eq(meta('l4proto'), p.proto), eq(payload('th', 'dport'), p.hostPort));
      cmds.push(this.rule(chain, ...match, { dnat: { family: v6 ? 'ip6' : 'ip', addr: p.target, port: p.containerPort } }));
    }
    for (const [name, keys] of portKeys(list)) {
      cmds.push(this.element('add', name, keys.map((k) => [k, { jump: { target: chain } }])));
    }
    return cmds;
  }

  unpublish(endpointId: string, list: readonly Publish[]): NftCommand[] {
    if (list.length === 0) return [];
    const chain = portChain(endpointId);
    const cmds: NftCommand[] = [...portKeys(list)].map(([name, keys]) => this.element('delete', name, keys));
    cmds.push({ flush: { chain: { ...this.T, name: chain } } }, { delete: { chain: { ...this.T, name: chain } } });
    return cmds;
  }
}
