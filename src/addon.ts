// The only TS file that loads the native addon; everything else imports its typed API from here.
import path from 'node:path';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const native = require(path.join(__dirname, '..', '..', 'build', 'Release', 'obd_addon.node'));

// ---- zfile ----
export type ZFileAlgorithm = 'lz4' | 'zstd';

export interface ZFileCompressOptions {
  algorithm?: ZFileAlgorithm; // default lz4
  blockSize?: number; // 4096..65536, power of two; default 4096
  verify?: boolean; // per-block crc32c; default true (as overlaybd's tools)
  overwriteHeader?: boolean; // `overlaybd-commit -z` style header (flags 0x1B); default false
}

export interface ZFileInfo {
  algorithm: ZFileAlgorithm;
  blockSize: number;
  verify: boolean;
  headerOverwritten: boolean;
  hasDigest: boolean;
  blockCount: number;
  originalSize: number;
  indexOffset: number;
}

/** Errors thrown by the addon: `code` is the errno name (EBADMSG for corrupt input, ENOENT, …). */
export interface AddonError extends Error {
  code: string;
  errno: number;
}

/** Raw CRC-32C register update (Castagnoli, no inversion) as ZFile uses it; `portable` forces the table path. */
export function crc32c(data: Buffer, seed = 0, portable = false): number {
  return native.crc32c(data, seed, portable);
}

/** Compresses a local file into a ZFile (removes the partial output on failure). */
export function zfileCompress(input: string, output: string, opts: ZFileCompressOptions = {}): Promise<void> {
  return native.zfileCompress(input, output, opts);
}

/** Decompresses a local ZFile; with verify, every block's crc32c is checked. */
export function zfileDecompress(input: string, output: string, verify = true): Promise<void> {
  return native.zfileDecompress(input, output, verify);
}

/** Validates a ZFile's header, trailer and jump table and returns what they say. Throws on bad input. */
export function zfileInspect(path: string): ZFileInfo {
  return native.zfileInspect(path);
}

/** True when the first 512 bytes carry both ZFile magics and the HEADER flag. */
export function looksLikeZFile(first: Buffer): boolean {
  return native.zfileLooksLike(first);
}

/** The decompressed bytes of a local ZFile, read by range (reads past the end return zeros). */
export interface ZFileReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
  /** Closes the file now instead of at garbage collection; later reads reject. */
  close(): void;
}

export function openZFile(path: string, verifyBlocks = true): ZFileReader {
  return new native.ZFileReader(path, verifyBlocks);
}
// ---- end zfile ----

// ---- layer (lsmt, stack) ----
export interface LsmtHeader {
  flags: number;
  indexOffset: number; // bytes
  indexSize: number; // entries (trailer)
  virtualSize: number; // bytes
  uuid: string;
  parentUuid: string;
  userTag: string;
  version: number;
  subVersion: number;
}

export interface LayerInfo {
  /** Wrappers found by magic bytes, outermost first; the last is what the payload is:
   *  'lsmt-sealed' | 'lsmt-rw-data' | 'lsmt-rw-data-sparse' | 'lsmt-rw-index' | 'unknown'. */
  formats: string[];
  fileSize: number;
  zfile?: { algorithm: ZFileAlgorithm; blockSize: number; verify: boolean; headerOverwritten: boolean; blockCount: number; originalSize: number };
  header?: LsmtHeader;
  trailer?: LsmtHeader;
  extentCount: number;
  zeroedCount: number;
  dataBytes: number;
}

/** Identifies and validates a layer file (tar wrapper → ZFile → LSMT). Throws AddonError on damage. */
export function layerInfo(path: string): LayerInfo {
  return native.layerInfo(path);
}

export interface CreateLayerOptions {
  vsize: number; // bytes, multiple of 512
  uuid?: string; // default: random v4
  parentUuid?: string; // default: null uuid
}

/** Creates a writable LSMT layer (data + index file, both must not exist); returns its uuid. */
export function createWritableLayer(data: string, index: string, opts: CreateLayerOptions): string {
  return native.createWritableLayer(data, index, opts);
}

export interface CommitLayerOptions {
  uuid?: string; // default: null uuid, as overlaybd-commit without --uuid
  parentUuid?: string; // default: copied from the writable layer
  userTag?: string; // ≤ 256 bytes
  zfile?: { algorithm?: ZFileAlgorithm; blockSize?: number };
  /** TurboOCI meta commit: runs file from convertApplyTar's targetRunsOut (mapped to the tar, not copied). */
  targetRuns?: string;
}

