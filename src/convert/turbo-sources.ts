// The source layers of `obdconv --turbo-oci` as they arrive: downloaded in layer order, a few at a
// time (the blob the next build needs comes first instead of sharing the link with every later
// one), and each scanned while it downloads — a gzip blob inflated once, on the libuv pool, into
// the uncompressed tar the build applies (skipping file data) and its gzip index. So the inflate,
// the costly part, runs while the previous layer is built, not on the chain of builds.
import fs from 'node:fs';
import path from 'node:path';
import { turboScanLayer, type GzipIndexStats } from '../addon';
import type { Descriptor } from '../registry';
import { partialBlobPath, type ImageStore } from './store';
import { TurboMembers } from './turbo-format';

export interface ScannedLayer {
  blob: string;          // the source blob, digest verified (the meta layer's target)
  tar: string;           // the uncompressed tar to apply (the blob itself for a plain tar)
  gzipIndex?: string;    // gzip.meta, for a gzip blob
  indexStats?: GzipIndexStats;
  downloadMs: number;
  scanMs: number;
  scanWaitedMs: number;  // of scanMs: waiting for the download to write more
}

export interface SourceEvents {
  downloadStart(layer: number, total: number): void;
  downloadDone(layer: number, bytes: number, ms: number): void;
}

/**
 * Starts every layer's download (at most `inFlight` at once, in layer order) and its scan; the
 * promise of layer i settles once its blob is verified and scanned into `dirs[i]`.
 */
export function startLayerSources(src: ImageStore, layers: Descriptor[], dirs: string[], inFlight: number,
  events: SourceEvents, signal?: AbortSignal): Promise<ScannedLayer>[] {
  const downloads: Promise<number>[] = [];
  return layers.map((l, i) => {
    const blob = path.join(dirs[i], 'source');
    const turn = i >= inFlight ? downloads[i - inFlight].then(() => undefined, () => undefined) : Promise.resolve();
    let markStarted: () => void = () => undefined;
    const started = new Promise<void>((resolve) => (markStarted = resolve));
    const download = turn.then(async () => {
      signal?.throwIfAborted();
      const ts = Date.now();
      events.downloadStart(i, l.size);
      await src.fetchBlob(l, blob, () => markStarted(), signal);
      events.downloadDone(i, l.size, Date.now() - ts);
      return Date.now() - ts;
    });
    downloads.push(download);
    // The scan reads the partial file as it grows; a failed download removes that file, which ends
    // the scan. With a one-thread pool a waiting scan would starve the download: it waits its end.
    const follow = (Number(process.env.UV_THREADPOOL_SIZE) || 4) > 1;
    const scan = (follow ? Promise.race([started, download]) : download).then(async () => {
      const ts = Date.now();
      const gzipIndex = path.join(dirs[i], TurboMembers.gzipIndex);
      const tar = path.join(dirs[i], 'layer.tar');
      const r = await turboScanLayer({ path: blob, ...(follow ? { partialPath: partialBlobPath(blob), size: l.size } : {}),
        gzipIndexOut: gzipIndex, tarOut: tar });
      return { r, ms: Date.now() - ts, gzipIndex, tar };
    });
    const both = Promise.all([download, scan]).then(([downloadMs, s]): ScannedLayer => ({
      blob, tar: s.r.gzip ? s.tar : blob, downloadMs, scanMs: s.ms, scanWaitedMs: s.r.waitedMs,
      ...(s.r.gzip ? { gzipIndex: s.gzipIndex, indexStats: s.r.gzipIndex } : {}),
    }), async (err) => {
      // the download's own error says more than the scan it cut short
      await download;
      throw err;
    });
    both.catch(() => undefined); // observed by the build loop
    return both;
  });
}

/** The uncompressed tar of a built layer is no longer needed (later builds read the blob through its index). */
export function dropScannedTar(s: ScannedLayer): void {
  if (s.tar !== s.blob) fs.rmSync(s.tar, { force: true });
}
