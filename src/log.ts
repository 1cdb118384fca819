// The process logger shared by the snapshotter, deviced and the CLI: one line per event on stderr,
// `time level msg key=value…`. Levels follow the config key `verbose` (logrus names, as
// accelerated-container-image).
export type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error';

const RANK: Record<string, number> = { trace: 0, debug: 1, info: 2, warn: 3, warning: 3, error: 4, fatal: 5, panic: 5 };

export interface Logger {
  log(level: Level, msg: string, fields?: Record<string, unknown>): void;
  enabled(level: Level): boolean;
}

function fmt(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return /^[^\s"=]*$/.test(s ?? '') ? String(s) : JSON.stringify(s);
}

export function stderrLogger(verbose = 'info', out: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = RANK[verbose] ?? RANK.info;
  return {
    enabled: (level) => RANK[level] >= min,
    log(level, msg, fields = {}) {
      if (RANK[level] < min) return;
      const kv = Object.entries(fields)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => ` ${k}=${fmt(v)}`)
        .join('');
      out(`${new Date().toISOString()} ${level} ${msg}${kv}\n`);
    },
  };
}

export const silentLogger: Logger = { log: () => undefined, enabled: () => false };
