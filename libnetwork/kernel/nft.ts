import koffi from 'koffi';
import { KernelError } from './error.js';
import { type Netns, inNetns } from './netns.js';

/**
 * nftables through libnftables, in-process: one JSON document is one atomic transaction
 * (all of it applies, or none). No `nft` process per change: 200 rules cost ~1 ms, not 700.
 * A context is bound to the namespace it was made in, like a netlink socket.
 */
export type NftCommand = Record<string, unknown>;

interface Lib {
  ctxNew(flags: number): unknown;
  setOutputFlags(ctx: unknown, flags: number): void;
  bufferOutput(ctx: unknown): number;
  bufferError(ctx: unknown): number;
  getOutput(ctx: unknown): string;
  getError(ctx: unknown): string;
  run(ctx: unknown, buf: string): number;
  ctxFree(ctx: unknown): void;
}

const NFT_CTX_OUTPUT_HANDLE = 1 << 3;
const NFT_CTX_OUTPUT_JSON = 1 << 4;

let lib: Lib | undefined;
function load(): Lib {
  if (lib) return lib;
  let so: koffi.IKoffiLib;
  try {
    so = koffi.load('libnftables.so.1');
  } catch (e) {
    throw new KernelError('load', 'libnftables.so.1', 'nftables is not installed (Debian: apt-get install nftables; scripts/setup.sh does it)', e);
  }
  lib = {
    ctxNew: so.func('void *nft_ctx_new(uint32_t flags)'),
    setOutputFlags: so.func('void nft_ctx_output_set_flags(void *ctx, unsigned int flags)'),
    bufferOutput: so.func('int nft_ctx_buffer_output(void *ctx)'),
    bufferError: so.func('int nft_ctx_buffer_error(void *ctx)'),
    getOutput: so.func('const char *nft_ctx_get_output_buffer(void *ctx)'),
    getError: so.func('const char *nft_ctx_get_error_buffer(void *ctx)'),
    run: so.func('int nft_run_cmd_from_buffer(void *ctx, const char *buf)'),
    ctxFree: so.func('void nft_ctx_free(void *ctx)'),
  } as Lib;
  return lib;
}

export class Nft {
  private readonly ctx: unknown;
  readonly ns: Netns | undefined;
  private constructor(ctx: unknown, ns: Netns | undefined) {
    this.ctx = ctx;
    this.ns = ns;
  }

  static open(ns?: Netns): Nft {
    const l = load();
    const ctx = inNetns(ns, () => {
      const c = l.ctxNew(0);
      l.setOutputFlags(c, NFT_CTX_OUTPUT_JSON | NFT_CTX_OUTPUT_HANDLE);
      l.bufferOutput(c);
      l.bufferError(c);
      return c;
    });
    return new Nft(ctx, ns);
  }

  /** Applies `cmds` as one transaction. `what` names the operation for the error message. */
  apply(what: string, cmds: readonly NftCommand[]): void {
    if (cmds.length === 0) return;
    this.run(what, JSON.stringify({ nftables: [{ metainfo: { json_schema_version: 1 } }, ...cmds] }));
  }

  /** Runs a listing command in nft's own syntax (e.g. "list table inet tnet") and returns its JSON. */
  list(command: string): { nftables: Record<string, unknown>[] } {
    const out = this.run(command, command);
    return JSON.parse(out || '{"nftables":[]}') as { nftables: Record<string, unknown>[] };
  }

  private run(what: string, buf: string): string {
    const l = load();
    // libnftables opened its netlink socket in `ns` at ctxNew; no switch is needed to run.
    const rc = l.run(this.ctx, buf);
    const out = l.getOutput(this.ctx) ?? '';
    if (rc !== 0) {
      // libnftables echoes the whole input before its "Error:" lines; keep only those.
      const lines = (l.getError(this.ctx) ?? '').split('\n').filter((x) => x.includes('Error'));
      const err = lines.map((x) => x.replace(/^.*?Error: /, '')).join('; ').slice(0, 500);
      throw new KernelError('nft', what + (this.ns ? ` in ${String(this.ns)}` : ''), err || `rc ${rc}`);
    }
    return out;
  }

  close(): void {
    load().ctxFree(this.ctx);
  }
}
