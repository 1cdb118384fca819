// The registry-side TurboOCI format shared by obdconv and the snapshotter (docs/formats.md,
// "TurboOCI"): one meta blob per source layer — a gzip'd tar with the fs meta image, a marker file
// and (gzip sources) the gzip index — annotated with where the original layer blob is.
import { Labels } from '../labels';

export const TurboVersion = '0.1.0-turbo.ociv1';
export const LegacyFastOciVersion = '0.1.0-fastoci';

export const TurboAnnotations = {
  targetDigest: Labels.turboTargetDigest,
  targetMediaType: Labels.turboTargetMediaType,
  legacyTargetDigest: Labels.fastociTargetDigest,
  legacyTargetMediaType: Labels.fastociTargetMediaType,
} as const;

/** Members of the meta blob, in the order they are written. */
export const TurboMembers = {
  fsMeta: (fstype: string) => `${fstype}.fs.meta`,
  marker: '.turbo.ociv1',
  legacyMarker: '.fastoci.overlaybd',
  gzipIndex: 'gzip.meta',
} as const;

export const GzipLayerTypes = new Set(['application/vnd.docker.image.rootfs.diff.tar.gzip', 'application/vnd.oci.image.layer.v1.tar+gzip']);

/** target-media-type: family from the source media type, gzip or plain from the content. */
export function targetMediaType(sourceMediaType: string, gzip: boolean): string {
  const docker = sourceMediaType.startsWith('application/vnd.docker.');
  if (docker) return gzip ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.docker.image.rootfs.diff.tar';
  return gzip ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar';
}

/** Layer media type of the meta blob (it is a gzip'd tar), by manifest kind. */
export function metaLayerMediaType(kind: 'docker' | 'oci'): string {
  return kind === 'docker' ? 'application/vnd.docker.image.rootfs.diff.tar.gzip' : 'application/vnd.oci.image.layer.v1.tar+gzip';
}
