// `obdconv --turbo-oci`: for each source layer, a small meta blob (ext4 metadata as a warp LSMT
// whose file data maps to the layer's uncompressed tar stream, plus a gzip index for gzip layers);
// the source layer blobs stay as they are and are only made present in DST's repository (already
// there, cross-repository mount, or — other registry — copied unchanged). Layers are built in
// order, each on the previous meta layers with their source blobs as targets. One pass over each
// blob's bytes: the build reads it while it downloads (two downloads at a time, in layer order),
// inflating it once for both the tar apply and the gzip index; making and pushing the meta blob
// overlaps the next build.
import fs from 'node:fs';
import path from 'node:path';
import { zfileCompress, type WarpLower } from '../addon';
import type { Descriptor } from '../registry';
import { ConversionCache } from './cache';
import type { ConvertEvent, ConvertOptions, ConvertResult, LayerReport } from './converter';
import { buildLayer, type BuildLayerResult, type BuildLayerSpec } from './layer-builder';
import { chainIds } from '../digest';
import { pushConvertedImage, readSourceManifest } from './image-ends';
import { Annotations, ArtifactTypes, checkSource, uuidFromChainId, type ImageConfigJson } from './manifest';
import type { ImageStore } from './store';
import { writeMetaBlob } from './turbo-blob';
import { startLayerDownloads, type LayerDownload } from './turbo-downloads';
import { TurboAnnotations, TurboMembers, TurboVersion, metaLayerMediaType, targetMediaType } from './turbo-format';

export interface TurboLayerReport extends LayerReport {
  target: string;          // source layer digest (kept)
  targetPush: 'present' | 'mounted' | 'uploaded';
  gzipIndexBytes: number;
  fsMetaBytes: number;
  /** Where this layer's time went (ms): waiting for its blob, the build's phases, the meta blob, the upload. */
  phases: Record<string, number>;
}

export interface TurboConvertResult extends ConvertResult {
  layers: TurboLayerReport[];
  /**
   * Wall-clock breakdown (ms) of the conversion's critical path: resolve (manifest + config),
   * waitDownload (builds waiting for their blob to start arriving), build (the layer builds, one
   * after another), tail (after the last build: meta blobs and uploads still running, config,
   * manifest); with `build` split by phase, summed over layers, in `buildPhases`.
   */
  phases: { total: number; resolve: number; waitDownload: number; build: number; tail: number };
  buildPhases: Record<string, number>;
}

