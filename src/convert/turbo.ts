// `obdconv --turbo-oci`: for each source layer, a small meta blob (ext4 metadata as a warp LSMT
// whose file data maps to the layer's uncompressed tar stream, plus a gzip index for gzip layers);
// the source layer blobs stay as they are and are only made present in DST's repository (already
// there, cross-repository mount, or — other registry — copied unchanged). Layers are built in
// order, each on the previous meta layers with their source blobs as targets.
import fs from 'node:fs';
import path from 'node:path';
import { gzipIndexBuildAsync, zfileCompress, type WarpLower } from '../addon';
import type { Descriptor } from '../registry';
import { ConversionCache } from './cache';
import type { ConvertEvent, ConvertOptions, ConvertResult, LayerReport } from './converter';
import { buildLayer } from './layer-builder';
import { chainIds, sha256 } from '../digest';
import { Annotations, buildManifest, checkSource, uuidFromChainId, type ImageConfigJson } from './manifest';
import type { ImageStore } from './store';
import { writeMetaBlob } from './turbo-blob';
import { TurboAnnotations, TurboMembers, TurboVersion, metaLayerMediaType, targetMediaType } from './turbo-format';

export interface TurboLayerReport extends LayerReport {
  target: string;          // source layer digest (kept)
  targetPush: 'present' | 'mounted' | 'uploaded';
  gzipIndexBytes: number;
  fsMetaBytes: number;
}

function sniff(file: string): 'gzip' | 'zstd' | 'tar' {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    fs.readSync(fd, b, 0, 4, 0);
    if (b[0] === 0x1f && b[1] === 0x8b) return 'gzip';
    if (b.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
    return 'tar';
  } finally {
    fs.closeSync(fd);
  }
}

