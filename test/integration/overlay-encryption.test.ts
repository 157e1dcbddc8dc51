/**
 * Encrypted overlay (`-o encrypted`): what this kernel can run and what it refuses.
 * - the ESP probe agrees with the kernel (here: no ESP, no GCM) and changes nothing;
 * - the key ring through a real etcd, two clients as two hosts: one ring, rotations seen by both,
 *   concurrent rotations converge;
 * - the XFRM policies towards two remotes (SPI, mark, port), a rotation that swaps them with no
 *   moment without a policy, the nft mark and drop rules, gone with the last network;
 * - fail closed on the wire, with two "hosts" (namespaces) and a VXLAN between them: an encrypted
 *   VNI sends nothing in clear (a policy without an SA drops; no policy: the postrouting drop) and
 *   refuses cleartext it receives, while another VNI on the same underlay keeps working;
 * - ESP traffic itself (ping over encrypted VXLAN, ESP counted on the SAs) skips with the probe's
 *   reason on a kernel without ESP.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import t, { type Test } from 'tap';
import { assertClean, isolate, sh, until } from './harness.js';

await isolate();
const { encryptionUnsupported, EncryptionPlane, buildSpi, ipsecTableName, IPSEC_MARK, VXLAN_PORT } = await import('../../drivers/overlay/encryption.js');
const { ClusterKeys, EncryptionKey, KeyRing } = await import('../../drivers/overlay/keys.js');
type KeyRing = import('../../drivers/overlay/keys.js').KeyRing;
const { Netns, xfrmApply, xfrmPolicyList, xfrmStateAdd } = await import('../../libnetwork/kernel/index.js');
const { isTnetError } = await import('../../libnetwork/errors.js');

const xfrmEmpty = (ns = '') => {
  const p = sh(`ip ${ns ? `-n ${ns} ` : ''}xfrm policy list`).out.trim();
  const s = sh(`ip ${ns ? `-n ${ns} ` : ''}xfrm state list`).out.trim();
  return p === '' && s === '';
};
const tables = () => sh('nft list tables').out.split('\n').filter((x) => x.trim());

// What the kernel says, found without tnet: an ESP SA with AES-GCM in a throwaway namespace.
const direct = sh(
  "unshare --net ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 reqid 1 mode transport aead 'rfc4106(gcm(aes))' 0x0000000000000000000000000000000000000000 64",
);
const t0 = performance.now();
const reason = await encryptionUnsupported();
const probeMs = performance.now() - t0;

t.test('the ESP probe matches the kernel, is fast, cached and leaves nothing', async (t) => {
  t.comment(`probe: ${reason ?? 'IPsec ESP with AES-GCM is supported'} (${probeMs.toFixed(1)} ms; the kernel said: ${direct.out.trim() || 'ok'})`);
  t.equal(reason === undefined, direct.code === 0, 'supported exactly when the kernel accepts an AES-GCM ESP SA');
  if (reason !== undefined) {
    t.match(reason, /^IPsec ESP with AES-GCM is unsupported on this kernel \(.+\)$/, 'a reason for people');
    t.ok(reason.includes(direct.out.trim().replace(/^Error: /, '')), 'quotes what the kernel said');
  }
  t.ok(probeMs < 500, `one probe took ${probeMs.toFixed(1)} ms`);
  t.equal(encryptionUnsupported(), encryptionUnsupported(), 'cached: the same answer, not a new probe');
  t.equal(await encryptionUnsupported(), reason, 'same answer');
  t.ok(xfrmEmpty(), 'no policy or state was added here');
});

if (!existsSync('/usr/bin/etcd')) {
  t.test('key ring through etcd', { skip: 'etcd is not installed (Debian etcd-server): run scripts/setup' }, () => undefined);
} else {
  t.test('the key ring through a real etcd, two hosts', async (t) => {
    const { startEtcd } = await import('../etcd-harness.js');
    const { EtcdGlobalStore } = await import('../../libnetwork/store/etcd.js');
    const etcd = await startEtcd();
    t.teardown(() => etcd.destroy());
    const open = () => EtcdGlobalStore.open({ url: etcd.url, ...etcd.tls, ttl: 5, timeoutMs: 2000 });
    const [sa, sb] = await Promise.all([open(), open()]);
    t.teardown(async () => {
      await sa.close();
      await sb.close();
    });
    const a = new ClusterKeys(sa);
    const b = new ClusterKeys(sb);
    const hex = (r: KeyRing) => r.keys.map((k) => `${k.tag}:${k.aeadKey().toString('hex')}`);

    const [ra, rb] = await Promise.all([a.ensure(), b.ensure()]);
    t.same(hex(ra), hex(rb), 'made at once by both: one ring');
    t.same(ra.tags, [1, 2, 3]);
    t.equal(ra.primary.tag, 2, 'the primary is the middle key');

    const seen: KeyRing[] = [];
    const w = b.watch((r) => seen.push(r));
    t.ok(await until(() => seen.length === 1, 3000), 'the watch starts with the ring');
    const rot = await a.rotate(ra);
    t.ok(rot.rotated, 'host A rotated');
    t.ok(await until(() => seen.length === 2, 3000), 'host B hears of it');
    t.same(hex(seen[1]!), hex(rot.ring), 'host B has host A\'s new ring');
    t.same(seen[1]!.tags, [2, 3, 4]);
    t.ok(ra.tags.includes(seen[1]!.primary.tag), 'the new primary was in the old ring (every host could already receive with it)');

    const both = await Promise.all([a.rotate(rot.ring), b.rotate(rot.ring)]);
    t.equal(both.filter((r) => r.rotated).length, 1, 'concurrent rotations: one applies');
    t.same(hex(both[0]!.ring), hex(both[1]!.ring), 'both hosts end with the same ring');
    t.same(both[0]!.ring.tags, [3, 4, 5]);
    t.ok(await until(() => seen.length === 3, 3000), 'the watch saw exactly the one rotation');
    t.same(hex(seen[2]!), hex(both[0]!.ring));
    await new Promise((r) => setTimeout(r, 200));
    t.equal(seen.length, 3, 'nothing delivered twice');
    await w.close();
  });
}

/** A ring to program with, fixed bytes (the policies carry only SPIs, made from the tags). */
const ringOf = (tags: number[], revision = 1): KeyRing =>
  new KeyRing(tags.map((tag) => new EncryptionKey(tag, Buffer.alloc(16, tag), Buffer.alloc(4, tag))), revision, 0);

