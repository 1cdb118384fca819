// Media types, annotations and the config/manifest shapes of an overlaybd image as
// accelerated-container-image writes them (docs/formats.md, docs/labels.md): layers are
// `application/vnd.oci.image.layer.v1.tar` (the blob is a tar-wrapped ZFile/LSMT, so its digest is
// also its diff_id) annotated with the overlaybd version, blob digest, size and fs type.
import crypto from 'node:crypto';
import { sha256 } from '../digest';
import { Labels } from '../labels';
import { UnsupportedImageError } from './errors';
import type { Descriptor, ImageManifest } from '../registry';

export const OverlaybdVersion = '0.1.0';
export const LayerMediaType = 'application/vnd.oci.image.layer.v1.tar';
/** Layer annotations; containerd passes them to the snapshotter as the labels of the same name. */
export const Annotations = {
  version: Labels.overlaybdVersion,
  blobDigest: Labels.blobDigest,
  blobSize: Labels.blobSize,
  fsType: Labels.fsType,
} as const;

export const ManifestTypes = {
  docker: { manifest: 'application/vnd.docker.distribution.manifest.v2+json', config: 'application/vnd.docker.container.image.v1+json' },
  oci: { manifest: 'application/vnd.oci.image.manifest.v1+json', config: 'application/vnd.oci.image.config.v1+json' },
} as const;

/** artifactType of a converted manifest pushed as a referrer of its source (ACI's userspace convertor --referrer). */
export const ArtifactTypes = {
  native: 'application/vnd.containerd.overlaybd.native.v1+json',
  turbo: 'application/vnd.containerd.overlaybd.turbo.v1+json',
} as const;

const sourceLayerTypes = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

/** A layer uuid derived from its chain id, so a re-conversion gives the same uuids. */
export function uuidFromChainId(chainId: string): string {
  const h = crypto.createHash('sha256').update(`overlaybd-uuid ${chainId}`).digest('hex');
  const v = `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${((parseInt(h[16], 16) & 3) | 8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
  return v.toUpperCase();
}

export interface ImageConfigJson {
  rootfs?: { type: string; diff_ids: string[] };
  history?: { created?: string; created_by?: string; empty_layer?: boolean; comment?: string }[];
  [k: string]: unknown;
}

/** Checks the source before any work: layer media types and a consistent rootfs. */
export function checkSource(manifest: ImageManifest, config: ImageConfigJson, name: string): string[] {
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.layers.length) {
    throw new UnsupportedImageError(`${name}: config has ${diffIds.length} diff_ids but the manifest has ${manifest.layers.length} layers`);
  }
  manifest.layers.forEach((l, i) => {
    if (l.annotations?.[Annotations.blobDigest]) throw new UnsupportedImageError(`${name}: layer ${i} (${l.digest}) is already an overlaybd layer`);
    if (!sourceLayerTypes.has(l.mediaType)) throw new UnsupportedImageError(`${name}: layer ${i} (${l.digest}) has unsupported media type ${l.mediaType}`);
  });
  return diffIds;
}

export function layerDescriptor(digest: string, size: number, fsType: string): Descriptor {
  return {
    mediaType: LayerMediaType, digest, size,
    annotations: { [Annotations.version]: OverlaybdVersion, [Annotations.blobDigest]: digest, [Annotations.blobSize]: String(size),
      [Annotations.fsType]: fsType },
  };
}

export function buildConfig(source: ImageConfigJson, layerDigests: string[], baseAdded: boolean): Buffer {
  const cfg: ImageConfigJson = { ...source, rootfs: { type: 'layers', diff_ids: layerDigests } };
  if (baseAdded && Array.isArray(source.history)) {
    cfg.history = [{ created: '2021-03-01T00:00:00Z', created_by: 'overlaybd ext4 base layer', comment: 'obdconv' }, ...source.history];
  }
  return Buffer.from(JSON.stringify(cfg));
}

/** What makes a manifest a referrer (OCI only): the manifest it refers to and what kind of artifact it is. */
export interface ReferrerFields {
  subject: Descriptor;
  artifactType: string;
}

export function buildManifest(kind: 'docker' | 'oci', config: Buffer, layers: Descriptor[], annotations?: Record<string, string>,
  referrer?: ReferrerFields): Buffer {
  const t = ManifestTypes[kind];
  if (referrer && kind !== 'oci') throw new UnsupportedImageError('a referrer (subject, artifactType) needs an OCI manifest');
  const m: Record<string, unknown> = {
    schemaVersion: 2,
    mediaType: t.manifest,
    ...(referrer ? { artifactType: referrer.artifactType } : {}),
    config: { mediaType: t.config, digest: sha256(config), size: config.length },
    layers,
  };
  if (referrer) m.subject = { mediaType: referrer.subject.mediaType, digest: referrer.subject.digest, size: referrer.subject.size };
  if (annotations && kind === 'oci') m.annotations = annotations;
  return Buffer.from(JSON.stringify(m, null, 2));
}