export interface CommitResult {
  bytes: number; // size of the LSMT blob (before ZFile)
  extents: number; // live index entries
  indexEntries: number; // including padding
}

/** Seals a writable layer into a layer blob, byte-identical to overlaybd-commit. */
export function commitLayer(data: string, index: string, out: string, opts: CommitLayerOptions = {}): CommitResult {
  return native.commitLayer(data, index, out, opts);
}

/**
 * A TurboOCI lower: `meta` (local fs.meta: a warp LSMT, maybe ZFile) whose file data lives in the
 * layer's uncompressed tar stream: `target` (the original blob, local or remote), inflated through
 * `gzipIndex` (gzip.meta) when the blob is gzip.
 */
export interface WarpLower {
  meta: string;
  target: string | RemoteFile;
  gzipIndex?: string;
  gzipCacheBytes?: number; // memory for inflated spans (default 64 MiB)
}

export interface StackSpec {
  lowers: Array<string | WarpLower>; // bottom-most first; each may be tar-wrapped and/or ZFile
  upper?: { data: string; index: string };
  verify?: boolean; // per-block ZFile crc (default true)
}

export interface StackExtent {
  offset: number;
  length: number;
  zeroed: boolean;
  layer: number; // index into lowers; lowers.length for the upper
}

/** A layer stack over local files. Every call blocks: for tools and tests, not for served devices. */
export interface LayerStack {
  read(offset: number, length: number): Buffer;
  /** Fills `into` (length a multiple of 512) from offset, without allocating. */
  readInto(offset: number, into: Buffer): void;
  write(offset: number, data: Buffer): void;
  discard(offset: number, length: number): void;
  flush(): void;
  size(): number;
  readOnly(): boolean;
  extents(): StackExtent[];
  /** Writes the virtual disk as a sparse raw file; returns data bytes written. */
  exportRaw(path: string): number;
  close(): void;
}

export function openStack(spec: StackSpec): LayerStack {
  return new native.LayerStack(spec);
}
// ---- end layer ----

// ---- device ----
/** Opaque handle of an attached device; pass it back to deviceDetach/deviceStats. */
export type DeviceHandle = { readonly __brand: 'DeviceHandle' };

export interface DeviceAttachOptions {
  id: string;
  mountDir: string; // private empty dir for the FUSE mount (created if missing)
  lowers?: Array<string | RemoteFile | WarpLower>; // local layer blob files, remote files or TurboOCI lowers, bottom first
  upperData?: string;
  upperIndex?: string;
  rawFile?: string; // serve a raw disk image instead of a stack (baseline/bench)
  rawWritable?: boolean;
  pageCache?: boolean; // fuse-loop: buffered loop device on the FUSE file's page cache (default: direct I/O)
  cacheableFile?: boolean; // fuse-loop, direct: can become page-cached later (deviceUsePageCache)
  threads?: number; // FUSE reader threads, default 2
  fuseIoUring?: boolean; // fuse-loop: FUSE over io_uring when the kernel offers it
  transport?: 'fuse-loop' | 'tcmu'; // default fuse-loop
  tcmu?: TcmuAttachOptions; // required with transport tcmu
  takeover?: FuseTakeover; // fuse-loop: serve the live device a previous deviced left (fd store)
}

/** A fuse-loop device's live kernel side: its descriptors and the FUSE_INIT its connection began with. */
export interface FuseTakeover {
  fuseFd: number;
  loopFd: number;
  init: Buffer;
}

export interface TcmuAttachOptions {
  hba: number; // backstore core/user_<hba>/<name>
  name: string; // dev_<id>
  cfgString: string; // dev_config, e.g. "overlaybd/<config.v1.json>"
  loopbackId: number; // tcm_loop target naa.199<id, 13 digits> (tenant prefix when hba is not TCMU_DEFAULT_HBA)
  adoptExisting?: boolean; // serve a backstore an earlier deviced left instead of failing
}