const LOCAL = '192.0.2.1';
const REMOTES = ['192.0.2.2', '192.0.2.3'];

/** The encrypted-overlay policies of the namespace, as "dst spi". */
async function policies(ns?: string): Promise<string[]> {
  const list = await xfrmPolicyList(ns ? Netns.named(ns) : undefined);
  return list
    .filter((p) => p.mark?.value === IPSEC_MARK)
    .map((p) => `${p.dst} ${p.tmpls[0]?.spi.toString(16)}`)
    .sort();
}
const expected = (ring: KeyRing, remotes = REMOTES) => remotes.map((r) => `${r} ${buildSpi(LOCAL, r, ring.primary.tag).toString(16)}`).sort();

t.test('policies towards two remotes, a rotation without a gap, the nft rules until the last network', async (t) => {
  const plane = new EncryptionPlane({ scope: 'enc1', states: false });
  t.teardown(() => plane.close().catch(() => undefined));
  const table = ipsecTableName('enc1');

  plane.addNetwork(256);
  plane.addNetwork(300);
  const listed = sh(`nft list table inet ${table}`).out;
  for (const vni of ['0x100', '0x12c']) {
    t.match(listed, new RegExp(`udp dport 4789 @th,96,24 ${vni} meta mark set 0x00d0c4e3`), `VNI ${vni}: outgoing VXLAN marked`);
    t.match(listed, new RegExp(`udp dport 4789 @th,96,24 ${vni} meta ipsec missing drop`), `VNI ${vni}: incoming cleartext dropped`);
    t.match(listed, new RegExp(`udp dport 4789 @th,96,24 ${vni} meta mark 0x00d0c4e3 rt ipsec missing drop`), `VNI ${vni}: outgoing cleartext dropped`);
  }
  t.match(listed, /type route hook output priority mangle/, 'the mark is set where the route is looked up again');

  // Every policy change the kernel makes, in order (the monitor's first word: Updated / Deleted).
  const monitor = spawn('ip', ['xfrm', 'monitor', 'policy'], { stdio: ['ignore', 'pipe', 'ignore'] });
  t.teardown(() => void (monitor.exitCode === null && monitor.kill('SIGKILL')));
  let events = '';
  monitor.stdout.on('data', (d: Buffer) => (events += d.toString()));
  const kinds = () => events.split('\n').filter((l) => /^\S/.test(l)).map((l) => l.split(' ')[0]);
  await new Promise((r) => setTimeout(r, 300)); // subscribed

  let ring = ringOf([1, 2, 3]);
  await plane.setRemotes(LOCAL, REMOTES, ring);
  t.same(await policies(), expected(ring), 'one policy per remote with the primary key\'s SPI');
  const raw = sh('ip xfrm policy list').out;
  for (const r of REMOTES) {
    t.match(raw, new RegExp(`src ${LOCAL}/32 dst ${r.replace(/\./g, '\\.')}/32 proto udp dport ${VXLAN_PORT}\\s+dir out[^\\n]*\\n\\s+mark 0xd0c4e3/0xffffffff\\s+tmpl src ${LOCAL} dst ${r.replace(/\./g, '\\.')}\\s+proto esp spi 0x[0-9a-f]+ reqid 13681891 mode transport`), `policy to ${r}: udp/4789, mark, ESP transport template`);
  }

  // Rotations while a sampler lists the policies as fast as it can: every sample has both.
  const samples = `${tmpdir()}/tnet-enc-samples-${process.pid}`;
  const sampler = sh(`rm -f ${samples}; (for i in $(seq 150); do ip xfrm policy list | grep -c 'dir out'; done > ${samples}) & echo $!`).out.trim();
  const pid = Number(sampler);
  let rotations = 0;
  const alive = () => sh(`kill -0 ${pid} 2>/dev/null`).code === 0;
  while (alive() && rotations < 200) {
    ring = ringOf([...ring.tags.slice(1), ring.tags.at(-1)! + 1], ring.revision + 1);
    await plane.setRemotes(LOCAL, REMOTES, ring);
    rotations++;
  }
  await until(() => !alive(), 10_000);
  const counts = sh(`cat ${samples}; rm -f ${samples}`).out.split('\n').filter(Boolean);
  t.ok(rotations >= 3, `${rotations} rotations ran while ${counts.length} samples were taken`);
  t.same([...new Set(counts)], ['2'], 'never a sample without both policies');
  const changes = 2 * (rotations + 1);
  await until(() => kinds().length >= changes, 3000);
  monitor.kill('SIGKILL');
  t.equal(kinds().length, changes, `the kernel saw ${changes} policy changes: 2 made, 2 per rotation`);
  t.same([...new Set(kinds())], ['Updated'], 'each an in-place update: no policy was ever deleted and re-added');
  t.same(await policies(), expected(ring), `the policies carry the new primary's SPI (key ${ring.primary.tag})`);

  await plane.setRemotes(LOCAL, [REMOTES[1]!], ring);
  t.same(await policies(), expected(ring, [REMOTES[1]!]), 'a remote that left: its policy is gone');

  // The same plane with SAs, on a kernel without ESP: refused with the probe's reason, nothing changed.
  if (reason !== undefined) {
    const withSas = new EncryptionPlane({ scope: 'enc2', states: true });
    const err = await withSas.setRemotes(LOCAL, REMOTES, ring).then(() => undefined, (e: unknown) => e);
    t.ok(isTnetError(err, 'unsupported'), `SAs refused: ${String(err)}`);
    t.match((err as Error).message, reason, 'with the probe\'s reason');
    t.same(await policies(), expected(ring, [REMOTES[1]!]), 'nothing changed');
    await withSas.close();
    // The SA verb itself, straight to the kernel: refused, and the key is not in the message.
    const key = Buffer.alloc(20, 0xab);
    const raw = await xfrmApply('probe', [xfrmStateAdd({ src: LOCAL, dst: REMOTES[0]!, spi: 0x1234, reqid: 1, aead: { name: 'rfc4106(gcm(aes))', key, icvBits: 64 } })]).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    t.match(raw?.message, /state add 192\.0\.2\.1 -> 192\.0\.2\.2 spi 0x1234/, `the kernel refuses the SA: ${raw?.message}`);
    t.notMatch(raw?.message, /abab/, 'no key material in the error');
  } else t.comment('this kernel supports ESP: the SA path is exercised by the ESP traffic test');

  plane.removeNetwork(256);
  const after = sh(`nft list table inet ${table}`).out;
  t.notMatch(after, /0x100/, 'VNI 256\'s rules are gone');
  t.match(after, /0x12c meta mark set/, 'VNI 300\'s stay');
  plane.removeNetwork(300);
  t.notOk(tables().some((x) => x.includes(table)), 'the table went with the last network');
  await plane.close();
  t.ok(xfrmEmpty(), 'no policy or state left');
  t.same(tables(), [], 'no nft table left');
});

