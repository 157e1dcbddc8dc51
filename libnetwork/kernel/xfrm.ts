import { spawn } from 'node:child_process';
import { KernelError } from './error.js';
import { familyOf } from './inet.js';
import type { Netns } from './netns.js';

/**
 * IPsec (XFRM) policies and states through iproute2's `ip xfrm`, one `ip -batch` process per
 * operation (never one per object). The `netlink` package speaks rtnetlink only; XFRM is another
 * netlink family with its own structures, and its traffic is a handful of objects per remote
 * host, so the batch costs ~10 ms per operation.
 *
 * Key material never appears on a command line (argv is world-readable in /proc/PID/cmdline):
 * the batch goes through the child's stdin, and errors carry only iproute2's "Error:" lines,
 * which do not echo the key.
 */

/** A mark and its mask, as XFRM selects on them. */
export interface XfrmMark {
  readonly value: number;
  readonly mask: number;
}

/**
 * An outgoing transport-mode ESP policy for one UDP port between two hosts: what libnetwork's
 * encrypted overlay programs (`dir out`, src/dst host prefixes, proto udp dport, mark, one template).
 */
export interface XfrmPolicy {
  readonly src: string;
  readonly dst: string;
  readonly dport: number;
  readonly mark: XfrmMark;
  /** The template: the SA (by SPI and reqid) the traffic must go through. */
  readonly spi: number;
  readonly reqid: number;
}

/** How a policy is found again (its selector, direction and mark): what `policy delete` takes. */
export type XfrmPolicySelector = Omit<XfrmPolicy, 'spi' | 'reqid'>;

/** A transport-mode ESP state (SA) with an AEAD algorithm: `key` includes the algorithm's salt. */
export interface XfrmState {
  readonly src: string;
  readonly dst: string;
  readonly spi: number;
  readonly reqid: number;
  readonly aead: { readonly name: string; readonly key: Buffer; readonly icvBits: number };
}

/** A policy as the kernel lists it (the fields tnet reads back). */
export interface XfrmPolicyInfo {
  readonly src: string;
  readonly dst: string;
  readonly proto: string | undefined;
  readonly dport: number | undefined;
  readonly dir: string;
  readonly mark: XfrmMark | undefined;
  readonly tmpls: readonly { readonly src: string; readonly dst: string; readonly proto: string; readonly spi: number; readonly reqid: number; readonly mode: string }[];
}

/** One line of an `ip -batch`: made by the verbs below, run by xfrmApply. */
export interface XfrmCommand {
  readonly line: string;
  /** What the line does, for errors (never with key material). */
  readonly what: string;
}

const hex = (n: number) => `0x${(n >>> 0).toString(16)}`;
const host = (ip: string) => `${ip}/${familyOf(ip) === 4 ? 32 : 128}`;
const selector = (p: XfrmPolicySelector) =>
  `src ${host(p.src)} dst ${host(p.dst)} proto udp dport ${p.dport} dir out mark ${hex(p.mark.value)} mask ${hex(p.mark.mask)}`;

/** Adds the policy, or replaces its template in place (XFRM_MSG_UPDPOLICY: no moment without it). */
export function xfrmPolicyUpdate(p: XfrmPolicy): XfrmCommand {
  return {
    line: `xfrm policy update ${selector(p)} tmpl src ${p.src} dst ${p.dst} proto esp spi ${hex(p.spi)} reqid ${hex(p.reqid)} mode transport`,
    what: `policy update ${p.src} -> ${p.dst} udp/${p.dport} spi ${hex(p.spi)}`,
  };
}

export function xfrmPolicyDel(p: XfrmPolicySelector): XfrmCommand {
  return { line: `xfrm policy delete ${selector(p)}`, what: `policy delete ${p.src} -> ${p.dst} udp/${p.dport}` };
}

export function xfrmStateAdd(s: XfrmState): XfrmCommand {
  return {
    line:
      `xfrm state add src ${s.src} dst ${s.dst} proto esp spi ${hex(s.spi)} reqid ${hex(s.reqid)} mode transport ` +
      `aead '${s.aead.name}' 0x${s.aead.key.toString('hex')} ${s.aead.icvBits}`,
    what: `state add ${s.src} -> ${s.dst} spi ${hex(s.spi)} (${s.aead.name})`,
  };
}

export function xfrmStateDel(s: { readonly src: string; readonly dst: string; readonly spi: number }): XfrmCommand {
  return { line: `xfrm state delete src ${s.src} dst ${s.dst} proto esp spi ${hex(s.spi)}`, what: `state delete ${s.src} -> ${s.dst} spi ${hex(s.spi)}` };
}

/** Deletes every state with this reqid (absent ones are fine). */
export function xfrmStateFlush(reqid: number): XfrmCommand {
  return { line: `xfrm state deleteall reqid ${hex(reqid)}`, what: `state deleteall reqid ${hex(reqid)}` };
}

/** `ip` in `ns`: `ip -n NAME` for a named namespace, nsenter for one known by path. */
function ipArgv(ns: Netns | undefined, args: string[]): [string, string[]] {
  if (ns === undefined) return ['ip', args];
  if (ns.name !== undefined) return ['ip', ['-n', ns.name, ...args]];
  return ['nsenter', [`--net=${ns.path}`, 'ip', ...args]];
}