export interface AttachedDevice {
  handle: DeviceHandle;
  path: string;
  loopIndex?: number; // fuse-loop only
  major: number;
  minor: number;
  size: number;
  readOnly: boolean;
  directIo: boolean;
  backingFile?: string; // fuse-loop only
  fusePath?: string; // fuse-loop only: "/dev/fuse" or "io_uring"
  pageCache?: boolean; // fuse-loop only: the device runs page-cached (else direct I/O)
  bdiError?: string; // fuse-loop, page-cached: why the FUSE bdi's dirty limits could not be raised
  handover?: FuseTakeover; // fuse-loop: what the fd store keeps (descriptors borrowed from the device)
  tookOver?: boolean; // fuse-loop: served the live device a previous deviced left
  resendError?: string | null; // after a takeover: why FUSE_NOTIFY_RESEND failed (null: it worked)
}

export interface DeviceCounters {
  readOps: number;
  readBytes: number;
  writeOps: number;
  writeBytes: number;
  discardOps: number;
  discardBytes: number;
  flushOps: number;
  coalescedReads: number;
  inFlight: number;
  errors: number;
  // tcmu only (0 for fuse-loop): ring entries fetched, PADs skipped, entries rejected, doorbell writes
  ringCommands: number;
  ringPads: number;
  ringBadEntries: number;
  ringNotifications: number;
}

/** Serves a stack through FUSE + a loop device, or TCMU (runs on its own thread, never the JS one). */
export function deviceAttach(opts: DeviceAttachOptions): Promise<AttachedDevice> {
  return native.deviceAttach(opts);
}

/** Unbinds the loop device and stops the FUSE server; EBUSY while mounted unless force. */
export function deviceDetach(handle: DeviceHandle, force: boolean): Promise<void> {
  return native.deviceDetach(handle, force);
}

/**
 * Process exit: stops serving; a tcmu device stays in the kernel for the next deviced to adopt, a
 * fuse-loop device too when handOver (its descriptors are in the fd store), else it is torn down.
 */
/** A direct fuse-loop device attached with cacheableFile becomes page-cached (no-op if it is already). */
export function deviceUsePageCache(handle: DeviceHandle): Promise<void> {
  return native.deviceUsePageCache(handle);
}

export function deviceRelease(handle: DeviceHandle, handOver: boolean): Promise<void> {
  return native.deviceRelease(handle, handOver);
}

export function deviceStats(handle: DeviceHandle): DeviceCounters {
  return native.deviceStats(handle);
}

/** Unbinds a loop device left by an earlier process; throws EBUSY while it is mounted. */
export function loopClear(devPath: string): void {
  native.loopClear(devPath);
}

/** umount2(MNT_DETACH). */
export function unmountLazy(dir: string): void {
  native.unmountLazy(dir);
}
// ---- end device ----

// ---- fdstore ----
/** The fd holder program deviced starts when systemd's fd store is not there (built with the addon). */
export const FD_HOLDER_PROGRAM = path.join(__dirname, '..', '..', 'build', 'Release', 'obd-fd-holder');

/** One message received with its descriptors (the caller closes them). */
export interface FdMessage {
  text: string;
  fds: number[];
}

/** Connects to a SOCK_SEQPACKET unix socket; throws ENOENT/ECONNREFUSED when nobody listens. */
export function seqpacketConnect(socketPath: string): number {
  return native.seqpacketConnect(socketPath);
}

/** Sends one message with descriptors (SCM_RIGHTS); ours stay open. */
export function sendFds(sock: number, text: string, fds: number[] = []): void {
  native.sendFds(sock, text, fds);
}

/** Receives one message (ETIMEDOUT after timeoutMs, ECONNRESET when the peer closed). */
export function recvFds(sock: number, timeoutMs: number): FdMessage {
  return native.recvFds(sock, timeoutMs);
}

/** sd_notify: one datagram (with descriptors) to $NOTIFY_SOCKET. */
export function sdNotify(socketPath: string, text: string, fds: number[] = []): void {
  native.sdNotify(socketPath, text, fds);
}

/** A bound unix datagram socket: plays systemd's notify socket in tests. */
export function datagramBind(socketPath: string): number {
  return native.datagramBind(socketPath);
}

/** A listening unix stream socket: plays a systemd .socket unit in tests. */
export function streamListen(socketPath: string): number {
  return native.streamListen(socketPath);
}

export function closeFd(fd: number): void {
  native.closeFd(fd);
}

export function setCloexec(fd: number): void {
  native.setCloexec(fd);
}
// ---- end fdstore ----

// ---- tcmu ----
export interface TcmuSupport {
  ok: boolean;
  /** When !ok: the missing kernel module / config (e.g. "kernel lacks target_core_user (CONFIG_TCM_USER2): …"). */
  reason: string;
}

