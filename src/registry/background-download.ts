// Background download (overlaybd's `download` settings: enable, delay, delayExtra, maxMBps, tryCnt,
// blockSize): fills a remote file's cache front to back after a delay, at most maxMBps, with
// background-priority fetches (they start only while nothing else is being fetched). It asks the
// file for the next unit that is neither cached nor being fetched, so a download that was stopped
// (deviced restart) resumes where the cache ends; the cache checks the blob's sha256 once every unit
// is present, after which the blob is served locally.
export interface DownloadSettings {
  enable: boolean;
  delay?: number; // seconds before starting (overlaybd default 300)
  delayExtra?: number; // random extra seconds (default 30)
  maxMBps?: number; // rate limit (default 100)
  blockSize?: number; // bytes per step (default 4 MiB)
  tryCnt?: number; // attempts per step before giving up (default 5)
}

export interface DownloadTarget {
  size: number;
  read(off: number, len: number, kind?: 'background'): Promise<Buffer>;
  nextMissing?(off: number): number;
}

export class BackgroundDownload {
  private stopped = false;
  private timer?: NodeJS.Timeout;
  done: Promise<void>;
  private resolveDone!: () => void;
  /** bytes asked for (units already cached are not fetched again) */
  bytes = 0;
  startedAt?: number;
  finishedAt?: number;
  error?: Error;

  constructor(private readonly file: DownloadTarget, private readonly s: DownloadSettings) {
    this.done = new Promise((r) => (this.resolveDone = r));
    if (!s.enable) {
      this.resolveDone();
      return;
    }
    const delayMs = ((s.delay ?? 300) + Math.random() * (s.delayExtra ?? 30)) * 1000;
    this.timer = setTimeout(() => void this.run(), delayMs);
    this.timer.unref();
  }

  get complete(): boolean {
    return this.finishedAt !== undefined && !this.error && !this.stopped;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.resolveDone();
  }

  private next(off: number): number {
    return this.file.nextMissing ? this.file.nextMissing(off) : off;
  }

  private async run(): Promise<void> {
    const step = this.s.blockSize ?? 4 << 20;
    const bytesPerMs = this.s.maxMBps ? (this.s.maxMBps * 1024 * 1024) / 1000 : Infinity;
    const tries = Math.max(1, this.s.tryCnt ?? 5);
    this.startedAt = Date.now();
    try {
      for (let off = this.next(0); off < this.file.size && !this.stopped; off = this.next(off)) {
        const len = Math.min(step, this.file.size - off);
        for (let attempt = 1; ; attempt++) {
          try {
            await this.file.read(off, len, 'background');
            break;
          } catch (err) {
            if (attempt >= tries || this.stopped) throw err;
            await new Promise((r) => setTimeout(r, 200 * attempt));
          }
        }
        this.bytes += len;
        off += len;
        const ahead = this.bytes / bytesPerMs - (Date.now() - this.startedAt);
        if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
      }
    } catch (err) {
      this.error = err as Error;
    }
    this.finishedAt = Date.now();
    this.resolveDone();
  }
}