t.test('repair: a batch that failed part way, a crashed instance, others\' policies kept; an IPv6 underlay', async (t) => {
  const ring = ringOf([1, 2, 3]);
  const plane = new EncryptionPlane({ scope: 'enc3', states: false });
  t.teardown(() => plane.close().catch(() => undefined));
  plane.addNetwork(256);
  await plane.setRemotes(LOCAL, REMOTES, ring);
  // Someone removes a policy behind tnet's back: withdrawing that remote fails, the next call starts over.
  sh(`ip xfrm policy delete src ${LOCAL}/32 dst ${REMOTES[0]}/32 proto udp dport 4789 dir out mark 0xd0c4e3 mask 0xffffffff`);
  const err = await plane.setRemotes(LOCAL, [REMOTES[1]!], ring).then(() => undefined, (e: unknown) => e);
  t.match(String(err), /policy delete 192\.0\.2\.1 -> 192\.0\.2\.2 udp\/4789.*No such file/, `the failure names the step: ${String(err)}`);
  const next = ringOf([2, 3, 4], 2);
  await plane.setRemotes(LOCAL, REMOTES, next);
  t.same(await policies(), expected(next), 'the next call programs everything again');

  // A policy that is not tnet's (another mark) survives a crashed instance's repair.
  sh(`ip xfrm policy add src ${LOCAL}/32 dst 192.0.2.9/32 proto udp dport 4789 dir out mark 0x1 mask 0xffffffff tmpl src ${LOCAL} dst 192.0.2.9 proto esp spi 0x99 mode transport`);
  // "Crash": the plane is abandoned as it is; a new instance repairs at start.
  const again = new EncryptionPlane({ scope: 'enc3', states: false });
  await again.reset();
  t.same(await policies(), [], 'the crashed instance\'s policies are gone');
  t.notOk(tables().some((x) => x.includes(ipsecTableName('enc3'))), 'and its table');
  t.match(sh('ip xfrm policy list').out, /dst 192\.0\.2\.9\/32[\s\S]*mark 0x1\/0xffffffff/, 'the foreign policy is untouched');
  sh(`ip xfrm policy delete src ${LOCAL}/32 dst 192.0.2.9/32 proto udp dport 4789 dir out mark 0x1 mask 0xffffffff`);
  await again.close();
  await plane.close(); // its table and policies are already gone: closing must not fail
  t.ok(xfrmEmpty(), 'nothing left');

  const v6 = new EncryptionPlane({ scope: 'enc4', states: false });
  await v6.setRemotes('2001:db8::1', ['2001:db8::2'], ring);
  const list = await xfrmPolicyList();
  t.same(
    list.map((p) => [p.src, p.dst, p.dport, p.tmpls[0]?.spi]),
    [['2001:db8::1', '2001:db8::2', 4789, buildSpi('2001:db8::1', '2001:db8::2', ring.primary.tag)]],
    'IPv6 underlay: a /128 policy with its SPI',
  );
  t.match(sh('ip xfrm policy list').out, /src 2001:db8::1\/128 dst 2001:db8::2\/128 proto udp dport 4789/);
  await t.rejects(v6.setRemotes('2001:db8::1', ['192.0.2.2'], ring), { code: 'invalid-argument' }, 'a remote of the other family is refused');
  await v6.close();
  t.ok(xfrmEmpty(), 'nothing left');
});