/** Whether this kernel can serve TCMU devices; with loadModules, first tries modprobe and mounting configfs. */
/** accelerated-container-image's TCMU HBA (core/user_<hba>) when no tenant is configured. */
export const TCMU_DEFAULT_HBA: number = native.tcmuDefaultHba;

export function tcmuSupported(loadModules = false): TcmuSupport {
  return native.tcmuSupported(loadModules);
}

/** Backstore names under configfs core/user_<hba>. */
export function tcmuListBackstores(hba: number): string[] {
  return native.tcmuListBackstores(hba);
}

/** Removes a backstore nobody serves (its tcm_loop LUN first). */
export function tcmuRemoveStale(hba: number, name: string): void {
  native.tcmuRemoveStale(hba, name);
}
// ---- end tcmu ----

// ---- remote ----
export interface BlockCacheOptions {
  dir: string;
  capacityBytes: number;
  unitSize?: number; // refill unit, power of two; default 262144 (overlaybd's refillSize)
  sync?: boolean; // fdatasync before a unit is marked present; default true
  minFreeBytes?: number; // disk-free floor of the cache's filesystem; default 1 GiB
}

export interface BlockCacheStats {
  capacityBytes: number;
  usedBytes: number;
  unitSize: number;
  blobs: number;
  openBlobs: number; // entries with users (their files are open)
  writtenUnits: number;
  evictedUnits: number;
  verifiedBlobs: number;
  verifyFailures: number;
  writeErrors: number;
  skippedForSpace: number; // units not cached because of the disk-free floor
  lastError: string;
}

/** The local block cache of remote blobs (one per cacheDir; entries in scopes, one per registry location). */
export interface BlockCache {
  stats(): BlockCacheStats;
  /** One user of the entry less (each RemoteFile opened on it is one); the last one closes its files. */
  release(digest: string, scope?: string): void;
  /** Removes an entry that has no users, with its files (queued behind pending writes). */
  drop(digest: string, scope?: string): void;
  /** A new size limit; least recently used units are evicted down to it (queued behind pending writes). */
  setCapacity(bytes: number): void;
  /** Resolves when every queued write/verification is done. */
  drain(): Promise<void>;
}

export function openBlockCache(opts: BlockCacheOptions): BlockCache {
  return new native.BlockCache(opts);
}

/** Why a fetch happens; the scheduler starts demand first (see addon/src/remote/fetch_scheduler.h). */
export type FetchKind = 'demand' | 'readahead' | 'prefetch' | 'background';

/** Gets `length` bytes at `offset` of a blob; must settle (the addon fails the read with EIO on rejection). */
export type BlobFetchFn = (digest: string, offset: number, length: number, kind: FetchKind) => Promise<Uint8Array>;

export type PerFetchKind = Record<FetchKind, number>;

export interface FetchSchedulerStats {
  started: PerFetchKind;
  bytes: PerFetchKind; // delivered, by the kind they were started as
  inFlight: PerFetchKind;
  queued: PerFetchKind;
  promoted: number; // queued fetches a demand read overtook
  failed: number;
  linkBytesPerSec: number; // measured over the last seconds with fetches in flight
  native?: NativeFetchStats; // a fetcher created with `native`
}

/** Fetches answered by the native HTTP client (addon/src/net), cumulative. */
export interface NativeFetchStats {
  fetches: number;
  bytes: PerFetchKind; // delivered by native fetches
  fallbacks: number; // native attempts that failed and went to the JS function
  receivedBytes: number; // every body byte the native client received
  requests: number; // GETs it sent (the read-ahead windows of one reader share a few bounded GETs)
  failedRequests: number; // GETs that failed (each reported once to native.onFailed)
  routes: number; // blobs with a route now
  durationBuckets: number[]; // native fetches per durationBoundsSec bound (cumulative)
  secondsSum: number;
}

/**
 * A native GET that failed, once per GET: `status` for an answer with an HTTP status we did not ask
 * for, or what went wrong on the way (addon/src/net/http_range_client.h).
 */
export interface NativeFetchFailure {
  digest: string;
  kind: 'status' | 'reset' | 'timeout' | 'network' | 'protocol' | 'size_mismatch' | 'other';
  status: number; // the HTTP status (0 when none came)
  message: string;
}

