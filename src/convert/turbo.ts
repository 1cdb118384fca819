// `obdconv --turbo-oci`: for each source layer, a small meta blob (ext4 metadata as a warp LSMT
// whose file data maps to the layer's uncompressed tar stream, plus a gzip index for gzip layers);
// the source layer blobs stay as they are and are only made present in DST's repository (already
// there, cross-repository mount, or — other registry — copied unchanged). Layers are built in
// order, each on the previous meta layers with their source blobs as targets. Each blob is read
// once, while it downloads (two at a time, in layer order): one inflate gives its gzip index and
// the uncompressed tar, off the chain of builds; a build applies only the tar's metadata (file data
// is mapped, not read); making and pushing the meta blob overlaps the next build.
import fs from 'node:fs';
import path from 'node:path';
import { zfileCompress, type WarpLower } from '../addon';
import type { Descriptor } from '../registry';
import { ConversionCache } from './cache';
import type { ConvertEvent, ConvertOptions, ConvertResult, LayerReport } from './converter';
import { buildLayer } from './layer-builder';
import { chainIds } from '../digest';
import { pushConvertedImage, readSourceManifest } from './image-ends';
import { Annotations, ArtifactTypes, checkSource, uuidFromChainId, type ImageConfigJson } from './manifest';
import type { ImageStore } from './store';
import { ApplyWorker } from './apply-worker';
import { writeMetaBlob } from './turbo-blob';
import { dropScannedTar, startLayerSources } from './turbo-sources';
import { TurboAnnotations, TurboMembers, TurboVersion, metaLayerMediaType, targetMediaType } from './turbo-format';

export interface TurboLayerReport extends LayerReport {
  target: string;          // source layer digest (kept)
  targetPush: 'present' | 'mounted' | 'uploaded';
  gzipIndexBytes: number;
  fsMetaBytes: number;
  /** Where this layer's time went (ms): its scan (off the critical path), waiting for it, the build's phases, the meta blob, the upload. */
  phases: Record<string, number>;
}

export interface TurboConvertResult extends ConvertResult {
  layers: TurboLayerReport[];
  /**
   * Wall-clock breakdown (ms) of the conversion's critical path: resolve (manifest + config),
   * waitSource (builds waiting for their blob to be downloaded and scanned), build (the layer
   * builds, one after another), tail (after the last build: meta blobs and uploads still running,
   * config, manifest); with `build` split by phase, summed over layers, in `buildPhases`.
   */
  phases: { total: number; resolve: number; waitSource: number; build: number; tail: number };
  buildPhases: Record<string, number>;
}

// Blobs being downloaded at once, in layer order: the one the next build needs, and the one after.
// Each one's scan holds a libuv pool thread while it waits for bytes; the downloads' file writes
// need the others (the pool has 4 unless UV_THREADPOOL_SIZE says otherwise).
function downloadsInFlight(concurrency: number): number {
  const pool = Number(process.env.UV_THREADPOOL_SIZE) || 4;
  return Math.max(1, Math.min(2, concurrency, pool - 2));
}