/**
 * Two "hosts" h1, h2 (namespaces) on a veth underlay 192.0.2.1 - 192.0.2.2, each with VXLAN 256
 * (10.99.0.0/24, to be encrypted) and VXLAN 257 (10.98.0.0/24, not) to the other.
 */
function twoHosts(t: Test): void {
  const r = sh(
    [
      'ip netns add h1',
      'ip netns add h2',
      'ip -n h1 link add u0 type veth peer name u0 netns h2',
      'ip -n h1 addr add 192.0.2.1/24 dev u0',
      'ip -n h2 addr add 192.0.2.2/24 dev u0',
      ...['h1', 'h2'].flatMap((h, i) => [
        `ip -n ${h} link set lo up`,
        `ip -n ${h} link set u0 up`,
        `ip -n ${h} link add vx256 type vxlan id 256 local 192.0.2.${i + 1} remote 192.0.2.${2 - i} dstport 4789`,
        `ip -n ${h} link add vx257 type vxlan id 257 local 192.0.2.${i + 1} remote 192.0.2.${2 - i} dstport 4789`,
        `ip -n ${h} addr add 10.99.0.${i + 1}/24 dev vx256`,
        `ip -n ${h} addr add 10.98.0.${i + 1}/24 dev vx257`,
        `ip -n ${h} link set vx256 up`,
        `ip -n ${h} link set vx257 up`,
      ]),
    ].join(' && '),
  );
  if (r.code !== 0) throw new Error(`two hosts: ${r.out}`);
  t.teardown(() => void sh('ip netns del h1; ip netns del h2'));
}