export async function convertTurboImage(src: ImageStore, dst: ImageStore, opts: ConvertOptions): Promise<ConvertResult> {
  const t0 = Date.now();
  const emit = (ev: ConvertEvent) => opts.onEvent?.(ev);
  const signal = opts.signal;
  if (opts.fstype !== 'ext4') throw new Error(`--turbo-oci: --fstype ${opts.fstype}: only ext4 is supported`);
  if (!opts.mkfs) throw new Error('--turbo-oci needs --mkfs=true (the meta layers carry their own filesystem)');
  const resolved = await src.resolve(opts.platform, signal);
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
  // Downloads run ahead of the builds (each build needs its own blob and keeps it as a target).
  const downloads = layers.map((l, i) => {
    const file = path.join(work, `source-${i}`);
    const p = (async () => {
      const ts = Date.now();
      emit({ type: 'stage', layer: i, stage: 'download', state: 'start', bytes: 0, total: l.size });
      await src.fetchBlob(l, file, undefined, signal);
      emit({ type: 'stage', layer: i, stage: 'download', state: 'done', bytes: l.size, total: l.size, ms: Date.now() - ts });
      return { file, ms: Date.now() - ts };
    })();
    p.catch(() => undefined);
    return p;
  });
  try {
    let parentUuid: string | undefined;
    for (let i = 0; i < layers.length; i++) {
      signal?.throwIfAborted();
      const l = layers[i];
      const dl = await downloads[i];
      const kind = sniff(dl.file);
      if (kind === 'zstd') throw new Error(`layer ${i + 1}/${layers.length} (${l.digest}): zstd layers cannot be served as TurboOCI (gzip or plain tar only)`);
      const dir = path.join(work, `layer-${i}`);
      fs.mkdirSync(dir);
      const report: TurboLayerReport = { index: i, source: l.digest, chainId: chains[i], digest: '', size: 0, cached: false,
        push: 'uploaded', sourceBytes: l.size, lsmtBytes: 0, ms: { download: dl.ms }, target: l.digest, targetPush: 'present',
        gzipIndexBytes: 0, fsMetaBytes: 0 };
      reports.push(report);
      const ta = Date.now();
      emit({ type: 'stage', layer: i, stage: 'apply', state: 'start', bytes: 0 });
      // The gzip index (one inflate pass, on the libuv pool) runs alongside the apply (another in its child).
      const gzipIndex = kind === 'gzip' ? path.join(dir, TurboMembers.gzipIndex) : undefined;
      const indexing = gzipIndex ? gzipIndexBuildAsync(dl.file, gzipIndex) : Promise.resolve();
      indexing.catch(() => undefined);
      const uuid = uuidFromChainId(`turbo ${chains[i]}`);
      const lsmt = path.join(dir, 'fs.meta.lsmt');
      const built = await buildLayer({
        workDir: dir, lowers: [...lowers], vsize, uuid, parentUuid, tar: dl.file, turbo: true,
        mkfs: i === 0 ? { fstype: opts.fstype, uuid: uuidFromChainId(`mkfs ${chains[0]}`).toLowerCase() } : undefined,
        fstype: opts.fstype, limits: { maxEntrySize: vsize, maxTotalBytes: vsize, ...opts.limits }, out: lsmt, signal,
      }).catch(async (err: Error) => {
        await indexing.catch(() => undefined);
        throw new Error(`layer ${i + 1}/${layers.length} (${l.digest}): ${err.message}`);
      });
      await indexing.catch((err: Error) => {
        throw new Error(`layer ${i + 1}/${layers.length} (${l.digest}): gzip index: ${err.message}`);
      });
      if (gzipIndex) report.gzipIndexBytes = fs.statSync(gzipIndex).size;
      report.apply = built.apply;
      report.ms.apply = Date.now() - ta - built.commitMs;
      report.ms.commit = built.commitMs;
      report.lsmtBytes = built.commit.bytes;
      lowers.push({ meta: lsmt, target: dl.file, ...(gzipIndex ? { gzipIndex } : {}) });
      parentUuid = uuid;
      emit({ type: 'stage', layer: i, stage: 'apply', state: 'done', bytes: built.apply?.bytes ?? 0, ms: Date.now() - ta });

      // fs meta → ZFile (lz4, 4 KiB, as `overlaybd-commit -z`) → meta blob; pushed in the background.
      const tc = Date.now();
      const fsMeta = path.join(dir, TurboMembers.fsMeta(opts.fstype));
      await zfileCompress(lsmt, fsMeta, { algorithm: 'lz4', blockSize: 4096, overwriteHeader: true });
      report.fsMetaBytes = fs.statSync(fsMeta).size;
      const blobFile = path.join(dir, 'turboOCIv1.tar.gz');
      const blob = await writeMetaBlob([{ name: TurboMembers.fsMeta(opts.fstype), file: fsMeta }, { name: TurboMembers.marker },
        ...(gzipIndex ? [{ name: TurboMembers.gzipIndex, file: gzipIndex }] : [])], blobFile);
      fs.rmSync(fsMeta, { force: true });
      report.ms.compress = Date.now() - tc;
      report.digest = blob.digest;
      report.size = blob.size;
      metaDiffIds.push(blob.diffId);
      metaDescs.push({
        mediaType: metaLayerMediaType(opts.manifestKind), digest: blob.digest, size: blob.size,
        annotations: {
          [Annotations.version]: TurboVersion, [Annotations.blobDigest]: blob.digest, [Annotations.blobSize]: String(blob.size),
          [TurboAnnotations.targetDigest]: l.digest, [TurboAnnotations.targetMediaType]: targetMediaType(l.mediaType, kind === 'gzip'),
        },
      });
      pending.push((async () => {
        const tu = Date.now();
        emit({ type: 'stage', layer: i, stage: 'upload', state: 'start', bytes: 0, total: blob.size });
        report.push = (await dst.hasBlob(blob.digest, signal)) ? 'present' : 'uploaded';
        if (report.push === 'uploaded') await dst.pushBlobFile(blobFile, blob.digest, undefined, signal);
        report.targetPush = await ensureTarget(src, dst, l, dl.file, signal);
        report.ms.upload = Date.now() - tu;
        emit({ type: 'stage', layer: i, stage: 'upload', state: 'done', bytes: blob.size, total: blob.size, ms: report.ms.upload });
      })());
      pending[pending.length - 1].catch(() => undefined);
    }
    const results = await Promise.allSettled(pending);
    const failed = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    if (failed) throw failed.reason;
    for (const r of reports) emit({ type: 'layer-done', layer: r.index, report: r });
    const newConfig = Buffer.from(JSON.stringify({ ...config, rootfs: { type: 'layers', diff_ids: metaDiffIds } }));
    const configDigest = sha256(newConfig);
    const cfgFile = path.join(work, 'config.json');
    fs.writeFileSync(cfgFile, newConfig);
    if (!(await dst.hasBlob(configDigest, signal))) await dst.pushBlobFile(cfgFile, configDigest, undefined, signal);
    const manifest = buildManifest(opts.manifestKind, newConfig, metaDescs);
    const manifestDigest = await dst.putManifest(manifest, JSON.parse(manifest.toString()).mediaType, signal);
    return { source: src.name, target: dst.name, manifestDigest, configDigest, layers: reports, seconds: (Date.now() - t0) / 1000 };
  } catch (err) {
    await Promise.allSettled([...pending, ...downloads]);
    throw err;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** The source blob, unchanged, in DST's repository: present, mounted from SRC's repository, or copied. */
async function ensureTarget(src: ImageStore, dst: ImageStore, l: Descriptor, file: string, signal?: AbortSignal): Promise<'present' | 'mounted' | 'uploaded'> {
  if (await dst.hasBlob(l.digest, signal)) return 'present';
  if (await dst.mountBlob(l.digest, src.location, signal)) return 'mounted';
  await dst.pushBlobFile(file, l.digest, undefined, signal);
  return 'uploaded';
}
