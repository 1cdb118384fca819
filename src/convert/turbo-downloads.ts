// The source layer downloads of `obdconv --turbo-oci`: in layer order, a few at a time, so the blob
// the next build needs arrives first instead of sharing the link with every later one. A build may
// start as soon as its blob is being written: the apply child reads the partial file as it grows.
import path from 'node:path';
import type { Descriptor } from '../registry';
import { partialBlobPath, type ImageStore } from './store';

export interface LayerDownload {
  file: string;          // the blob, once complete (digest verified)
  partialFile: string;   // where it is written until then
  /** Resolves once the first bytes are written (or the download is done); rejects if it fails before. */
  started: Promise<void>;
  done: Promise<{ ms: number }>;
}

export interface DownloadEvents {
  start(layer: number, total: number): void;
  done(layer: number, bytes: number, ms: number): void;
}

/** Starts every download; at most `inFlight` run at once, started in layer order. */
export function startLayerDownloads(src: ImageStore, layers: Descriptor[], dir: string, inFlight: number,
  events: DownloadEvents, signal?: AbortSignal): LayerDownload[] {
  const out: LayerDownload[] = [];
  layers.forEach((l, i) => {
    const file = path.join(dir, `source-${i}`);
    const turn = i >= inFlight ? out[i - inFlight].done.then(() => undefined, () => undefined) : Promise.resolve();
    let markStarted: () => void = () => undefined;
    const started = new Promise<void>((resolve) => (markStarted = resolve));
    const done = turn.then(async () => {
      signal?.throwIfAborted();
      const ts = Date.now();
      events.start(i, l.size);
      await src.fetchBlob(l, file, () => markStarted(), signal);
      const ms = Date.now() - ts;
      events.done(i, l.size, ms);
      return { ms };
    });
    const dl: LayerDownload = { file, partialFile: partialBlobPath(file), started: Promise.race([started, done.then(() => undefined)]), done };
    dl.started.catch(() => undefined); // observed by the build loop; failures also surface through `done`
    done.catch(() => undefined);
    out.push(dl);
  });
  return out;
}