const ping = (from: string, ip: string) => sh(`ip netns exec ${from} ping -c 1 -W 1 ${ip}`).code === 0;
const rxPackets = (ns: string, dev: string) => Number(sh(`ip netns exec ${ns} cat /sys/class/net/${dev}/statistics/rx_packets`).out.trim());
const xfrmStat = (ns: string, key: string) => Number(new RegExp(`${key}\\s+(\\d+)`).exec(sh(`ip netns exec ${ns} cat /proc/net/xfrm_stat`).out)?.[1] ?? NaN);

t.test('fail closed on the wire: an encrypted VNI sends and accepts nothing in clear; another VNI is untouched', async (t) => {
  twoHosts(t);
  t.ok(ping('h1', '10.99.0.2'), 'before: VNI 256 works in clear');
  t.ok(ping('h1', '10.98.0.2'), 'before: VNI 257 works');
  const ring = ringOf([1, 2, 3]);
  const p1 = new EncryptionPlane({ scope: 'h1', ns: Netns.named('h1'), states: false });
  t.teardown(() => p1.close().catch(() => undefined));

  // h1 encrypts VNI 256, h2 does not yet: with a policy but no SA the kernel drops what h1 sends.
  p1.addNetwork(256);
  await p1.setRemotes('192.0.2.1', ['192.0.2.2'], ring);
  const rx0 = rxPackets('h2', 'vx256');
  const noStates0 = xfrmStat('h1', 'XfrmOutNoStates');
  t.notOk(ping('h1', '10.99.0.2'), 'VNI 256 from h1: no SA, no traffic');
  t.equal(rxPackets('h2', 'vx256'), rx0, 'nothing of VNI 256 reached h2 in clear');
  t.ok(xfrmStat('h1', 'XfrmOutNoStates') > noStates0, 'the marked datagrams met the policy (XfrmOutNoStates grew)');
  t.ok(ping('h1', '10.98.0.2'), 'VNI 257 still works in clear');

  // No policy at all (the remote left): the postrouting drop still keeps VNI 256 off the wire.
  await p1.setRemotes('192.0.2.1', [], ring);
  const rx1 = rxPackets('h2', 'vx256');
  t.notOk(ping('h1', '10.99.0.2'), 'VNI 256 from h1 without a policy: still nothing');
  t.equal(rxPackets('h2', 'vx256'), rx1, 'nothing of VNI 256 reached h2 in clear');

  // h1 stops encrypting; h2 encrypts VNI 256: h2 refuses what h1 sends in clear.
  p1.removeNetwork(256);
  t.ok(ping('h1', '10.99.0.2'), 'control: VNI 256 in clear works again once h1 stops encrypting');
  const p2 = new EncryptionPlane({ scope: 'h2', ns: Netns.named('h2'), states: false });
  t.teardown(() => p2.close().catch(() => undefined));
  p2.addNetwork(256);
  const rx2 = rxPackets('h2', 'vx256');
  t.notOk(ping('h1', '10.99.0.2'), 'cleartext VNI 256 arriving at h2 is dropped');
  t.equal(rxPackets('h2', 'vx256'), rx2, 'h2\'s vxlan got none of it');
  t.ok(ping('h1', '10.98.0.2'), 'VNI 257 still works');
  await p2.close();
  await p1.close();
  for (const h of ['h1', 'h2']) {
    t.ok(xfrmEmpty(h), `${h}: no policy or state left`);
    t.same(sh(`ip netns exec ${h} nft list tables`).out.trim(), '', `${h}: no nft table left`);
  }
});

