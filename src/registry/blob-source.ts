// Bridges the addon's cache misses to the registry: a BlobSource knows, per digest, where the blob
// lives (host, repository) and reads ranges with one RangeReader per blob; it counts fetches for
// metrics and tests. BackgroundDownload fills a remote file's cache in the background (overlaybd's
// `download` settings: enable, delay, maxMBps).
import type { RangeReader } from './range-reader';
import type { RegistryClient } from './client';

export interface BlobLocation {
  host: string;
  repo: string;
  digest: string;
  size?: number;
}

export class BlobSource {
  private readonly readers = new Map<string, RangeReader>();
  fetches = 0;
  fetchedBytes = 0;

  constructor(private readonly client: RegistryClient, private readonly opts: { readDeadlineMs?: number } = {}) {}

  /** Registers where a digest can be fetched from (the first registration wins). */
  add(loc: BlobLocation): void {
    if (this.readers.has(loc.digest)) return;
    this.readers.set(loc.digest, this.client.blobReader(loc.host, loc.repo, loc.digest, { size: loc.size, readDeadlineMs: this.opts.readDeadlineMs }));
  }

  /** The fetch function for createRemoteFetcher(). */
  readonly fetch = async (digest: string, offset: number, length: number): Promise<Uint8Array> => {
    const r = this.readers.get(digest);
    if (!r) throw new Error(`${digest}: no registry location known for this blob`);
    this.fetches++;
    const data = await r.read(offset, length);
    this.fetchedBytes += data.length;
    return data;
  };
}

export interface DownloadSettings {
  enable: boolean;
  delay?: number;      // seconds before starting (overlaybd default 300)
  delayExtra?: number; // random extra seconds (default 30)
  maxMBps?: number;    // rate limit (default 100)
  blockSize?: number;  // bytes per step (default 4 MiB)
}

/** Reads a file front to back at ≤ maxMBps so that every unit lands in the cache. */
export class BackgroundDownload {
  private stopped = false;
  private timer?: NodeJS.Timeout;
  done: Promise<void>;
  private resolveDone!: () => void;
  bytes = 0;
  error?: Error;

  constructor(private readonly file: { size: number; read(off: number, len: number): Promise<Buffer> }, private readonly s: DownloadSettings) {
    this.done = new Promise((r) => (this.resolveDone = r));
    if (!s.enable) {
      this.resolveDone();
      return;
    }
    const delayMs = ((s.delay ?? 300) + Math.random() * (s.delayExtra ?? 30)) * 1000;
    this.timer = setTimeout(() => void this.run(), delayMs);
    this.timer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.resolveDone();
  }

  private async run(): Promise<void> {
    const step = this.s.blockSize ?? 4 << 20;
    const bytesPerMs = ((this.s.maxMBps ?? 100) * 1024 * 1024) / 1000;
    const start = Date.now();
    try {
      for (let off = 0; off < this.file.size && !this.stopped; off += step) {
        await this.file.read(off, Math.min(step, this.file.size - off));
        this.bytes += Math.min(step, this.file.size - off);
        const ahead = this.bytes / bytesPerMs - (Date.now() - start);
        if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
      }
    } catch (err) {
      this.error = err as Error;
    }
    this.resolveDone();
  }
}
