// Writes an OCI image layout directory (image-layout spec: oci-layout, index.json, blobs/sha256/…)
// from ready layer blobs: the one builder behind the snapshotter, lazy and obdconv test images.
import fs from 'node:fs';
import path from 'node:path';
import { sha256 } from '../../src/digest';

export interface LayoutLayerInput {
  blob: Buffer;
  mediaType: string;
  diffId: string;
}

export interface WrittenLayout {
  dir: string;
  tag: string;
  manifest: Buffer;
  manifestDigest: string;
  config: Buffer;
  layers: { digest: string; size: number; mediaType: string; file: string; diffId: string }[];
}

function writeBlob(dir: string, data: Buffer): string {
  const d = sha256(data);
  const p = path.join(dir, 'blobs', 'sha256', d.slice(7));
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, data);
  return d;
}

/** `imageConfig` is the image config without `rootfs`, which is filled in from the layers' diff IDs. */
export function writeImageLayout(dir: string, tag: string, input: LayoutLayerInput[], imageConfig: Record<string, unknown>): WrittenLayout {
  fs.mkdirSync(dir, { recursive: true });
  const layers = input.map(({ blob, mediaType, diffId }) => {
    const digest = writeBlob(dir, blob);
    return { digest, size: blob.length, mediaType, file: path.join(dir, 'blobs', 'sha256', digest.slice(7)), diffId };
  });
  const { history, ...rest } = imageConfig;
  const config = Buffer.from(JSON.stringify({ ...rest, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) }, ...(history ? { history } : {}) }));
  const configDigest = writeBlob(dir, config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
  }));
  const manifestDigest = writeBlob(dir, manifest);
  fs.writeFileSync(path.join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{
    mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifest.length,
    annotations: { 'org.opencontainers.image.ref.name': tag } }] }));
  return { dir, tag, manifest, manifestDigest, config, layers };
}