t.test('ESP on the wire: ping over encrypted VXLAN, counted on the SAs', { skip: reason }, async (t) => {
  twoHosts(t);
  const ring = ringOf([1, 2, 3]);
  const planes = [1, 2].map((i) => new EncryptionPlane({ scope: `h${i}`, ns: Netns.named(`h${i}`) }));
  t.teardown(async () => {
    for (const p of planes) await p.close().catch(() => undefined);
  });
  for (const p of planes) p.addNetwork(256);
  await planes[0]!.setRemotes('192.0.2.1', ['192.0.2.2'], ring);
  await planes[1]!.setRemotes('192.0.2.2', ['192.0.2.1'], ring);
  t.ok(ping('h1', '10.99.0.2'), 'ping over the encrypted VNI');
  // The receive SA of the primary key on h2 counted the datagrams: they came as ESP.
  const spi = buildSpi('192.0.2.1', '192.0.2.2', ring.primary.tag).toString(16).padStart(8, '0');
  const state = sh(`ip -n h2 -s xfrm state get src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x${spi}`).out;
  const packets = Number(/(\d+)\(packets\)/.exec(state)?.[1] ?? 0);
  t.ok(packets > 0, `h2's SA for key ${ring.primary.tag} decrypted ${packets} packet(s)`);
  t.ok(ping('h1', '10.98.0.2'), 'VNI 257 still works');
});

t.test('nothing left', async (t) => {
  t.ok(xfrmEmpty(), 'no policy or state in the test namespace');
  await assertClean(t);
});