/** Where a blob's bytes are fetched natively: its final URL and the headers to send there. */
export interface BlobRoute {
  url: string;
  headers: string[]; // "Name: value"
  size: number; // checked against Content-Range
  expiresInMs?: number; // a presigned URL or token that stops working
}

/** GETs in flight per low-priority kind (demand is never held back). */
export interface FetchLimits {
  readAhead?: number; // default 4
  prefetch?: number; // default 2
  background?: number; // default 1, and only while nothing else is fetched
}

export interface NativeFetchOptions {
  durationBoundsSec?: number[];
  onFetched?: (digest: string) => void;
  onFailed?: (failure: NativeFetchFailure) => void;
}

/** Native handle that serves the addon's cache misses with a JS function (on the main thread). */
export interface RemoteFetcher {
  close(): void;
  stats(): FetchSchedulerStats;
  /** Native fetchers: later fetches of `digest` go to `route` without JS (no-op otherwise). */
  setRoute(digest: string, route: BlobRoute): void;
  dropRoute(digest: string): void;
}

/**
 * Wraps `fn` for the addon. `timeoutMs` is a last-resort bound: if `fn` has not settled by then the
 * read fails with EIO (the registry client's own deadlines normally end it first). With `native`,
 * blobs given a route (setRoute) are fetched by libcurl on a native thread, and `fn` serves the
 * rest and every fetch whose native attempt failed (it resolves, retries and sets a new route);
 * `native.onFetched` hears each digest a native fetch filled, `native.onFailed` each native GET
 * that failed (before its fetches reach `fn`).
 */
export function createRemoteFetcher(fn: BlobFetchFn, opts: { timeoutMs?: number; limits?: FetchLimits; native?: NativeFetchOptions } = {}): RemoteFetcher {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  return new native.RemoteFetcher((digest: string, offset: number, length: number, done: (err: unknown, b?: Uint8Array) => void, kind: FetchKind) => {
    let settled = false;
    const finish = (err: unknown, b?: Uint8Array) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      done(err, b);
    };
    const timer = setTimeout(() => finish(new Error(`${digest}: fetch of ${length} bytes at ${offset} timed out after ${timeoutMs} ms`)), timeoutMs);
    timer.unref();
    try {
      fn(digest, offset, length, kind).then((b) => finish(null, b), (e) => finish(e instanceof Error ? e : new Error(String(e))));
    } catch (e) {
      finish(e instanceof Error ? e : new Error(String(e)));
    }
  }, opts.limits ?? {}, opts.native ? { native: { durationBoundsSec: opts.native.durationBoundsSec ?? [], onFetched: opts.native.onFetched,
    onFailed: opts.native.onFailed } } : {});
}

export interface RemoteFileSpec {
  digest: string;
  size: number;
  cache: BlockCache;
  fetcher: RemoteFetcher;
  readAheadUnits?: number; // largest read-ahead window in units (0: none); default 64
  maxFetchUnits?: number; // default 16 (one demand GET ≤ 4 MiB with 256 KiB units)
  readAheadStartBytes?: number; // contiguous bytes a reader reads before read-ahead starts; default 1 MiB
  readAheadWindowMs?: number; // a window holds at most what the link delivers in this time; default 250
  cacheScope?: string; // the cache entry's scope (a directory name); default "" (the cache dir itself)
}

export interface RemoteFileStats {
  reads: number;
  hits: number;
  fetches: number;
  fetchedBytes: number;
  readAheadFetches: number;
  readAheadBytes: number;
  prefetchBytes: number;
  backgroundBytes: number;
  promotedFetches: number;
  failedFetches: number;
  presentUnits: number;
  units: number;
}

/** A remote blob read through the block cache. Also accepted as a stack lower (remoteLowerFromJs in binding.cc). */
export interface RemoteFile {
  readonly size: number;
  /** kind: 'demand' (default) is seen by read-ahead; 'prefetch' and 'background' are fetched at their priority. */
  read(offset: number, length: number, kind?: 'demand' | 'prefetch' | 'background'): Promise<Buffer>;
  /** The same into the caller's buffer of exactly `length` bytes (resolves to it): no allocation per read. */
  read(offset: number, length: number, kind: 'demand' | 'prefetch' | 'background' | undefined, into: Buffer): Promise<Buffer>;
  stats(): RemoteFileStats;
  /** Offset of the first unit at or after `offset` neither cached nor being fetched; size when none. */
  nextMissing(offset: number): number;
}