// Blobs being downloaded at once, in layer order: the one the next build needs, and the one after.
const downloadsInFlight = 2;

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
  const phases = { total: 0, resolve: Date.now() - t0, waitDownload: 0, build: 0, tail: 0 };
  const buildPhases: Record<string, number> = {};
  const downloads = startLayerDownloads(src, layers, work, Math.min(downloadsInFlight, Math.max(1, opts.concurrency)), {
    start: (i, total) => emit({ type: 'stage', layer: i, stage: 'download', state: 'start', bytes: 0, total }),
    done: (i, bytes, ms) => emit({ type: 'stage', layer: i, stage: 'download', state: 'done', bytes, total: bytes, ms }),
  }, signal);
  try {
    let parentUuid: string | undefined;
    for (let i = 0; i < layers.length; i++) {
      signal?.throwIfAborted();
      const l = layers[i];
      const what = `layer ${i + 1}/${layers.length} (${l.digest})`;
      const dl = downloads[i];
      const tw = Date.now();
      await dl.started.catch(async () => {
        await dl.done; // throws the download's own error
      });
      const waited = Date.now() - tw;
      phases.waitDownload += waited;
      const dir = path.join(work, `layer-${i}`);
      fs.mkdirSync(dir);
      const report: TurboLayerReport = { index: i, source: l.digest, chainId: chains[i], digest: '', size: 0, cached: false,
        push: 'uploaded', sourceBytes: l.size, lsmtBytes: 0, ms: {}, target: l.digest, targetPush: 'present',
        gzipIndexBytes: 0, fsMetaBytes: 0, phases: { waitDownload: waited } };
      reports.push(report);
      const ta = Date.now();
      emit({ type: 'stage', layer: i, stage: 'apply', state: 'start', bytes: 0 });
      const built = await buildTurboLayer(dl, dir, {
        sourceSize: l.size, lowers: [...lowers], vsize, uuid: uuidFromChainId(`turbo ${chains[i]}`), parentUuid,
        mkfs: i === 0 ? { fstype: opts.fstype, uuid: uuidFromChainId(`mkfs ${chains[0]}`).toLowerCase() } : undefined,
        fstype: opts.fstype, limits: { maxEntrySize: vsize, maxTotalBytes: vsize, ...opts.limits }, signal,
      }).catch((err: Error) => {
        throw new Error(`${what}: ${err.message}`);
      });
      phases.build += Date.now() - ta;
      for (const [k, v] of Object.entries(built.phases)) buildPhases[k] = (buildPhases[k] ?? 0) + v;
      Object.assign(report.phases, built.phases);
      report.ms.download = (await dl.done).ms;
      report.gzipIndexBytes = built.apply?.gzipIndex?.indexSize ?? 0;
      report.apply = built.apply;
      report.ms.apply = Date.now() - ta - built.commitMs;
      report.ms.commit = built.commitMs;
      report.lsmtBytes = built.commit.bytes;
      lowers.push({ meta: built.lsmt, target: dl.file, ...(built.gzipIndex ? { gzipIndex: built.gzipIndex } : {}) });
      parentUuid = built.uuid;
      emit({ type: 'stage', layer: i, stage: 'apply', state: 'done', bytes: built.apply?.bytes ?? 0, ms: Date.now() - ta });
      // The meta blob is made and pushed in the background: the next build needs only the LSMT.
      const desc: Descriptor = { mediaType: metaLayerMediaType(opts.manifestKind), digest: '', size: 0 };
      metaDescs.push(desc);
      const d = metaDiffIds.push('') - 1;
      pending.push((async () => {
        const blob = await finishMetaBlob(built, dir, opts.fstype, report);
        report.digest = blob.digest;
        report.size = blob.size;
        metaDiffIds[d] = blob.diffId;
        Object.assign(desc, {
          digest: blob.digest, size: blob.size,
          annotations: {
            [Annotations.version]: TurboVersion, [Annotations.blobDigest]: blob.digest, [Annotations.blobSize]: String(blob.size),
            [TurboAnnotations.targetDigest]: l.digest, [TurboAnnotations.targetMediaType]: targetMediaType(l.mediaType, !!built.gzipIndex),
          },
        });
        const tu = Date.now();
        emit({ type: 'stage', layer: i, stage: 'upload', state: 'start', bytes: 0, total: blob.size });
        report.push = (await dst.hasBlob(blob.digest, signal)) ? 'present' : 'uploaded';
        if (report.push === 'uploaded') await dst.pushBlobFile(blob.file, blob.digest, undefined, signal);
        report.targetPush = await ensureTarget(src, dst, l, dl.file, signal);
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
    await Promise.allSettled([...pending, ...downloads.map((d) => d.done)]);
    throw err;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

interface TurboLayerSpec {
  sourceSize: number;    // the source blob's size (descriptor): the apply reads the download up to it
  lowers: WarpLower[];
  vsize: number;
  uuid: string;
  parentUuid?: string;
  mkfs?: { fstype: string; uuid: string };
  fstype: string;
  limits: BuildLayerSpec['limits'];
  signal?: AbortSignal;
}

interface BuiltTurboLayer extends BuildLayerResult {
  uuid: string;
  lsmt: string;          // the sealed meta LSMT (a lower of the next builds)
  gzipIndex?: string;    // gzip.meta, for a gzip source
}

/**
 * One meta layer, built while its blob may still be arriving: the apply child reads the partial
 * download and writes the gzip index from the same inflate. A failed download kills the build.
 */
async function buildTurboLayer(dl: LayerDownload, dir: string, spec: TurboLayerSpec): Promise<BuiltTurboLayer> {
  const abort = new AbortController();
  const onAbort = () => abort.abort(spec.signal?.reason);
  spec.signal?.addEventListener('abort', onAbort, { once: true });
  dl.done.catch(() => abort.abort());
  const gzipIndex = path.join(dir, TurboMembers.gzipIndex);
  const lsmt = path.join(dir, 'fs.meta.lsmt');
  try {
    const [built, download] = await Promise.allSettled([
      buildLayer({
        workDir: dir, lowers: spec.lowers, vsize: spec.vsize, uuid: spec.uuid, parentUuid: spec.parentUuid, tar: dl.file, turbo: true,
        tarInput: { partialPath: dl.partialFile, size: spec.sourceSize, gzipIndexOut: gzipIndex },
        mkfs: spec.mkfs, fstype: spec.fstype, limits: spec.limits, out: lsmt, signal: abort.signal,
      }),
      dl.done,
    ]);
    if (download.status === 'rejected') throw download.reason; // the build, if it failed, failed because of it
    if (built.status === 'rejected') throw built.reason;
    return { ...built.value, uuid: spec.uuid, lsmt, ...(built.value.apply?.gzip ? { gzipIndex } : {}) };
  } finally {
    spec.signal?.removeEventListener('abort', onAbort);
  }
}

/** fs meta → ZFile (lz4, 4 KiB, as `overlaybd-commit -z`) → the meta blob (fs meta, marker, gzip index). */
async function finishMetaBlob(built: BuiltTurboLayer, dir: string, fstype: string, report: TurboLayerReport) {
  const tc = Date.now();
  const fsMeta = path.join(dir, TurboMembers.fsMeta(fstype));
  await zfileCompress(built.lsmt, fsMeta, { algorithm: 'lz4', blockSize: 4096, overwriteHeader: true });
  report.fsMetaBytes = fs.statSync(fsMeta).size;
  const file = path.join(dir, 'turboOCIv1.tar.gz');
  const blob = await writeMetaBlob([{ name: TurboMembers.fsMeta(fstype), file: fsMeta }, { name: TurboMembers.marker },
    ...(built.gzipIndex ? [{ name: TurboMembers.gzipIndex, file: built.gzipIndex }] : [])], file);
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
