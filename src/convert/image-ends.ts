// The two ends every conversion shares (plain and TurboOCI): which source manifest it reads, and how
// the converted config and manifest are put — config first, manifest last, so a failed conversion
// leaves no manifest; tagged as DST or by digest (a platform of an index); with --referrer, as a
// referrer of its source manifest.
import fs from 'node:fs';
import path from 'node:path';
import { sha256 } from '../digest';
import type { Descriptor } from '../registry';
import type { ConvertOptions } from './converter';
import { buildManifest } from './manifest';
import type { ImageStore, ResolvedImage } from './store';
import { UnsupportedImageError } from './errors';

/** The manifest `opts.sourceManifest` names, else SRC's reference resolved for `opts.platform`. */
export async function readSourceManifest(src: ImageStore, opts: ConvertOptions, signal?: AbortSignal): Promise<ResolvedImage> {
  if (!opts.sourceManifest) return src.resolve(opts.platform, signal);
  const m = await src.readManifest(opts.sourceManifest, signal);
  if (!Array.isArray(m.json.layers) || !m.json.config) {
    throw new UnsupportedImageError(`${src.name}: ${m.desc.digest} (${m.desc.mediaType}) is not an image manifest`);
  }
  return { manifest: m.json as unknown as ResolvedImage['manifest'], mediaType: m.desc.mediaType, digest: m.desc.digest };
}

/** Pushes the converted config (unless present) and then its manifest; `artifactType` names it when it is a referrer. */
export async function pushConvertedImage(dst: ImageStore, workDir: string, config: Buffer, layers: Descriptor[], opts: ConvertOptions,
  artifactType: string, signal?: AbortSignal): Promise<{ manifest: Descriptor; configDigest: string }> {
  const configDigest = sha256(config);
  if (!(await dst.hasBlob(configDigest, signal))) {
    const file = path.join(workDir, 'config.json');
    fs.writeFileSync(file, config);
    await dst.pushBlobFile(file, configDigest, undefined, signal);
  }
  const subject = opts.placement?.subject;
  const body = buildManifest(opts.manifestKind, config, layers, undefined, subject ? { subject, artifactType } : undefined);
  const mediaType = (JSON.parse(body.toString('utf8')) as { mediaType: string }).mediaType;
  const digest = await dst.putManifest(body, mediaType, signal, opts.placement);
  return { manifest: { mediaType, digest, size: body.length }, configDigest };
}
