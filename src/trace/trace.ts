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
import path from 'node:path';
import readline from 'node:readline';

export const TRACE_HEADER = '# obd-trace v1';
/** A trace file larger than this is refused (replay) or no longer appended to (record). */
export const MAX_TRACE_BYTES = 16 << 20;
/** One range of a trace is at most this long. */
export const MAX_RANGE_BYTES = 64 << 20;
const { O_NOFOLLOW, O_NONBLOCK, O_RDONLY, O_WRONLY, O_APPEND } = fs.constants;

/**
 * Checks a trace path from a label or a device config: absolute, inside `dir`, an existing regular
 * file reached without symlinks, not larger than MAX_TRACE_BYTES. Returns the normalised path.
 */
export function checkTraceFile(file: string, dir: string): string {
  if (!path.isAbsolute(file)) throw new Error('must be an absolute path');
  const p = path.normalize(file);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(p);
  } catch {
    throw new Error(`must name an existing file in ${dir} (empty: record a trace, else: prefetch it)`);
  }
  if (!st.isFile()) throw new Error('must be a regular file (not a symlink, FIFO or directory)');
  let real: string;
  let realDir: string;
  try {
    real = fs.realpathSync(p);
    realDir = fs.realpathSync(dir);
  } catch (err) {
    throw new Error(`the trace directory ${dir} is not usable: ${(err as Error).message}`);
  }
  // Lexically inside the directory, and no symlink between the directory and the file.
  const rel = path.relative(path.resolve(dir), p);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel) || real !== path.join(realDir, rel))
    throw new Error(`must be a file in the trace directory ${dir} (config traceDir), reached without symlinks`);
  if (st.size > MAX_TRACE_BYTES) throw new Error(`is ${st.size} bytes; traces are at most ${MAX_TRACE_BYTES}`);
  return p;
}

/** Opens a trace file without following a symlink or blocking; only a regular file is accepted. */
function openTrace(file: string, flags: number): number {
  const fd = fs.openSync(file, flags | O_NOFOLLOW | O_NONBLOCK);
  if (!fs.fstatSync(fd).isFile()) {
    fs.closeSync(fd);
    throw new Error(`${file}: not a regular file`);
  }
  return fd;
}

/** Reads a trace file line by line (never whole), at most MAX_TRACE_BYTES. */
export async function readTraceFile(file: string): Promise<TraceRange[]> {
  const fd = openTrace(file, O_RDONLY);
  const size = fs.fstatSync(fd).size;
  if (size > MAX_TRACE_BYTES) {
    fs.closeSync(fd);
    throw new Error(`${file}: ${size} bytes; traces are at most ${MAX_TRACE_BYTES}`);
  }
  const stream = fs.createReadStream('', { fd, end: MAX_TRACE_BYTES - 1 });
  const out: TraceRange[] = [];
  let n = 0;
  try {
    for await (const line of readline.createInterface({ input: stream, crlfDelay: Infinity })) {
      n++;
      const r = parseTraceLine(line, file, n);
      if (r) out.push(r);
    }
  } finally {
    stream.destroy();
  }
  return out;
}

export interface TraceRange {
  digest: string;
  offset: number;
  length: number;
}

const LINE = /^(sha256:[0-9a-f]{64}) (\d+) (\d+)$/;

export function parseTrace(text: string, source = 'trace'): TraceRange[] {
  const out: TraceRange[] = [];
  text.split('\n').forEach((raw, i) => {
    const r = parseTraceLine(raw, source, i + 1);
    if (r) out.push(r);
  });
  return out;
}

function parseTraceLine(raw: string, source: string, lineNo: number): TraceRange | undefined {
  const line = raw.trim();
  if (line === '' || line.startsWith('#')) return undefined;
  const m = LINE.exec(line);
  if (!m) throw new Error(`${source}:${lineNo}: expected "sha256:<hex> <offset> <length>", got ${JSON.stringify(line.slice(0, 80))}`);
  const offset = Number(m[2]);
  const length = Number(m[3]);
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || length <= 0 || length > MAX_RANGE_BYTES)
    throw new Error(`${source}:${lineNo}: bad range ${m[2]}+${m[3]} (lengths are 1..${MAX_RANGE_BYTES})`);
  return { digest: m[1], offset, length };
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

  private written = 0;

  constructor(readonly file: string) {
    this.fd = openTrace(file, O_WRONLY | O_APPEND);
    try {
      this.written = fs.fstatSync(this.fd).size;
      if (this.written === 0) this.write(TRACE_HEADER + '\n');
    } catch (err) {
      fs.closeSync(this.fd);
      throw err;
    }
  }

  private write(line: string): void {
    fs.writeSync(this.fd, line);
    this.written += Buffer.byteLength(line);
  }

  add(r: TraceRange): void {
    if (this.fd < 0) return;
    const key = `${r.digest}@${r.offset}`;
    if (this.seen.has(key)) return;
    const line = formatRange(r);
    if (this.written + line.length > MAX_TRACE_BYTES) return; // full: the rest of the workload is not traced
    this.seen.add(key);
    this.write(line);
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

  error?: Error;

  constructor(
    ranges: TraceRange[] | Promise<TraceRange[]>,
    files: Map<string, PrefetchTarget>,
    concurrency = 8,
  ) {
    this.done = Promise.resolve(ranges).then(
      (all) => {
        const todo = mergeAdjacent(all.filter((r) => files.has(r.digest)), MAX_MERGED);
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
        return Promise.all(Array.from({ length: Math.max(1, concurrency) }, worker)).then(() => {
          this.finishedAt = Date.now();
        });
      },
      (err: Error) => {
        this.error = err;
        this.finishedAt = Date.now();
      },
    );
  }

  stop(): void {
    this.stopped = true;
  }
}
