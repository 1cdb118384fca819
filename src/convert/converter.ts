// obdconv's pipeline: source manifest + config → for each source layer (in order) an overlaybd
// layer built on the previous ones → ZFile → tar wrapper → push (skip if present, cross-repo mount
// when the cache knows another repository of the same registry) → new config + manifest, pushed
// last, so a failed conversion never leaves a manifest behind. Downloads run ahead (bounded by
// `concurrency`); compress + push of layer i overlap the build of layer i+1, which stacks on the
// plain sealed LSMT of layer i.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { layerInfo, zfileCompress, type ApplyTarLimits, type ApplyTarStats, type ZFileAlgorithm } from '../addon';
import { chainIds } from '../digest';
import type { Descriptor, Platform } from '../registry';
import { verifyDiffId } from './diff-id';
import { ConversionCache, type CachedLayer } from './cache';
import { ConvertOptionError, LayerBuildError } from './errors';
import { buildLayer } from './layer-builder';
import { pushConvertedImage, readSourceManifest } from './image-ends';
import {
  ArtifactTypes, buildConfig, checkSource, layerDescriptor, uuidFromChainId, type ImageConfigJson,
} from './manifest';
import type { ImageStore, ManifestPlacement } from './store';
import { tarWrapFile } from './tar-wrap';

export type Stage = 'download' | 'apply' | 'compress' | 'upload';

export type ConvertEvent =
  | { type: 'start'; layers: number; source: string; target: string }
  | { type: 'stage'; layer: number; stage: Stage; state: 'start' | 'progress' | 'done'; bytes: number; total?: number; ms?: number }
  | { type: 'layer-done'; layer: number; report: LayerReport }
  | { type: 'log'; message: string };

export interface ConvertOptions {
  fstype: string;
  algorithm: ZFileAlgorithm | 'none';
  blockSize: number; // bytes
  vsizeGB: number;
  mkfs: boolean;
  baseLayer?: string; // upstream ext4_64 base (ZFile) used when !mkfs
  concurrency: number;
  cacheDir: string;
  manifestKind: 'docker' | 'oci';
  platform: Platform;
  /** The source manifest to convert (a platform of an index); without it SRC's reference is resolved for `platform`. */
  sourceManifest?: Descriptor;
  /** How the converted manifest is put (default: tagged as DST's reference). */
  placement?: ManifestPlacement;
  limits?: ApplyTarLimits;
  signal?: AbortSignal;
  onEvent?: (ev: ConvertEvent) => void;
}

export interface LayerReport {
  index: number;
  source: string;    // source layer digest
  chainId: string;
  digest: string;    // overlaybd blob
  size: number;
  cached: boolean;
  push: 'uploaded' | 'mounted' | 'present';
  sourceBytes: number;
  lsmtBytes: number;
  ms: Partial<Record<Stage | 'commit', number>>;
  apply?: ApplyTarStats;
}

export interface ConvertResult {
  source: string;
  target: string;
  manifestDigest: string;
  manifest: Descriptor;
  configDigest: string;
  layers: LayerReport[];
  seconds: number;
}

/** Runs at most `n` async jobs at a time. */
class Limiter {
  private active = 0;
  private queue: (() => void)[] = [];
  constructor(private readonly n: number) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.n) await new Promise<void>((r) => this.queue.push(r));
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.queue.shift()?.();
    }
  }
}

async function fileDigest(file: string): Promise<string> {
  const h = crypto.createHash('sha256');
  await pipeline(fs.createReadStream(file, { highWaterMark: 1 << 20 }), h);
  return `sha256:${h.digest('hex')}`;
}