export async function convertTurboImage(src: ImageStore, dst: ImageStore, opts: ConvertOptions): Promise<TurboConvertResult> {
  const t0 = Date.now();
  const emit = (ev: ConvertEvent) => opts.onEvent?.(ev);
  const signal = opts.signal;
  if (opts.fstype !== 'ext4') throw new Error(`--turbo-oci: --fstype ${opts.fstype}: only ext4 is supported`);
  if (!opts.mkfs) throw new Error('--turbo-oci needs --mkfs=true (the meta layers carry their own filesystem)');
  const resolved = await readSourceManifest(src, opts, signal);
  const configBuf = await src.readBlob(resolved.manifest.config, signal);
  const config = JSON.parse(configBuf.toString('utf8')) as ImageConfigJson;
  const diffIds = checkSource(resolved.manifest, config, src.name);
  const chains = chainIds(diffIds);
  const layers = resolved.manifest.layers;
  emit({ type: 'start', layers: layers.length, source: src.name, target: dst.name });
  const work = new ConversionCache(opts.cacheDir).tempDir();
  const vsize = opts.vsizeGB * 1024 ** 3;
  const reports: TurboLayerReport[] = [];
  const lowers: WarpLower[] = [];
  const metaDescs: Descriptor[] = [];
  const metaDiffIds: string[] = [];
  const pending: Promise<void>[] = [];
  const phases = { total: 0, resolve: Date.now() - t0, waitSource: 0, build: 0, tail: 0 };
  const buildPhases: Record<string, number> = {};
  const applier = ApplyWorker.start();
  const dirs = layers.map((_, i) => path.join(work, `layer-${i}`));
  for (const d of dirs) fs.mkdirSync(d);
  const sources = startLayerSources(src, layers, dirs, downloadsInFlight(opts.concurrency), {
    downloadStart: (i, total) => emit({ type: 'stage', layer: i, stage: 'download', state: 'start', bytes: 0, total }),
    downloadDone: (i, bytes, ms) => emit({ type: 'stage', layer: i, stage: 'download', state: 'done', bytes, total: bytes, ms }),
  }, signal);
  try {
    let parentUuid: string | undefined;
    for (let i = 0; i < layers.length; i++) {
      signal?.throwIfAborted();
      const l = layers[i];
      const what = `layer ${i + 1}/${layers.length} (${l.digest})`;
      const dir = dirs[i];
      const tw = Date.now();
      const source = await sources[i].catch((err: Error) => {
        throw new Error(`${what}: ${err.message}`);
      });
      const waited = Date.now() - tw;
      phases.waitSource += waited;
      const report: TurboLayerReport = { index: i, source: l.digest, chainId: chains[i], digest: '', size: 0, cached: false,
        push: 'uploaded', sourceBytes: l.size, lsmtBytes: 0, ms: { download: source.downloadMs }, target: l.digest, targetPush: 'present',
        gzipIndexBytes: source.indexStats?.indexSize ?? 0, fsMetaBytes: 0,
        phases: { scan: source.scanMs, scanWaitingForDownload: source.scanWaitedMs, waitSource: waited } };
      reports.push(report);
      const ta = Date.now();
      emit({ type: 'stage', layer: i, stage: 'apply', state: 'start', bytes: 0 });
      const uuid = uuidFromChainId(`turbo ${chains[i]}`);
      const lsmt = path.join(dir, 'fs.meta.lsmt');
      const built = await buildLayer({
        workDir: dir, lowers: [...lowers], vsize, uuid, parentUuid, tar: source.tar, plainTar: true, turbo: true,
        mkfs: i === 0 ? { fstype: opts.fstype, uuid: uuidFromChainId(`mkfs ${chains[0]}`).toLowerCase() } : undefined,
        fstype: opts.fstype, limits: { maxEntrySize: vsize, maxTotalBytes: vsize, ...opts.limits }, out: lsmt, applier, signal,
      }).catch((err: Error) => {
        throw new Error(`${what}: ${err.message}`);
      });
      dropScannedTar(source);
      phases.build += Date.now() - ta;
      for (const [k, v] of Object.entries(built.phases)) buildPhases[k] = (buildPhases[k] ?? 0) + v;
      Object.assign(report.phases, built.phases);
      report.apply = built.apply;
      report.ms.apply = Date.now() - ta - built.commitMs;
      report.ms.commit = built.commitMs;
      report.lsmtBytes = built.commit.bytes;
      lowers.push({ meta: lsmt, target: source.blob, ...(source.gzipIndex ? { gzipIndex: source.gzipIndex } : {}) });
      parentUuid = uuid;
      emit({ type: 'stage', layer: i, stage: 'apply', state: 'done', bytes: built.apply?.bytes ?? 0, ms: Date.now() - ta });
      // The meta blob is made and pushed in the background: the next build needs only the LSMT.
      const desc: Descriptor = { mediaType: metaLayerMediaType(opts.manifestKind), digest: '', size: 0 };
      metaDescs.push(desc);
      const d = metaDiffIds.push('') - 1;
      pending.push((async () => {
        const blob = await finishMetaBlob(lsmt, source.gzipIndex, dir, opts.fstype, report);
        report.digest = blob.digest;
        report.size = blob.size;
        metaDiffIds[d] = blob.diffId;
        Object.assign(desc, {
          digest: blob.digest, size: blob.size,
          annotations: {
            [Annotations.version]: TurboVersion, [Annotations.blobDigest]: blob.digest, [Annotations.blobSize]: String(blob.size),
            [TurboAnnotations.targetDigest]: l.digest, [TurboAnnotations.targetMediaType]: targetMediaType(l.mediaType, !!source.gzipIndex),
          },
        });
        const tu = Date.now();
        emit({ type: 'stage', layer: i, stage: 'upload', state: 'start', bytes: 0, total: blob.size });
        report.push = (await dst.hasBlob(blob.digest, signal)) ? 'present' : 'uploaded';
        if (report.push === 'uploaded') await dst.pushBlobFile(blob.file, blob.digest, undefined, signal);
        report.targetPush = await ensureTarget(src, dst, l, source.blob, signal);
        report.ms.upload = report.phases.upload = Date.now() - tu;
        emit({ type: 'stage', layer: i, stage: 'upload', state: 'done', bytes: blob.size, total: blob.size, ms: report.ms.upload });
      })());
      pending[pending.length - 1].catch(() => undefined);
    }
    const tt = Date.now();
    const results = await Promise.allSettled(pending);
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) throw failed.reason;
    for (const r of reports) emit({ type: 'layer-done', layer: r.index, report: r });
    const newConfig = Buffer.from(JSON.stringify({ ...config, rootfs: { type: 'layers', diff_ids: metaDiffIds } }));
    const pushed = await pushConvertedImage(dst, work, newConfig, metaDescs, opts, ArtifactTypes.turbo, signal);
    phases.tail = Date.now() - tt;
    phases.total = Date.now() - t0;
    return { source: src.name, target: dst.name, manifestDigest: pushed.manifest.digest, manifest: pushed.manifest, configDigest: pushed.configDigest,
      layers: reports, seconds: (Date.now() - t0) / 1000, phases, buildPhases };
  } catch (err) {
    await Promise.allSettled([...pending, ...sources]);
    throw err;
  } finally {
    await applier.close();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** fs meta → ZFile (lz4, 4 KiB, as `overlaybd-commit -z`) → the meta blob (fs meta, marker, gzip index). */
async function finishMetaBlob(lsmt: string, gzipIndex: string | undefined, dir: string, fstype: string, report: TurboLayerReport) {
  const tc = Date.now();
  const fsMeta = path.join(dir, TurboMembers.fsMeta(fstype));
  await zfileCompress(lsmt, fsMeta, { algorithm: 'lz4', blockSize: 4096, overwriteHeader: true });
  report.fsMetaBytes = fs.statSync(fsMeta).size;
  const file = path.join(dir, 'turboOCIv1.tar.gz');
  const blob = await writeMetaBlob([{ name: TurboMembers.fsMeta(fstype), file: fsMeta }, { name: TurboMembers.marker },
    ...(gzipIndex ? [{ name: TurboMembers.gzipIndex, file: gzipIndex }] : [])], file);
  fs.rmSync(fsMeta, { force: true });
  report.ms.compress = report.phases.metaBlob = Date.now() - tc;
  return { ...blob, file };
}

/** The source blob, unchanged, in DST's repository: present, mounted from SRC's repository, or copied. */
async function ensureTarget(src: ImageStore, dst: ImageStore, l: Descriptor, file: string, signal?: AbortSignal): Promise<'present' | 'mounted' | 'uploaded'> {
  if (await dst.hasBlob(l.digest, signal)) return 'present';
  if (await dst.mountBlob(l.digest, src.location, signal)) return 'mounted';
  await dst.pushBlobFile(file, l.digest, undefined, signal);
  return 'uploaded';
}
