// Remote lowers (config.v1.json `repoBlobUrl` + `digest`): each becomes a RemoteFile of the addon,
// read through the host's block cache; cache misses are fetched by the registry client on the JS
// thread. Shared by every device of this deviced: one cache, one client, one fetcher.
import fs from 'node:fs';
import type { ObdConfig } from '../config';
import type { TraceWriter } from '../trace/trace';
import * as addon from '../addon';
import { BlobSource } from '../registry/blob-source';
import { RegistryClient } from '../registry/client';
import { registryOptionsFromConfig } from '../registry/from-config';
import type { Logger } from '../log';
import { DeviceError } from './errors';

export interface RecordingSession {
  cache: addon.BlockCache;
  fetcher: addon.RemoteFetcher;
  writer: TraceWriter;
  close(): void;
}

const BLOB_URL = /^(https?):\/\/([^/]+)\/v2\/(.+)\/blobs\/(sha256:[0-9a-f]{64})$/;

export class RemoteLowers {
  private cache?: addon.BlockCache;
  private fetcher?: addon.RemoteFetcher;
  private readonly clients = new Map<string, { client: RegistryClient; source: BlobSource }>(); // by origin
  private readonly byDigest = new Map<string, BlobSource>();

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
    const fetcher = addon.createRemoteFetcher((digest, offset, length) => {
      writer.add({ digest, offset, length });
      return this.fetchBlob(digest, offset, length);
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

  private fetchBlob(digest: string, offset: number, length: number): Promise<Uint8Array> {
    const source = this.byDigest.get(digest);
    if (!source) return Promise.reject(new Error(`${digest}: no registry location known for this blob`));
    return source.fetch(digest, offset, length).catch((err: unknown) => {
      this.onFetchError(err);
      throw err;
    });
  }

  /** The RemoteFile for `url` (= repoBlobUrl + "/" + digest); with `recording`, through its private cache. */
  open(url: string, digest: string, size: number, recording?: RecordingSession): addon.RemoteFile {
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
    return addon.openRemoteFile({ digest, size, cache: this.openCache(), fetcher: this.openFetcher(), readAheadUnits });
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
    this.fetcher ??= addon.createRemoteFetcher((digest, offset, length) => this.fetchBlob(digest, offset, length));
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
    this.fetcher?.close();
    await Promise.all([...this.clients.values()].map((c) => c.client.close()));
  }
}