export async function convertImage(src: ImageStore, dst: ImageStore, opts: ConvertOptions): Promise<ConvertResult> {
  const t0 = Date.now();
  const emit = (ev: ConvertEvent) => opts.onEvent?.(ev);
  const signal = opts.signal;
  if (opts.fstype !== 'ext4') throw new ConvertOptionError(`--fstype ${opts.fstype}: only ext4 is supported`);
  if (!opts.mkfs && opts.vsizeGB !== 64) throw new ConvertOptionError('--mkfs=false uses the 64 GiB ext4_64 base layer: --vsize must be 64');
  if (!opts.mkfs && !opts.baseLayer) throw new ConvertOptionError('--mkfs=false needs the ext4_64 base layer (--base-layer FILE)');

  const resolved = await readSourceManifest(src, opts, signal);
  const configBuf = await src.readBlob(resolved.manifest.config, signal);
  const config = JSON.parse(configBuf.toString('utf8')) as ImageConfigJson;
  const diffIds = checkSource(resolved.manifest, config, src.name);
  const chains = chainIds(diffIds);
  // Converted layers are checked against their diff_ids (verifyDiffId); cached ones are not rebuilt,
  // so the cache key also chains the (verified) blob digests: a config that lies about its diff_ids
  // cannot plant a conversion for another image.
  const blobChains = chainIds(resolved.manifest.layers.map((l) => l.digest));
  const layers = resolved.manifest.layers;
  emit({ type: 'start', layers: layers.length, source: src.name, target: dst.name });

  const cache = new ConversionCache(opts.cacheDir);
  const work = cache.tempDir();
  const vsize = opts.vsizeGB * 1024 ** 3;
  const optionKey = JSON.stringify({ v: 1, fs: opts.fstype, algo: opts.algorithm, bs: opts.blockSize, vsize, mkfs: opts.mkfs,
    base: opts.mkfs ? '' : 'ext4_64' });
  const downloads = new Limiter(Math.max(1, opts.concurrency));
  const uploads = new Limiter(Math.max(1, opts.concurrency));
  const reports: LayerReport[] = [];
  const pending: Promise<void>[] = [];
  try {
    // Start every download that a cache miss needs, bounded by the limiter.
    // A cached layer is only valid on top of the same converted layers: the first miss ends reuse.
    const cachedRecs: (CachedLayer | undefined)[] = [];
    chains.forEach((c, i) => cachedRecs.push(i === 0 || cachedRecs[i - 1] ? cache.get(ConversionCache.key(`${c} ${blobChains[i]}`, optionKey)) : undefined));
    const tarFiles = layers.map((l, i) => {
      if (cachedRecs[i]) return undefined;
      const file = path.join(work, `source-${i}`);
      const p = downloads.run(async () => {
        const ts = Date.now();
        emit({ type: 'stage', layer: i, stage: 'download', state: 'start', bytes: 0, total: l.size });
        let n = 0;
        await src.fetchBlob(l, file, (b) => {
          n += b;
          emit({ type: 'stage', layer: i, stage: 'download', state: 'progress', bytes: n, total: l.size });
        }, signal);
        emit({ type: 'stage', layer: i, stage: 'download', state: 'done', bytes: n, total: l.size, ms: Date.now() - ts });
        return { file, ms: Date.now() - ts };
      });
      p.catch(() => undefined); // observed below; avoid unhandled rejections when an earlier layer fails
      return p;
    });

    const lowers: string[] = [];
    let parentUuid: string | undefined;
    const layerDescs: Descriptor[] = [];
    if (!opts.mkfs) {
      const base = opts.baseLayer!;
      const digest = await fileDigest(base);
      const size = fs.statSync(base).size;
      lowers.push(base);
      parentUuid = layerInfo(base).header?.uuid;
      layerDescs.push(layerDescriptor(digest, size, opts.fstype));
      pending.push(uploads.run(async () => {
        if (!(await dst.hasBlob(digest, signal))) await dst.pushBlobFile(base, digest, undefined, signal);
      }));
    }

    for (let i = 0; i < layers.length; i++) {
      signal?.throwIfAborted();
      const key = ConversionCache.key(`${chains[i]} ${blobChains[i]}`, optionKey);
      const uuid = uuidFromChainId(chains[i]);
      const cached = cachedRecs[i];
      const report: LayerReport = { index: i, source: layers[i].digest, chainId: chains[i], digest: '', size: 0, cached: !!cached,
        push: 'present', sourceBytes: layers[i].size, lsmtBytes: 0, ms: {} };
      reports.push(report);
      if (cached) {
        report.digest = cached.digest;
        report.size = cached.size;
        lowers.push(cache.blobPath(cached.digest));
        layerDescs.push(layerDescriptor(cached.digest, cached.size, opts.fstype));
        pending.push(uploads.run(() => publish(dst, cache, key, cached, cache.blobPath(cached.digest), report, emit, signal)));
        parentUuid = cached.uuid;
        continue;
      }
      const dl = await tarFiles[i]!;
      report.ms.download = dl.ms;
      const layerDir = path.join(work, `layer-${i}`);
      fs.mkdirSync(layerDir);
      const lsmt = path.join(layerDir, 'overlaybd.commit');
      emit({ type: 'stage', layer: i, stage: 'apply', state: 'start', bytes: 0 });
      const what = `layer ${i + 1}/${layers.length} (${layers[i].digest})`;
      // The diff_id is hashed while the tar is applied; both read the downloaded file.
      const [verified, building] = await Promise.allSettled([
        verifyDiffId(dl.file, diffIds[i], what),
        buildLayer({
          workDir: layerDir, lowers: [...lowers], vsize, uuid, parentUuid, tar: dl.file,
          mkfs: i === 0 && opts.mkfs ? { fstype: opts.fstype, uuid: uuidFromChainId(`mkfs ${chains[0]}`).toLowerCase() } : undefined,
          fstype: opts.fstype, limits: { maxEntrySize: vsize, maxTotalBytes: vsize, ...opts.limits }, out: lsmt, signal,
        }),
      ]);
      // A tar that cannot be applied says more than its hash does.
      if (building.status === 'rejected') {
        const err = building.reason as Error;
        throw new LayerBuildError(`${what}: ${err.message}`, err);
      }
      if (verified.status === 'rejected') throw verified.reason;
      const built = building.value;
      fs.rmSync(dl.file, { force: true });
      report.apply = built.apply;
      report.ms.apply = built.applyMs;
      report.ms.commit = built.commitMs;
      report.lsmtBytes = built.commit.bytes;
      const applied = built.apply?.bytes ?? 0;
      emit({ type: 'stage', layer: i, stage: 'apply', state: 'done', bytes: applied, total: applied, ms: built.applyMs + built.commitMs });
      lowers.push(lsmt);
      parentUuid = uuid;
      // Compress + wrap + push in the background; the next layer stacks on the plain LSMT meanwhile.
      const desc = layerDescriptor('', 0, opts.fstype);
      layerDescs.push(desc);
      pending.push(uploads.run(async () => {
        const blob = await finishBlob(lsmt, layerDir, opts, report, emit, signal);
        report.digest = blob.digest;
        report.size = blob.size;
        Object.assign(desc, layerDescriptor(blob.digest, blob.size, opts.fstype));
        const rec: CachedLayer = { digest: blob.digest, size: blob.size, uuid, locations: [] };
        const file = cache.adopt(blob.file, blob.digest);
        cache.put(key, rec);
        await publish(dst, cache, key, rec, file, report, emit, signal);
      }));
    }
    const results = await Promise.allSettled(pending);
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) throw failed.reason;
    for (const r of reports) emit({ type: 'layer-done', layer: r.index, report: r });

    const newConfig = buildConfig(config, layerDescs.map((d) => d.digest), !opts.mkfs);
    const pushed = await pushConvertedImage(dst, work, newConfig, layerDescs, opts, ArtifactTypes.native, signal);
    return { source: src.name, target: dst.name, manifestDigest: pushed.manifest.digest, manifest: pushed.manifest, configDigest: pushed.configDigest,
      layers: reports, seconds: (Date.now() - t0) / 1000 };
  } catch (err) {
    await Promise.allSettled(pending);
    throw err;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

async function finishBlob(lsmt: string, dir: string, opts: ConvertOptions, report: LayerReport, emit: (ev: ConvertEvent) => void,
  signal?: AbortSignal): Promise<{ file: string; digest: string; size: number }> {
  signal?.throwIfAborted();
  const i = report.index;
  const ts = Date.now();
  emit({ type: 'stage', layer: i, stage: 'compress', state: 'start', bytes: 0, total: report.lsmtBytes });
  let payload = lsmt;
  if (opts.algorithm !== 'none') {
    payload = path.join(dir, 'overlaybd.commit.zfile');
    await zfileCompress(lsmt, payload, { algorithm: opts.algorithm, blockSize: opts.blockSize, overwriteHeader: true });
  }
  const file = path.join(dir, 'blob.tar');
  const { size, digest } = await tarWrapFile(payload, file);
  if (payload !== lsmt) fs.rmSync(payload, { force: true });
  report.ms.compress = Date.now() - ts;
  emit({ type: 'stage', layer: i, stage: 'compress', state: 'done', bytes: report.lsmtBytes, total: report.lsmtBytes, ms: report.ms.compress });
  return { file, digest, size };
}

async function publish(dst: ImageStore, cache: ConversionCache, key: string, rec: CachedLayer, file: string, report: LayerReport,
  emit: (ev: ConvertEvent) => void, signal?: AbortSignal): Promise<void> {
  const i = report.index;
  const ts = Date.now();
  emit({ type: 'stage', layer: i, stage: 'upload', state: 'start', bytes: 0, total: rec.size });
  if (await dst.hasBlob(rec.digest, signal)) {
    report.push = 'present';
  } else {
    let mounted = false;
    for (const from of rec.locations) {
      if (await dst.mountBlob(rec.digest, from, signal)) {
        mounted = true;
        break;
      }
    }
    if (mounted) {
      report.push = 'mounted';
    } else {
      let sent = 0;
      await dst.pushBlobFile(file, rec.digest, (b) => emit({ type: 'stage', layer: i, stage: 'upload', state: 'progress', bytes: (sent += b), total: rec.size }), signal);
      report.push = 'uploaded';
    }
  }
  if (!rec.locations.includes(dst.location)) {
    rec.locations.push(dst.location);
    cache.put(key, rec);
  }
  report.ms.upload = Date.now() - ts;
  emit({ type: 'stage', layer: i, stage: 'upload', state: 'done', bytes: rec.size, total: rec.size, ms: report.ms.upload });
}
