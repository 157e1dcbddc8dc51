import { describe, expect, it } from 'vitest';
import { nodeSignature, planLab, wireSignature } from '../../libnetwork/lab/plan.js';
import type { LabSpec } from '../../libnetwork/lab/topology.js';

const ns = (n: string) => `tn-lab+${n}`;
const pools = { p2p4: '10.254.0.0/16', loopback4: '10.255.0.0/24', v6: 'fc00:0:1::/48' };

const ring = (n: number): LabSpec => ({
  name: 'lab',
  networks: {},
  nodes: Object.fromEntries(Array.from({ length: n }, (_, i) => [`n${i}`, {}])),
  links: Array.from({ length: n }, (_, i) => ({ endpoints: [`n${i}`, `n${(i + 1) % n}`] as [string, string] })),
});

describe('planLab', () => {
  it('numbers point-to-point links with consecutive /31s and names interfaces eth0, eth1...', () => {
    const p = planLab(ring(3), pools, ns);
    expect(p.wires.map((w) => [w.a.addresses, w.b.addresses])).toEqual([
      [['10.254.0.0/31'], ['10.254.0.1/31']],
      [['10.254.0.2/31'], ['10.254.0.3/31']],
      [['10.254.0.4/31'], ['10.254.0.5/31']],
    ]);
    expect(p.nodes.n1!.interfaces.map((i) => i.ifname)).toEqual(['eth0', 'eth1']);
    expect(p.nodes.n1!.netns).toBe('tn-lab+n1');
    expect(p.wires.every((w) => w.mtu === 1500)).toBe(true);
  });

  it('keeps the addresses of links that stay when the lab changes', () => {
    const old = planLab(ring(4), pools, ns);
    const spec = ring(4);
    spec.links.splice(1, 1); // n1-n2 goes
    spec.links.push({ endpoints: ['n0', 'n2'] });
    const p = planLab(spec, pools, ns, old);
    const byKey = new Map(old.wires.map((w) => [w.key, wireSignature(w)]));
    for (const w of p.wires.slice(0, 3)) expect(wireSignature(w)).toBe(byKey.get(w.key));
    // the new link takes the /31 the removed one freed
    expect(p.wires[3]!.a.addresses).toEqual(['10.254.0.2/31']);
  });

  it('gives IPv6 /127s when the lab asks, and auto loopbacks from the pool', () => {
    const spec: LabSpec = { name: 'lab', ipv6: true, networks: {}, nodes: { a: { loopback: 'auto' }, b: { loopback: '192.0.2.7' } }, links: [{ endpoints: ['a', 'b'] }] };
    const p = planLab(spec, pools, ns);
    expect(p.wires[0]!.a.addresses).toEqual(['10.254.0.0/31', 'fc00:0:1::/127']);
    expect(p.wires[0]!.b.addresses).toEqual(['10.254.0.1/31', 'fc00:0:1::1/127']);
    expect(p.nodes.a!.loopback).toEqual(['10.255.0.1/32']);
    expect(p.nodes.b!.loopback).toEqual(['192.0.2.7/32']);
  });

  it('uses given addresses and interface names, and plans LAN attachments', () => {
    const spec: LabSpec = {
      name: 'lab',
      networks: { lan0: { subnet: '10.10.0.0/24', mtu: 9000 } },
      nodes: { r1: {}, r2: {}, h1: {} },
      links: [
        { endpoints: ['r1:eth1', 'r2:eth1'], ipv4: ['192.0.2.0/31', '192.0.2.1/31'] },
        { endpoints: ['h1:eth0', 'lan0'] },
        { endpoints: ['r1:eth2', 'lan0'], ipv4: '10.10.0.254/24' },
      ],
    };
    const p = planLab(spec, {}, ns);
    expect(p.wires[0]!.a.addresses).toEqual(['192.0.2.0/31']);
    expect(p.attachments).toEqual([
      { key: 'h1:eth0', link: 'h1:eth0|lan0', node: 'h1', ifname: 'eth0', network: 'lan0', ipv4: undefined, ipv6: undefined },
      { key: 'r1:eth2', link: 'r1:eth2|lan0', node: 'r1', ifname: 'eth2', network: 'lan0', ipv4: '10.10.0.254', ipv6: undefined },
    ]);
    expect(p.nodes.r1!.interfaces.map((i) => [i.ifname, i.mtu])).toEqual([['eth1', 1500], ['eth2', 9000]]);
    expect(p.networks.lan0).toMatchObject({ internal: true, driver: 'bridge', mtu: 9000 });
  });

  it('refuses an interface used twice and a LAN link whose MTU differs from the LAN', () => {
    const twice: LabSpec = { name: 'lab', networks: {}, nodes: { a: {}, b: {}, c: {} }, links: [{ endpoints: ['a:eth1', 'b'] }, { endpoints: ['a:eth1', 'c'] }] };
    expect(() => planLab(twice, pools, ns)).toThrow(/interface "a:eth1" is used by two links/);
    const mtu: LabSpec = { name: 'lab', networks: { lan: { mtu: 9000 } }, nodes: { a: {} }, links: [{ endpoints: ['a', 'lan'], mtu: 1500 }] };
    expect(() => planLab(mtu, pools, ns)).toThrow(/MTU 1500 differs from network "lan"'s 9000/);
  });

  it('node signatures change with the node settings only', () => {
    const a = planLab(ring(2), pools, ns);
    const spec = ring(2);
    spec.nodes.n0 = { sysctls: { 'net.ipv4.ip_forward': 1 } };
    const b = planLab(spec, pools, ns);
    expect(nodeSignature(b.nodes.n0!)).not.toBe(nodeSignature(a.nodes.n0!));
    expect(nodeSignature(b.nodes.n1!)).toBe(nodeSignature(a.nodes.n1!));
  });
});