export function openRemoteFile(spec: RemoteFileSpec): RemoteFile {
  return new native.RemoteFile(spec);
}

/** The read-ahead policy alone (unit tests): a window to fetch per demand read. */
export interface ReadAheadPolicy {
  onRead(offset: number, length: number, maxWindowUnits: number): { firstUnit: number; count: number };
  streams(): Array<{ next: number; run: number; window: number; marker: number; end: number }>;
}

export function createReadAheadPolicy(o: { unitSize: number; size: number; startBytes?: number }): ReadAheadPolicy {
  return new native.ReadAheadPolicy(o);
}
// ---- end remote ----

// ---- convert ----
export interface ApplyTarLimits {
  maxEntries?: number;
  maxEntrySize?: number; // bytes of one file
  maxTotalBytes?: number; // bytes of all files of the layer
}

export interface ApplyTarStats {
  entries: number;
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  specials: number;
  whiteouts: number;
  opaques: number;
  removed: number;
  bytes: number;
  /** TurboOCI: file data given blocks but not written (mapped to the tar) */
  preallocatedBytes: number;
  inputBytes: number;
  warnings: number;
  firstWarning: string;
  /** TurboOCI: inodes whose preallocated extents ext4MarkExtentsWritten must mark written */
  preallocatedInodes?: number[];
}

/**
 * Applies an OCI layer tar (plain/gzip/zstd) read from `inputFd` under `root` with OCI whiteout
 * semantics; chroot()s into root while extracting (default). Blocks: only for obdconv's apply child.
 */
export function convertApplyTar(opts: {
  inputFd: number; root: string; chroot?: boolean; limits?: ApplyTarLimits;
  /** the input is an uncompressed tar: no compression is looked for (TurboOCI offsets are of this stream) */
  plainTar?: boolean;
  /** TurboOCI: write where each regular file's data sits on the device and in the tar (for commitLayer targetRuns). */
  targetRunsOut?: string;
}): ApplyTarStats {
  return native.convertApplyTar(opts);
}

/**
 * TurboOCI scan of a source layer blob, read while a download may still be writing it (`partialPath`
 * until it is renamed to `path`, up to `size` bytes), on the libuv pool: a gzip blob is inflated once
 * into `tarOut` with its gzip index (gzip.meta) written to `gzipIndexOut` from that same pass; a plain
 * tar is read through (nothing written); zstd is refused.
 */
export async function turboScanLayer(opts: { path: string; partialPath?: string; size?: number; gzipIndexOut: string; tarOut: string }):
  Promise<{ gzip: boolean; gzipIndex?: GzipIndexStats; waitedMs: number }> {
  const b: Buffer = await native.turboScanLayer(opts);
  const u = (i: number) => Number(b.readBigUInt64LE(8 * i));
  const gzipIndex = { points: u(1), gzipSize: u(2), uncompressedSize: u(3), indexSize: u(4) };
  return { gzip: u(0) === 1, ...(u(0) === 1 ? { gzipIndex } : {}), waitedMs: u(5) };
}

/**
 * TurboOCI: clears the unwritten flag of the extents of `inodes` on an unmounted ext4 `device`, so
 * the blocks convertApplyTar preallocated (and the meta layer maps to the tar) read as data.
 */
export function ext4MarkExtentsWritten(device: string, inodes: number[]): number {
  return native.ext4MarkExtentsWritten(device, inodes);
}
// ---- end convert ----

// ---- turbo ----
export interface GzipIndexStats {
  points: number;
  gzipSize: number;
  uncompressedSize: number;
  indexSize: number;
}

/** Builds a gzip index (gzip.meta) of a single-member gzip file; `span` = compressed bytes between access points. */
export function gzipIndexBuild(gzPath: string, outPath: string, opts: { span?: number } = {}): GzipIndexStats {
  return native.gzipIndexBuild(gzPath, outPath, opts);
}

/** The uncompressed stream of a gzip blob served through its index (validated on open). */
export interface GzipFile {
  read(offset: number, length: number): Promise<Buffer>;
  size(): number;
  stats(): { spanFetches: number; cacheHits: number };
}

export function openGzipFile(opts: { blob: string | RemoteFile; index: string; cacheBytes?: number }): GzipFile {
  return new native.GzipFile(opts);
}
// ---- end turbo ----
