// I/O traces of remote blobs, for prefetch (the label-driven mode of accelerated-container-image:
// `containerd.io/snapshot/overlaybd/record-trace-path` names a file; empty ⇒ record, non-empty ⇒
// replay). Format, text, one range per line in the order the workload first touched it:
//
//   # obd-trace v1
//   sha256:<64 hex> <offset> <length>
//
// Offsets/lengths are byte ranges of the layer *blob* (as stored in the registry, i.e. compressed
// ZFile bytes), aligned to the recorder's cache unit. Blank lines and lines starting with '#' are
// ignored, so traces can be concatenated or annotated.
import fs from 'node:fs';

export const TRACE_HEADER = '# obd-trace v1';

export interface TraceRange {
  digest: string;
  offset: number;
  length: number;
}

const LINE = /^(sha256:[0-9a-f]{64}) (\d+) (\d+)$/;

export function parseTrace(text: string, source = 'trace'): TraceRange[] {
  const out: TraceRange[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const m = LINE.exec(line);
    if (!m) throw new Error(`${source}:${i + 1}: expected "sha256:<hex> <offset> <length>", got ${JSON.stringify(line.slice(0, 80))}`);
    const offset = Number(m[2]);
    const length = Number(m[3]);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length <= 0)
      throw new Error(`${source}:${i + 1}: bad range ${m[2]}+${m[3]}`);
    out.push({ digest: m[1], offset, length });
  });
  return out;
}

export function formatRange(r: TraceRange): string {
  return `${r.digest} ${r.offset} ${r.length}\n`;
}

/** record: the file is there and empty; replay: it has content; none: no usable file. */
export function traceMode(file: string): 'record' | 'replay' | 'none' {
  try {
    return fs.statSync(file).size === 0 ? 'record' : 'replay';
  } catch {
    return 'none';
  }
}

/** Appends ranges to a trace file as they happen (each line is written at once: a crash keeps what was recorded). */
export class TraceWriter {
  private fd: number;
  private readonly seen = new Set<string>();
  ranges = 0;
  bytes = 0;

  constructor(readonly file: string) {
    this.fd = fs.openSync(file, 'a');
    if (fs.fstatSync(this.fd).size === 0) fs.writeSync(this.fd, TRACE_HEADER + '\n');
  }

  add(r: TraceRange): void {
    if (this.fd < 0) return;
    const key = `${r.digest}@${r.offset}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    fs.writeSync(this.fd, formatRange(r));
    this.ranges++;
    this.bytes += r.length;
  }

  close(): void {
    if (this.fd >= 0) fs.closeSync(this.fd);
    this.fd = -1;
  }
}

/**
 * A read of several consecutive units is one registry GET instead of many. Capped at 1 MiB: with 4 MiB
 * reads from JS some units of the range were found uncached afterwards (addon RemoteFile; to look into).
 */
const MAX_MERGED = 1 << 20;

/** Joins consecutive ranges of one blob that touch each other (trace order is kept). */
export function mergeAdjacent(ranges: TraceRange[], maxLength: number): TraceRange[] {
  const out: TraceRange[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last && last.digest === r.digest && last.offset + last.length === r.offset && last.length + r.length <= maxLength) last.length += r.length;
    else out.push({ ...r });
  }
  return out;
}

export interface PrefetchTarget {
  read(offset: number, length: number, kind?: 'prefetch'): Promise<unknown>;
}

/**
 * Reads the ranges of a trace through the remote files (so they land in the block cache), in trace
 * order with a few reads in flight; stops early on stop(). Errors of single ranges are counted, not fatal.
 */
export class TracePrefetch {
  private stopped = false;
  readonly done: Promise<void>;
  bytes = 0;
  ranges = 0;
  errors = 0;
  readonly startedAt = Date.now();
  finishedAt = 0;

  constructor(
    ranges: TraceRange[],
    files: Map<string, PrefetchTarget>,
    concurrency = 8,
  ) {
    const todo = mergeAdjacent(ranges.filter((r) => files.has(r.digest)), MAX_MERGED);
    let next = 0;
    const worker = async () => {
      while (!this.stopped && next < todo.length) {
        const r = todo[next++];
        try {
          await files.get(r.digest)!.read(r.offset, r.length, 'prefetch');
          this.bytes += r.length;
          this.ranges++;
        } catch {
          this.errors++;
        }
      }
    };
    this.done = Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker)).then(() => {
      this.finishedAt = Date.now();
    });
  }

  stop(): void {
    this.stopped = true;
  }
}
