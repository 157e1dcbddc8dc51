import { pino, type Logger } from 'pino';

/**
 * The one logger. Library code logs through `log` (or a child of it); never console.log.
 * Level from TNET_LOG_LEVEL (default `info` for the daemon, `warn` elsewhere: set by the face).
 * Logs go to stderr so a command's stdout stays machine-readable.
 */
export const log: Logger = pino(
  { name: 'tnet', level: process.env.TNET_LOG_LEVEL ?? 'warn' },
  pino.destination({ fd: 2, sync: true }),
);

export type { Logger };
