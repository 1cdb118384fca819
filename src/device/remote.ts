// Remote lowers (config.v1.json `repoBlobUrl` + `digest`): each becomes a RemoteFile of the addon,
// read through a block cache; cache misses are fetched by the registry client on the JS thread, or
// (config nativeFetch) by the addon's libcurl client once the registry client resolved the blob.
//
// Images are untrusted: one image may name another's layer digest and point at a registry that
// serves other bytes (or another size). So a blob's cached ranges belong to the location that served
// them — (registry, repository, digest) — until the whole blob has been read and its sha256 matches
// the digest; only then does it become shared: a verified copy under <cacheDir>/verified/ that every
// image naming the digest reads as a local file, from any registry.
//   <cacheDir>/locations/                                 one block cache for every location
//   <cacheDir>/locations/<hash of registry/repository>/   its scope for one location
//   <cacheDir>/verified/sha256_<hex>                      whole blobs whose sha256 was checked
// cacheSizeGB bounds both: the verified copies take at most half of it (verified-copies.ts), the
// block cache gets what they leave; a location's entry of a blob that has a verified copy is removed
// when its last device goes.
// A blob's cache entry keeps its files open only while a device uses it (the cache's release()).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { type ObdConfig, traceDirOf } from '../config';
import type { TraceWriter } from '../trace/trace';
import * as addon from '../addon';
import { BackgroundDownload, type DownloadSettings } from '../registry/background-download';
import { BlobSource } from '../registry/blob-source';
import { RegistryClient } from '../registry/client';
import { RegistryDigestMismatchError } from '../registry/errors';
import { registryOptionsFromConfig } from '../registry/from-config';
import type { Logger } from '../log';
import { DeviceError } from './errors';
import { FETCH_KINDS, FETCH_SECONDS_BUCKETS, FetchCounters, type FetchTotals } from './fetch-counters';
import { VerifiedCopies } from './verified-copies';
import { fsyncPath as syncDir } from '../atomic-file';

export interface RecordingSession {
  cache: addon.BlockCache;
  fetcher: addon.RemoteFetcher;
  writer: TraceWriter;
  close(): void;
}

/** What a remote lower became: a RemoteFile, or the path of a verified local copy. */
export type OpenedLower = { kind: 'remote'; file: addon.RemoteFile; release(): void } | { kind: 'verified'; path: string; release(): void };

/**
 * Fetches the first and the last byte of every remote lower at once, before the stack is opened.
 * Opening a layer reads its headers at the start and its trailer, jump table and index at the end,
 * one layer after another, each read a round trip to the registry; with their refill units already
 * in flight together, a many-layer image opens in about two round trips instead of one per read
 * (all layers at once; a blob's trailer fetch waits for its first fetch to resolve where it lives).
 * These units are the ones the open reads anyway. Not awaited: the open's reads join these fetches,
 * and a failure is left to the open, which reports it (no second wait for a registry that is down).
 */
export function warmLayerEnds(files: addon.RemoteFile[]): void {
  for (const f of files) {
    if (f.size === 0) continue;
    for (const off of new Set([0, f.size - 1])) f.read(off, 1).catch(() => undefined);
  }
}

/**
 * The fetcher of a BlobSource. With `native`, the first fetch of a blob goes through JS (URL,
 * mirrors, auth, redirects, retries) and hands its route to the addon, which fetches the blob's
 * later ranges with libcurl straight into the block cache (fetches of the blob issued meanwhile wait
 * for that route); a native failure is counted as the source's failed attempt and the fetch comes
 * back to JS.
 */
