/**
 * A lab's names, learned from the controller's 'lab' event: inside every node the other nodes of
 * its lab resolve as `NODE` and `NODE.LAB` (and their aliases), and the PTR of every node address
 * gives `NODE.LAB`.
 *
 * Which address a name gives depends on who asks, as a person would expect in a lab: the address
 * on a segment the asker shares with the node (a point-to-point link or a LAN), so `ping r2` from
 * r1 goes over their link; otherwise the node's loopback, else its first address (a routed lab's
 * identity). Records:
 *  - per segment (wire or LAN) a DNS network named LAB holding its members' addresses on it, in
 *    the scope of its members only;
 *  - per lab a fallback network named LAB (answers only names no segment of the asker has) with
 *    each node's loopback or first address, and PTR-only records for its other addresses.
 */
import type { LabPlan } from '../libnetwork/lab/plan.js';
import type { DnsServer } from './server.js';

export interface LabRecordsTracker {
  up(lab: string, plan: LabPlan, sandboxOf: (node: string) => string | undefined): void;
  down(lab: string): void;
}

const bare = (c: string) => c.split('/')[0]!;
const fam = (c: string) => (c.includes(':') ? 6 : 4);

/**
 * `scopes`: the DNS service's sandbox -> networks map (its own networks stay in it); `publish`
 * tells the server a sandbox's new scope.
 */
export function labRecords(server: DnsServer, scopes: Map<string, Set<string>>, publish: (sandboxId: string) => void): LabRecordsTracker {
  /** Per lab: the DNS networks it added, and the sandboxes whose scope they joined. */
  const made = new Map<string, { nets: string[]; sandboxes: Map<string, string[]> }>();

  const join = (sandboxId: string, netId: string, into: Map<string, string[]>) => {
    let s = scopes.get(sandboxId);
    if (!s) scopes.set(sandboxId, (s = new Set()));
    s.add(netId);
    const l = into.get(sandboxId);
    if (l) l.push(netId);
    else into.set(sandboxId, [netId]);
  };

  const down = (lab: string) => {
    const m = made.get(lab);
    if (!m) return;
    made.delete(lab);
    for (const id of m.nets) server.removeNetwork(id);
    for (const [sb, ids] of m.sandboxes) {
      const s = scopes.get(sb);
      if (!s) continue;
      for (const id of ids) s.delete(id);
      publish(sb);
    }
  };

  const up = (lab: string, plan: LabPlan, sandboxOf: (node: string) => string | undefined) => {
    down(lab);
    const m = { nets: [] as string[], sandboxes: new Map<string, string[]>() };
    made.set(lab, m);
    const names = (node: string) => [node, ...(plan.nodes[node]?.aliases ?? [])];
    const network = (id: string, fallback: boolean) => {
      server.setNetwork({ networkId: id, name: lab, internal: true, fallback });
      m.nets.push(id);
    };
    const record = (netId: string, id: string, node: string, addrs: readonly string[], ptrOnly = false) => {
      const v4 = addrs.find((a) => fam(a) === 4);
      const v6 = addrs.find((a) => fam(a) === 6);
      if (!v4 && !v6) return;
      server.setEndpoint({
        endpointId: id, networkId: netId, networkName: lab, names: names(node), ipv4: v4 && bare(v4), ipv6: v6 && bare(v6),
        sandboxId: sandboxOf(node), ...(ptrOnly ? { ptrOnly } : {}),
      });
    };
    // segments: wires and LANs
    for (const w of plan.wires) {
      const id = `lab:${lab}:wire:${w.key}`;
      network(id, false);
      record(id, `${id}:a`, w.a.node, w.a.addresses);
      record(id, `${id}:b`, w.b.node, w.b.addresses);
      for (const n of [w.a.node, w.b.node]) {
        const sb = sandboxOf(n);
        if (sb) join(sb, id, m.sandboxes);
      }
    }
    for (const net of Object.keys(plan.networks)) {
      const id = `lab:${lab}:net:${net}`;
      network(id, false);
      for (const node of Object.values(plan.nodes)) {
        const i = node.interfaces.find((x) => x.network === net);
        if (!i) continue;
        record(id, `${id}:${node.name}`, node.name, i.addresses);
        const sb = sandboxOf(node.name);
        if (sb) join(sb, id, m.sandboxes);
      }
    }
    // the lab-wide fallback
    const all = `lab:${lab}`;
    network(all, true);
    for (const node of Object.values(plan.nodes)) {
      const addrs = [...node.loopback, ...node.interfaces.flatMap((i) => i.addresses)];
      const primary = [addrs.find((a) => fam(a) === 4), addrs.find((a) => fam(a) === 6)].filter((a): a is string => a !== undefined);
      record(all, `${all}:${node.name}`, node.name, primary);
      for (const a of addrs) if (!primary.includes(a)) record(all, `${all}:${node.name}:${bare(a)}`, node.name, [a], true);
      const sb = sandboxOf(node.name);
      if (sb) join(sb, all, m.sandboxes);
    }
    for (const sb of m.sandboxes.keys()) publish(sb);
  };

  return { up, down };
}
