// Remote lowers (config.v1.json `repoBlobUrl` + `digest`): each becomes a RemoteFile of the addon,
// read through the host's block cache; cache misses are fetched by the registry client on the JS
// thread. Shared by every device of this deviced: one cache, one client, one fetcher.
import fs from 'node:fs';
import type { ObdConfig } from '../config';
import type { TraceWriter } from '../trace/trace';
import * as addon from '../addon';
import { BackgroundDownload, type DownloadSettings } from '../registry/background-download';
import { BlobSource } from '../registry/blob-source';
import { RegistryClient } from '../registry/client';
import { registryOptionsFromConfig } from '../registry/from-config';
import type { Logger } from '../log';
import { DeviceError } from './errors';
import { FetchCounters, type FetchTotals } from './fetch-counters';

export interface RecordingSession {
  cache: addon.BlockCache;
  fetcher: addon.RemoteFetcher;
  writer: TraceWriter;
  close(): void;
}

/** The `download` section of a config.v1.json (overlaybd's DownloadConfig); unknown or mistyped keys are ignored as overlaybd does. */
export function downloadSettings(raw: Record<string, unknown> | undefined): DownloadSettings | undefined {
  if (!raw || typeof raw.enable !== 'boolean') return undefined;
  const num = (k: string) => (typeof raw[k] === 'number' && Number.isFinite(raw[k]) && (raw[k] as number) >= 0 ? (raw[k] as number) : undefined);
  const out: DownloadSettings = { enable: raw.enable };
  for (const k of ['delay', 'delayExtra', 'maxMBps', 'blockSize', 'tryCnt'] as const) if (num(k) !== undefined) out[k] = num(k);
  return out;
}

const BLOB_URL = /^(https?):\/\/([^/]+)\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;

export class RemoteLowers {
  private cache?: addon.BlockCache;
  private fetcher?: addon.RemoteFetcher;
  private readonly clients = new Map<string, { client: RegistryClient; source: BlobSource }>(); // by origin
  private readonly byDigest = new Map<string, BlobSource>();
  private readonly downloads = new Map<string, BackgroundDownload>(); // by digest, one per deviced
  readonly counters = new FetchCounters();
  private readonly sizes = new Map<string, number>();

  constructor(
    private readonly cfg: ObdConfig,
    private readonly log: Logger,
    private readonly onFetchError: (err: unknown) => void = () => undefined,
  ) {}

  /**
   * Trace recording for one device: a private, empty block cache without read-ahead, so every unit
   * the workload touches is fetched exactly once, in first-touch order, and logged to `writer`.
   */
  openRecording(dir: string, writer: TraceWriter): RecordingSession {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const c = this.cfg.cacheConfig;
    const cache = addon.openBlockCache({ dir, capacityBytes: 2 ** 40, unitSize: c.refillSize, sync: false });
    const fetcher = addon.createRemoteFetcher((digest, offset, length, kind) => {
      writer.add({ digest, offset, length });
      return this.fetchBlob(digest, offset, length, kind);
    });
    return {
      cache,
      fetcher,
      writer,
      close: () => {
        fetcher.close();
        writer.close();
        fs.rmSync(dir, { recursive: true, force: true });
      },
    };
  }

  private fetchBlob(digest: string, offset: number, length: number, kind: addon.FetchKind): Promise<Uint8Array> {
    const source = this.byDigest.get(digest);
    if (!source) return Promise.reject(new Error(`${digest}: no registry location known for this blob`));
    return this.counters.time(kind, () => source.fetch(digest, offset, length, kind)).catch((err: unknown) => {
      this.onFetchError(err);
      throw err;
    });
  }

  /** Every byte received from registries since deviced started, and what the fetches delivered. */
  totals(): FetchTotals {
    const received = [...this.clients.values()].reduce((n, c) => n + c.source.receivedBytes, 0);
    return this.counters.totals(received, this.fetcher?.stats().linkBytesPerSec ?? 0);
  }

  /** Background downloads in progress or finished, by digest. */
  downloadStates(): Array<{ digest: string; bytes: number; complete: boolean; error?: string }> {
    return [...this.downloads].map(([digest, d]) => ({ digest, bytes: d.bytes, complete: d.complete, error: d.error?.message }));
  }