export function sourceFetcher(source: BlobSource, native: boolean, fetch: addon.BlobFetchFn = source.fetch,
  onFetched?: (digest: string) => void): addon.RemoteFetcher {
  const fetcher: addon.RemoteFetcher = addon.createRemoteFetcher(async (digest, offset, length, kind) => {
    const data = await fetch(digest, offset, length, kind);
    onFetched?.(digest);
    // Handed over before the fetch answers: the fetches of this blob that waited for it go native.
    if (native) {
      const route = await source.route(digest).catch(() => undefined);
      if (route) fetcher.setRoute(digest, route);
    }
    return data;
  }, native ? { native: { durationBoundsSec: FETCH_SECONDS_BUCKETS, onFetched, onFailed: source.nativeFailed } } : {});
  return fetcher;
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
const PROMOTE_CHUNK = 4 << 20;

/** The cache scope and fetcher of one (registry, repository): ranges fetched there are seen only there. */
interface Location {
  key: string;
  scope: string; // its directory under <cacheDir>/locations
  source: BlobSource;
  cache: addon.BlockCache;
  fetcher: addon.RemoteFetcher;
  /** Open remote files per digest, with how many devices use each. */
  files: Map<string, { file: addon.RemoteFile; size: number; users: number }>;
  users: number;
}

export class RemoteLowers {
  private readonly clients = new Map<string, RegistryClient>(); // by origin
  private readonly locations = new Map<string, Location>();
  private blockCache?: addon.BlockCache; // opened with the first location
  /** Reads and cache hits of remote files that are gone (their devices detached). */
  private readonly retiredReads = { reads: 0, hits: 0 };
  private readonly promoting = new Map<string, Promise<void>>();
  private readonly promoteTimers = new Map<string, NodeJS.Timeout>();
  /** Background downloads (overlaybd's `download`), by location and digest. */
  private readonly downloads = new Map<string, { digest: string; d: BackgroundDownload }>();
  /** Every blob source ever made (bytes received count for the deviced-wide totals). */
  private readonly sources = new Set<BlobSource>();
  /** Every location fetcher ever made: what their native clients fetched counts for the totals. */
  private readonly fetchers = new Set<addon.RemoteFetcher>();
  /** Fetch times and bytes per kind (demand, read-ahead, prefetch, download). */
  readonly counters = new FetchCounters();
  private closed = false;
  /** Sizes of blobs the config does not state (TurboOCI targets), by blob URL. */
  private readonly sizes = new Map<string, number>();

  constructor(
    private readonly cfg: ObdConfig,
    private readonly log: Logger,
    /** Every failed registry request of a lazy read (retried or final), and blobs that do not match their digest. */
    private readonly onFetchError: (err: unknown) => void = () => undefined,
  ) {}

  /** Where trace files may be (config traceDir). */
  get traceDir(): string {
    return traceDirOf(this.cfg);
  }

  private get cacheDir(): string {
    return this.cfg.cacheConfig.cacheDir;
  }
  private verifiedPath(digest: string): string {
    return this.verified().pathOf(digest);
  }

  private verifiedCopies?: VerifiedCopies;
  private verified(): VerifiedCopies {
    this.verifiedCopies ??= new VerifiedCopies(path.join(this.cacheDir, 'verified'), Math.floor(this.cacheBytes / 2));
    return this.verifiedCopies;
  }

  /** cacheSizeGB in bytes: the bound of the block cache and the verified copies together. */
  get cacheCapacityBytes(): number {
    return this.cacheBytes;
  }

  private get cacheBytes(): number {
    return Math.floor(this.cfg.cacheConfig.cacheSizeGB * 2 ** 30);
  }

  /** After the verified copies changed: unused ones beyond their budget go, the block cache gets the rest. */
  private rebudget(): void {
    const v = this.verified();
    for (const digest of v.trim()) this.log.log('info', 'verified blob removed: beyond its share of cacheSizeGB, no device reads it', { digest });
    this.blockCache?.setCapacity(Math.max(0, this.cacheBytes - v.bytes));
  }

  /** Bytes of the verified whole-blob copies. */
  verifiedBytes(): number {
    return this.verified().bytes;
  }

  /** Locations with a device using them (tests: pruned when the last user goes). */
  get openLocations(): number {
    return this.locations.size;
  }

  /**
   * Trace recording for one device: a private, empty block cache without read-ahead, so every unit
   * the workload touches is fetched exactly once, in first-touch order, and logged to `writer`.
   * `openWriter` runs here so that nothing it opened outlives a failure.
   */
  openRecording(dir: string, openWriter: () => TraceWriter): RecordingSession {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    let writer: TraceWriter | undefined;
    let fetcher: addon.RemoteFetcher | undefined;
    try {
      writer = openWriter();
      const c = this.cfg.cacheConfig;
      const cache = addon.openBlockCache({ dir, capacityBytes: 2 ** 40, unitSize: c.refillSize, sync: false });
      const w = writer;
      const sources = new Map<string, BlobSource>();
      const session: RecordingSession & { sources: Map<string, BlobSource> } = {
        cache,
        fetcher: addon.createRemoteFetcher((digest, offset, length, kind) => {
          w.add({ digest, offset, length });
          const s = sources.get(digest);
          return s ? this.fetchFrom(s, digest, offset, length, kind) : Promise.reject(new Error(`${digest}: no registry location known for this blob`));
        }),
        writer: w,
        sources,
        close: () => {
          session.fetcher.close();
          w.close();
          fs.rmSync(dir, { recursive: true, force: true });
        },
      };
      fetcher = session.fetcher;
      return session;
    } catch (err) {
      fetcher?.close();
      writer?.close();
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** A fetch of `source`; failures are counted (metrics) and passed on. */
  private fetchFrom(source: BlobSource, digest: string, offset: number, length: number, kind: addon.FetchKind): Promise<Uint8Array> {
    return this.counters.time(kind, () => source.fetch(digest, offset, length, kind)).catch((err: unknown) => {
      this.onFetchError(err);
      throw err;
    });
  }

  /**
   * The lower for `url` (= repoBlobUrl + "/" + digest): a verified local copy if there is one, else a
   * RemoteFile through the cache of that registry and repository (with `recording`, its private
   * cache). release() when the device goes.
   */
  open(url: string, digest: string, size: number, recording?: RecordingSession, download?: DownloadSettings): OpenedLower {
    const m = BLOB_URL.exec(url);
    if (!m) throw new DeviceError('InvalidArgument', `repoBlobUrl: ${url} is not of the form http(s)://host/v2/<repository>/blobs/sha256:<hex>`);
    const [, scheme, host, repo] = m;
    if (!size) throw new DeviceError('InvalidArgument', `lower ${digest}: "size" is required for a remote layer`);
    const verified = recording ? undefined : this.verified().use(digest, size);
    if (verified) {
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        this.verified().release(digest);
        this.rebudget();
      };
      return { kind: 'verified', path: verified, release };
    }
    const origin = `${scheme}://${host}`;
    if (recording) {
      const source = new BlobSource(this.clientFor(scheme, host), { onRetriedError: this.onFetchError });
      this.sources.add(source);
      source.add({ host, repo, digest, size });
      (recording as RecordingSession & { sources: Map<string, BlobSource> }).sources.set(digest, source);
      const file = addon.openRemoteFile({ digest, size, cache: recording.cache, fetcher: recording.fetcher, readAheadUnits: 0 });
      return { kind: 'remote', file, release: () => undefined };
    }
    const loc = this.location(`${origin}/${repo}`);
    loc.source.add({ host, repo, digest, size });
    let entry = loc.files.get(digest);
    if (entry && entry.size !== size)
      throw new DeviceError('InvalidArgument', `lower ${digest}: size ${size} differs from ${entry.size} given for the same blob of ${loc.key}`);
    if (!entry) {
      const c = this.cfg.cacheConfig;
      const readAheadUnits = Math.floor(c.readAheadSize / c.refillSize);
      const file = addon.openRemoteFile({ digest, size, cache: loc.cache, cacheScope: loc.scope, fetcher: loc.fetcher, readAheadUnits });
      entry = { file, size, users: 0 };
      loc.files.set(digest, entry);
      this.startDownload(loc, digest, entry.file, download ?? this.cfg.download);
    }
    entry.users++;
    loc.users++;
    let released = false;
    return {
      kind: 'remote',
      file: entry.file,
      release: () => {
        if (released) return;
        released = true;
        this.releaseFile(loc, digest);
      },
    };
  }

  /** Every byte received from registries since deviced started, and what the fetches delivered. */
  totals(): FetchTotals {
    const received = [...this.sources].reduce((n, s) => n + s.receivedBytes, 0);
    const link = Math.max(0, ...[...this.locations.values()].map((l) => l.fetcher.stats().linkBytesPerSec));
    const t = this.counters.totals(received, link);
    for (const f of this.fetchers) {
      const n = f.stats().native;
      if (!n) continue;
      t.receivedBytes += n.receivedBytes;
      t.fetches += n.fetches;
      for (const k of FETCH_KINDS) t.bytes[k] += n.bytes[k];
      n.durationBuckets.forEach((c, i) => (t.seconds.buckets[i] += c));
      t.seconds.sum += n.secondsSum;
      t.seconds.count += n.fetches;
    }
    return t;
  }

  /** Background downloads in progress or finished. */
  downloadStates(): Array<{ digest: string; bytes: number; complete: boolean; error?: string }> {
    return [...this.downloads.values()].map(({ digest, d }) => ({ digest, bytes: d.bytes, complete: d.complete, error: d.error?.message }));
  }

  /** The `download` settings (config.json, or the image's config.v1.json): fill the whole blob in the background, then share it once verified. */
  private startDownload(loc: Location, digest: string, file: addon.RemoteFile, s: DownloadSettings | undefined): void {
    const key = `${loc.key} ${digest}`;
    if (!s?.enable || this.downloads.has(key)) return;
    const d = new BackgroundDownload(file, { ...this.cfg.download, ...s });
    this.downloads.set(key, { digest, d });
    void d.done.then(async () => {
      if (d.error) {
        this.log.log('warn', 'background download failed', { digest, location: loc.key, bytes: d.bytes, err: d.error.message });
        this.downloads.delete(key); // the next device that opens it starts over where the cache ends
        return;
      }
      if (!d.complete) return;
      await loc.cache.drain();
      const st = file.stats();
      this.log.log('info', 'background download done', { digest, location: loc.key, bytes: d.bytes, ms: d.finishedAt! - d.startedAt!, cached: `${st.presentUnits}/${st.units} units` });
      await this.promote(loc, digest);
    });
  }

  /** Memory for inflated spans per TurboOCI gzip layer (gzipCacheConfig). */
  get gzipCacheBytes(): number {
    const g = this.cfg.gzipCacheConfig;
    return g.enable ? g.memoryMB * 2 ** 20 : 8 << 20;
  }

  /** Size of a blob the config does not state (a TurboOCI target): one range request, remembered. */
  async blobSize(url: string, digest: string): Promise<number> {
    const known = this.sizes.get(url);
    if (known) return known;
    const m = BLOB_URL.exec(url);
    if (!m || m[4] !== digest) throw new DeviceError('InvalidArgument', `repoBlobUrl: ${url} is not of the form http(s)://host/v2/<repository>/blobs/${digest}`);
    const [, scheme, host, repo] = m;
    const size = await this.clientFor(scheme, host).blobReader(host, repo, digest).size();
    this.sizes.set(url, size);
    return size;
  }

  private releaseFile(loc: Location, digest: string): void {
    const e = loc.files.get(digest);
    if (e && --e.users === 0) {
      loc.files.delete(digest);
      const st = e.file.stats();
      this.retiredReads.reads += st.reads;
      this.retiredReads.hits += st.hits;
      this.stopDownload(loc, digest);
      loc.cache.release(digest, loc.scope); // no device reads it: its cache files are closed
      if (this.verified().has(digest)) loc.cache.drop(digest, loc.scope); // the verified copy serves it now
    }
    if (--loc.users > 0) return;
    // The last device of this location is gone: its fetcher, cache and per-blob files go with it.
    this.locations.delete(loc.key);
    loc.fetcher.close();
    this.log.log('debug', 'registry location released', { location: loc.key });
  }

  /** A blob's background download stops with its last device (the next device resumes from the cache). */
  private stopDownload(loc: Location, digest: string): void {
    const key = `${loc.key} ${digest}`;
    this.downloads.get(key)?.d.stop();
    this.downloads.delete(key);
  }

  /** The one block cache of every location: cacheSizeGB bounds all of them together (LRU across blobs). */
  private cache(): addon.BlockCache {
    if (this.blockCache) return this.blockCache;
    const c = this.cfg.cacheConfig;
    const dir = path.join(this.cacheDir, 'locations');
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const capacityBytes = Math.max(0, this.cacheBytes - this.verified().bytes);
    this.blockCache = addon.openBlockCache({ dir, capacityBytes, unitSize: c.refillSize });
    const st = this.blockCache.stats();
    this.log.log('info', 'block cache opened', { dir, sizeGB: c.cacheSizeGB, usedBytes: st.usedBytes, blobs: st.blobs });
    return this.blockCache;
  }

  /** Resolves once the block cache wrote what was fetched so far (tests). */
  async drainCache(): Promise<void> {
    await this.blockCache?.drain();
  }

  /** Reads of remote layers since deviced started and how many the cache answered (detached devices included). */
  cacheReads(): { reads: number; hits: number } {
    const out = { ...this.retiredReads };
    for (const loc of this.locations.values())
      for (const { file } of loc.files.values()) {
        const st = file.stats();
        out.reads += st.reads;
        out.hits += st.hits;
      }
    return out;
  }

  /** The block cache's figures (used, evicted, …), counting what earlier runs left on disk. */
  cacheStats(): addon.BlockCacheStats {
    return this.cache().stats();
  }

  private location(key: string): Location {
    let loc = this.locations.get(key);
    if (loc) return loc;
    const cache = this.cache();
    const scope = crypto.createHash('sha256').update(key).digest('hex').slice(0, 32);
    const [origin] = /^https?:\/\/[^/]+/.exec(key)!;
    const m = /^(https?):\/\/([^/]+)$/.exec(origin)!;
    const source = new BlobSource(this.clientFor(m[1], m[2]), { onRetriedError: this.onFetchError });
    this.sources.add(source);
    const l: Location = {
      key,
      scope,
      source,
      cache,
      files: new Map(),
      users: 0,
      fetcher: sourceFetcher(source, this.cfg.nativeFetch, (digest, offset, length, kind) => this.fetchFrom(source, digest, offset, length, kind),
        (digest) => this.schedulePromote(l, digest)),
    };
    this.fetchers.add(l.fetcher);
    this.locations.set(key, l);
    this.log.log('debug', 'registry location opened', { location: key, scope });
    return l;
  }

  /** After fetches settle, a blob whose every unit is cached is checked whole and shared. */
  private schedulePromote(loc: Location, digest: string): void {
    const key = `${loc.key} ${digest}`;
    clearTimeout(this.promoteTimers.get(key));
    const t = setTimeout(() => {
      this.promoteTimers.delete(key);
      void this.promote(loc, digest);
    }, 500);
    t.unref();
    this.promoteTimers.set(key, t);
  }

  /** Checks every open remote file and shares those that are complete and verify (tests, shutdown). */
  async promoteComplete(): Promise<number> {
    let n = 0;
    for (const loc of [...this.locations.values()]) for (const digest of [...loc.files.keys()]) if (await this.promote(loc, digest)) n++;
    return n;
  }

  private promote(loc: Location, digest: string): Promise<boolean> {
    const key = `${loc.key} ${digest}`;
    const running = this.promoting.get(key);
    if (running) return running.then(() => false);
    const p = this.promoteNow(loc, digest).catch((err: Error) => {
      this.log.log('warn', 'sharing a verified blob failed', { location: loc.key, digest, err: err.message });
      return false;
    });
    this.promoting.set(key, p.then(() => undefined));
    return p.finally(() => this.promoting.delete(key));
  }

  /** Reads the whole blob from this location's cache, checks its sha256 and publishes a local copy. */
  private async promoteNow(loc: Location, digest: string): Promise<boolean> {
    const e = loc.files.get(digest);
    if (!e || this.closed) return false;
    await loc.cache.drain(); // units fetched are written by the cache's own thread
    const st = e.file.stats();
    if (st.presentUnits < st.units) return false;
    const final = this.verifiedPath(digest);
    if (fileSize(final) === e.size || !this.verified().fits(e.size)) return false;
    fs.mkdirSync(path.dirname(final), { recursive: true, mode: 0o700 });
    const tmp = `${final}.tmp-${process.pid}-${crypto.randomBytes(4).toString('hex')}`;
    const fd = fs.openSync(tmp, 'wx', 0o600);
    const hash = crypto.createHash('sha256');
    try {
      for (let off = 0; off < e.size; off += PROMOTE_CHUNK) {
        const b = await e.file.read(off, Math.min(PROMOTE_CHUNK, e.size - off));
        hash.update(b);
        fs.writeSync(fd, b, 0, b.length, off);
      }
      const got = `sha256:${hash.digest('hex')}`;
      if (got !== digest) {
        this.log.log('warn', 'blob does not match its digest: not shared', { location: loc.key, digest, got });
        this.onFetchError(new RegistryDigestMismatchError(`${loc.key}: blob ${digest} has digest ${got}`, { registry: loc.key }));
        return false;
      }
      fs.fsyncSync(fd);
    } catch (err) {
      fs.closeSync(fd);
      fs.rmSync(tmp, { force: true });
      throw err;
    }
    fs.closeSync(fd);
    if (!fs.existsSync(tmp)) return false;
    fs.renameSync(tmp, final);
    syncDir(path.dirname(final));
    this.verified().add(digest, e.size);
    this.rebudget();
    this.log.log('info', 'verified blob shared', { digest, from: loc.key, size: e.size });
    return true;
  }

  /** One client per origin: http:// in repoBlobUrl means plain http for that host (ACI's insecure mirrors). */
  private clientFor(scheme: string, host: string): RegistryClient {
    const origin = `${scheme}://${host}`;
    let client = this.clients.get(origin);
    if (!client) {
      client = new RegistryClient(
        registryOptionsFromConfig(this.cfg, { plainHttpHosts: scheme === 'http' ? [host] : [], loopbackPlainHttp: scheme === 'http' }),
      );
      this.clients.set(origin, client);
    }
    return client;
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const { d } of this.downloads.values()) d.stop();
    for (const t of this.promoteTimers.values()) clearTimeout(t);
    await Promise.all(this.promoting.values());
    for (const loc of this.locations.values()) loc.fetcher.close();
    this.locations.clear();
    await Promise.all([...this.clients.values()].map((c) => c.close()));
  }
}

function fileSize(p: string): number | undefined {
  try {
    const st = fs.lstatSync(p);
    return st.isFile() ? st.size : undefined;
  } catch {
    return undefined;
  }
}

