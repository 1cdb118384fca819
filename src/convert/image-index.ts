// obdconv of whatever SRC names. A single manifest gives a single manifest. An index (multi-platform
// image) gives an index of the same shape: every image manifest of it is converted — or those whose
// platform `--platform` names — and takes its source's place (platform and annotations kept);
// attestation manifests (buildx: `vnd.docker.reference.type: attestation-manifest`) of converted
// platforms are kept byte for byte, their blobs made present in DST; platforms not chosen, and
// their attestations, are left out, as containerd's converter leaves them out. Platform manifests
// are put by digest; the index, put last, is what DST's tag names. With --referrer each converted
// manifest (and the index) is a referrer of its source.
import fs from 'node:fs';
import { MediaTypes, type Descriptor, type Platform } from '../registry';
import { ConversionCache } from './cache';
import type { ConvertOptions, ConvertResult } from './converter';
import { UnsupportedImageError } from './errors';
import { ArtifactTypes } from './manifest';
import { copyBlob, type ImageStore, type StoredManifest } from './store';

export type ConvertOne = (src: ImageStore, dst: ImageStore, opts: ConvertOptions) => Promise<ConvertResult>;

export interface ImageConvertOptions extends ConvertOptions {
  /** Platforms to convert from an index; empty: all of them. */
  platforms: Platform[];
  /** Push every converted manifest as a referrer of its source (OCI `subject`). */
  referrer: boolean;
  /** Tag the result as DST's reference (off in referrer mode unless DST names a tag of its own). */
  tag: boolean;
}

export interface PlatformResult extends ConvertResult {
  platform: Platform;
}

export interface KeptManifest {
  digest: string;
  /** the manifest it is an attestation of */
  of: string;
  blobs: ('present' | 'mounted' | 'uploaded')[];
}

export interface IndexConvertResult {
  source: string;
  target: string;
  /** the index pushed (named so for the same summary line as a single image) */
  manifestDigest: string;
  mediaType: string;
  platforms: PlatformResult[];
  attestations: KeptManifest[];
  dropped: { digest: string; platform: string; reason: string }[];
  seconds: number;
}

const attestationType = 'attestation-manifest';
const imageManifestTypes = new Set<string>([MediaTypes.ociManifest, MediaTypes.dockerManifest]);
const indexTypes = new Set<string>([MediaTypes.ociIndex, MediaTypes.dockerList]);

export function platformName(p: Platform | undefined): string {
  return p ? `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}` : 'no platform';
}

/** Whether an index entry's platform is one of `wanted` (a wanted platform without variant takes any variant). */
export function platformWanted(have: Platform | undefined, wanted: Platform[]): boolean {
  if (wanted.length === 0) return true;
  if (!have) return false;
  return wanted.some((w) => w.os === have.os && w.architecture === have.architecture && (!w.variant || !have.variant || w.variant === have.variant));
}

function isAttestation(d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] === attestationType;
}

export async function convertImageOrIndex(src: ImageStore, dst: ImageStore, opts: ImageConvertOptions, convertOne: ConvertOne):
  Promise<ConvertResult | IndexConvertResult> {
  const top = await src.resolveTop(opts.signal);
  if (!indexTypes.has(top.desc.mediaType) && !Array.isArray(top.json.manifests)) {
    return convertOne(src, dst, { ...opts, sourceManifest: top.desc,
      placement: { tag: opts.tag, ...(opts.referrer ? { subject: top.desc } : {}) } });
  }
  return convertIndex(src, dst, top, opts, convertOne);
}

async function convertIndex(src: ImageStore, dst: ImageStore, top: StoredManifest, opts: ImageConvertOptions, convertOne: ConvertOne):
  Promise<IndexConvertResult> {
  const t0 = Date.now();
  const signal = opts.signal;
  const entries = top.json.manifests ?? [];
  const nested = entries.find((d) => indexTypes.has(d.mediaType));
  if (nested) throw new UnsupportedImageError(`${src.name}: index ${top.desc.digest} holds another index (${nested.digest}); nested indexes are not converted`);
  const chosen = entries.filter((d) => imageManifestTypes.has(d.mediaType) && !isAttestation(d) && d.platform?.os !== 'unknown'
    && platformWanted(d.platform, opts.platforms));
  if (chosen.length === 0) {
    const have = entries.filter((d) => !isAttestation(d)).map((d) => platformName(d.platform));
    throw new UnsupportedImageError(`${src.name}: index ${top.desc.digest} has no image manifest for ${opts.platforms.map(platformName).join(', ') || 'any platform'} (has ${have.join(', ') || 'none'})`);
  }

  const converted = new Map<string, Descriptor>();
  const platforms: PlatformResult[] = [];
  for (const d of chosen) {
    opts.onEvent?.({ type: 'log', message: `platform ${platformName(d.platform)}: ${d.digest}` });
    const r = await convertOne(src, dst, { ...opts, platform: d.platform ?? opts.platform, sourceManifest: d,
      placement: { tag: false, ...(opts.referrer ? { subject: d } : {}) } });
    converted.set(d.digest, r.manifest);
    platforms.push({ ...r, platform: d.platform ?? opts.platform });
  }

  const attestations: KeptManifest[] = [];
  const dropped: IndexConvertResult['dropped'] = [];
  const manifests: Descriptor[] = [];
  const work = new ConversionCache(opts.cacheDir).tempDir();
  try {
    for (const d of entries) {
      const to = converted.get(d.digest);
      if (to) {
        manifests.push({ ...d, mediaType: to.mediaType, digest: to.digest, size: to.size });
      } else if (isAttestation(d) && converted.has(d.annotations?.['vnd.docker.reference.digest'] ?? '')) {
        attestations.push(await keepManifest(src, dst, d, work, signal));
        manifests.push(d);
      } else {
        const reason = isAttestation(d) ? 'attestation of a platform not converted' : imageManifestTypes.has(d.mediaType) ? 'platform not chosen' : `not an image manifest (${d.mediaType})`;
        dropped.push({ digest: d.digest, platform: platformName(d.platform), reason });
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }

  const { subject: _s, artifactType: _a, ...rest } = top.json;
  const index: Record<string, unknown> = opts.referrer
    ? { ...rest, mediaType: MediaTypes.ociIndex, artifactType: ArtifactTypes.native, manifests,
      subject: { mediaType: top.desc.mediaType, digest: top.desc.digest, size: top.desc.size } }
    : { ...rest, manifests };
  const body = Buffer.from(JSON.stringify(index, null, 2));
  const mediaType = (index.mediaType as string | undefined) ?? top.desc.mediaType;
  const digest = await dst.putManifest(body, mediaType, signal, { tag: opts.tag, ...(opts.referrer ? { subject: top.desc } : {}) });
  return { source: src.name, target: dst.name, manifestDigest: digest, mediaType, platforms, attestations, dropped,
    seconds: (Date.now() - t0) / 1000 };
}

/** A manifest of SRC put into DST unchanged (same bytes, same digest), its config and layers first. */
async function keepManifest(src: ImageStore, dst: ImageStore, d: Descriptor, work: string, signal?: AbortSignal): Promise<KeptManifest> {
  const m = await src.readManifest(d, signal);
  const blobs = [...(m.json.config ? [m.json.config] : []), ...(m.json.layers ?? [])];
  const how: KeptManifest['blobs'] = [];
  for (const b of blobs) how.push(await copyBlob(src, dst, b, work, signal));
  await dst.putManifest(m.body, m.desc.mediaType, signal, { tag: false });
  return { digest: d.digest, of: d.annotations?.['vnd.docker.reference.digest'] ?? '', blobs: how };
}
