/**
 * Progress of long lab work: a counter with a bar on a terminal (rewritten in place on stderr),
 * nothing otherwise (a log or a CI job wants the result, not 1000 lines of counting).
 */
export interface Progress {
  update(p: { done: number; total: number; what: string }): void;
  /** Clears the line. */
  done(): void;
}

const WIDTH = 24;

export function progress(label: string, stream: NodeJS.WriteStream = process.stderr): Progress {
  if (!stream.isTTY) return { update() {}, done() {} };
  let shown = false;
  return {
    update({ done, total, what }) {
      const frac = total > 0 ? Math.min(1, done / total) : 1;
      const fill = Math.round(frac * WIDTH);
      const line = `${label} [${'#'.repeat(fill)}${'.'.repeat(WIDTH - fill)}] ${done}/${total} ${what}`;
      stream.write(`\r\x1b[2K${line.slice(0, (stream.columns || 80) - 1)}`);
      shown = true;
    },
    done() {
      if (shown) stream.write('\r\x1b[2K');
    },
  };
}