  /** The RemoteFile for `url` (= repoBlobUrl + "/" + digest); with `recording`, through its private cache. */
  open(url: string, digest: string, size: number, recording?: RecordingSession, download?: DownloadSettings): addon.RemoteFile {
    const m = BLOB_URL.exec(url);
    if (!m) throw new DeviceError('InvalidArgument', `repoBlobUrl: ${url} is not of the form http(s)://host/v2/<repository>/blobs/sha256:<hex>`);
    const [, scheme, host, repo] = m;
    if (!size) throw new DeviceError('InvalidArgument', `lower ${digest}: "size" is required for a remote layer`);
    const source = this.sourceFor(scheme, host);
    source.add({ host, repo, digest, size });
    if (!this.byDigest.has(digest)) this.byDigest.set(digest, source);
    const c = this.cfg.cacheConfig;
    const readAheadUnits = Math.floor(c.readAheadSize / c.refillSize);
    if (recording) return addon.openRemoteFile({ digest, size, cache: recording.cache, fetcher: recording.fetcher, readAheadUnits: 0 });
    const file = addon.openRemoteFile({ digest, size, cache: this.openCache(), fetcher: this.openFetcher(), readAheadUnits });
    this.startDownload(digest, file, download ?? this.cfg.download);
    return file;
  }

  /** The `download` settings (config.json, or the image's config.v1.json): fill the whole blob in the background. */
  private startDownload(digest: string, file: addon.RemoteFile, s: DownloadSettings | undefined): void {
    if (!s?.enable || this.downloads.has(digest)) return;
    const d = new BackgroundDownload(file, { ...this.cfg.download, ...s });
    this.downloads.set(digest, d);
    void d.done.then(async () => {
      if (d.error) {
        this.log.log('warn', 'background download failed', { digest, bytes: d.bytes, err: d.error.message });
        this.downloads.delete(digest); // the next device that opens it starts over where the cache ends
        return;
      }
      if (!d.complete) return;
      await this.cache?.drain();
      const st = file.stats();
      this.log.log('info', 'background download done', { digest, bytes: d.bytes, ms: d.finishedAt! - d.startedAt!, cached: `${st.presentUnits}/${st.units} units` });
    });
  }

  /** Memory for inflated spans per TurboOCI gzip layer (gzipCacheConfig). */
  get gzipCacheBytes(): number {
    const g = this.cfg.gzipCacheConfig;
    return g.enable ? g.memoryMB * 2 ** 20 : 8 << 20;
  }

  /** Size of a blob the config does not state (a TurboOCI target): one range request, remembered. */
  async blobSize(url: string, digest: string): Promise<number> {
    const known = this.sizes.get(digest);
    if (known) return known;
    const m = BLOB_URL.exec(url);
    if (!m) throw new DeviceError('InvalidArgument', `repoBlobUrl: ${url} is not of the form http(s)://host/v2/<repository>/blobs/sha256:<hex>`);
    const [, scheme, host, repo] = m;
    this.sourceFor(scheme, host);
    const client = this.clients.get(`${scheme}://${host}`)!.client;
    const size = await client.blobReader(host, repo, digest).size();
    this.sizes.set(digest, size);
    return size;
  }

  private openCache(): addon.BlockCache {
    if (!this.cache) {
      const c = this.cfg.cacheConfig;
      this.cache = addon.openBlockCache({ dir: c.cacheDir, capacityBytes: Math.floor(c.cacheSizeGB * 2 ** 30), unitSize: c.refillSize });
      this.log.log('info', 'block cache opened', { dir: c.cacheDir, sizeGB: c.cacheSizeGB });
    }
    return this.cache;
  }

  private openFetcher(): addon.RemoteFetcher {
    this.fetcher ??= addon.createRemoteFetcher((digest, offset, length, kind) => this.fetchBlob(digest, offset, length, kind));
    return this.fetcher;
  }

  /** One client per origin: http:// in repoBlobUrl means plain http for that host (ACI's insecure mirrors). */
  private sourceFor(scheme: string, host: string): BlobSource {
    const origin = `${scheme}://${host}`;
    let c = this.clients.get(origin);
    if (!c) {
      const client = new RegistryClient(
        registryOptionsFromConfig(this.cfg, { plainHttpHosts: scheme === 'http' ? [host] : [], loopbackPlainHttp: scheme === 'http' }),
      );
      c = { client, source: new BlobSource(client) };
      this.clients.set(origin, c);
    }
    return c.source;
  }

  async close(): Promise<void> {
    for (const d of this.downloads.values()) d.stop();
    this.fetcher?.close();
    await Promise.all([...this.clients.values()].map((c) => c.client.close()));
  }
}