function run(cmd: string, argv: string[], input: string): Promise<{ code: number; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, argv, { stdio: [input ? 'pipe' : 'ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, out, err }));
    if (child.stdin) {
      // ip stops reading at its first failing line and exits: the rest of the batch meets a
      // closed pipe (EPIPE). Its exit status and "Error:" line are what the caller reports.
      child.stdin.on('error', () => undefined);
      child.stdin.end(input);
    }
  });
}

/**
 * iproute2's error lines only ("Error: ..."), never the batch it read. An argument it quotes back
 * (`argument "0x..." is wrong`) could be a key: long hex runs are blanked.
 */
function errorText(err: string, code: number): string {
  const lines = err.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('Command failed'));
  return lines.join('; ').replace(/(0x)?[0-9a-f]{16,}/gi, '<hex>').slice(0, 300) || `exit ${code}`;
}

/**
 * Runs the commands in order in one `ip -batch`; stops at the first that fails (KernelError with
 * iproute2's message). Which commands ran before it is not reported by iproute2: a caller that
 * must know re-reads the kernel (xfrmPolicyList) or starts again from a flush.
 */
export async function xfrmApply(what: string, cmds: readonly XfrmCommand[], ns?: Netns): Promise<void> {
  if (cmds.length === 0) return;
  const [cmd, argv] = ipArgv(ns, ['-batch', '-']);
  let r: { code: number; err: string };
  try {
    r = await run(cmd, argv, cmds.map((c) => c.line).join('\n') + '\n');
  } catch (e) {
    throw new KernelError('xfrm', what, `${(e as NodeJS.ErrnoException).code ?? 'EIO'} (running ${cmd}: iproute2 is needed for IPsec)`, e);
  }
  if (r.code !== 0) {
    const steps = cmds.length === 1 ? cmds[0]!.what : `${cmds.length} steps, first ${cmds[0]!.what}`;
    throw new KernelError('xfrm', `${what} (${steps})${ns ? ` in ${String(ns)}` : ''}`, errorText(r.err, r.code));
  }
}

/** Every policy of the namespace (not per-socket ones), as `ip xfrm policy list` prints them. */
export async function xfrmPolicyList(ns?: Netns): Promise<XfrmPolicyInfo[]> {
  const [cmd, argv] = ipArgv(ns, ['xfrm', 'policy', 'list', 'nosock']);
  const r = await run(cmd, argv, '').catch((e: unknown) => {
    throw new KernelError('xfrm policy list', ns ? String(ns) : 'this namespace', (e as NodeJS.ErrnoException).code ?? 'EIO', e);
  });
  if (r.code !== 0) throw new KernelError('xfrm policy list', ns ? String(ns) : 'this namespace', errorText(r.err, r.code));
  return parsePolicies(r.out);
}

/** Parses iproute2's text listing (it has no JSON output for xfrm). */
export function parsePolicies(text: string): XfrmPolicyInfo[] {
  const blocks: string[][] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    if (!/^\s/.test(line)) blocks.push([line]);
    else blocks.at(-1)?.push(line.trim());
  }
  return blocks.map((b) => {
    const word = (text: string, key: string) => {
      const m = new RegExp(`(?:^|\\s)${key} (\\S+)`).exec(text);
      return m?.[1];
    };
    const head = b[0]!;
    const dirLine = b.find((l) => l.startsWith('dir ')) ?? '';
    const markLine = b.find((l) => l.startsWith('mark ')) ?? '';
    const mark = /^mark (0x[0-9a-f]+)\/(0x[0-9a-f]+)/.exec(markLine);
    const tmpls: XfrmPolicyInfo['tmpls'][number][] = [];
    for (let i = 0; i < b.length; i++) {
      if (!b[i]!.startsWith('tmpl ')) continue;
      const both = `${b[i]} ${b[i + 1] ?? ''}`;
      tmpls.push({
        src: word(both, 'src') ?? '',
        dst: word(both, 'dst') ?? '',
        proto: word(both, 'proto') ?? '',
        spi: Number(word(both, 'spi') ?? 0),
        reqid: Number(word(both, 'reqid') ?? 0),
        mode: word(both, 'mode') ?? '',
      });
    }
    const dport = word(head, 'dport');
    return {
      src: (word(head, 'src') ?? '').replace(/\/\d+$/, ''),
      dst: (word(head, 'dst') ?? '').replace(/\/\d+$/, ''),
      proto: word(head, 'proto'),
      dport: dport === undefined ? undefined : Number(dport),
      dir: word(dirLine, 'dir') ?? '',
      mark: mark ? { value: Number(mark[1]), mask: Number(mark[2]) } : undefined,
      tmpls,
    };
  });
}

/**
 * Tries to add `state` in a throwaway network namespace (`unshare --net`: the namespace dies with
 * the process, so nothing is left anywhere) and returns the kernel's refusal, or undefined when it
 * was accepted. Needs CAP_SYS_ADMIN (unshare) and iproute2.
 */
export async function xfrmStateProbe(state: XfrmState): Promise<string | undefined> {
  let r: { code: number; err: string };
  try {
    r = await run('unshare', ['--net', 'ip', '-batch', '-'], xfrmStateAdd(state).line + '\n');
  } catch (e) {
    return `cannot probe: running unshare failed (${(e as NodeJS.ErrnoException).code ?? 'EIO'})`;
  }
  return r.code === 0 ? undefined : errorText(r.err, r.code);
}
