// Test images for obdconv: OCI image layouts built from layer tars (GNU tar of prepared trees, or
// the e_ext4 fixture tars), optionally pushed to the private registry.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

export type Compression = 'none' | 'gzip' | 'zstd';

export interface BuiltImage {
  dir: string;            // OCI layout
  manifest: Buffer;
  manifestDigest: string;
  config: Buffer;
  layers: { digest: string; size: number; mediaType: string; file: string; diffId: string }[];
}

function sha(b: Buffer): string {
  return 'sha256:' + crypto.createHash('sha256').update(b).digest('hex');
}

function writeBlob(dir: string, data: Buffer): string {
  const d = sha(data);
  const p = path.join(dir, 'blobs', 'sha256', d.slice(7));
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, data);
  return d;
}

const layerTypes: Record<Compression, string> = {
  none: 'application/vnd.oci.image.layer.v1.tar',
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
};

function compress(tar: Buffer, c: Compression): Buffer {
  if (c === 'gzip') return zlib.gzipSync(tar, { level: 1 });
  if (c === 'zstd') return execFileSync('zstd', ['-q', '-1', '-c'], { input: tar, maxBuffer: 1 << 30 });
  return tar;
}

/** An OCI layout (tag `latest`) whose layers are the given uncompressed tars. */
export function buildImage(dir: string, tars: string[], compression: Compression | Compression[] = 'gzip'): BuiltImage {
  fs.mkdirSync(dir, { recursive: true });
  const layers = tars.map((t, i) => {
    const raw = fs.readFileSync(t);
    const c = Array.isArray(compression) ? compression[i % compression.length] : compression;
    const blob = compress(raw, c);
    const digest = writeBlob(dir, blob);
    return { digest, size: blob.length, mediaType: layerTypes[c], file: path.join(dir, 'blobs', 'sha256', digest.slice(7)), diffId: sha(raw) };
  });
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created: '2023-11-14T22:13:20Z', created_by: `layer ${i}` })),
  }));
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
    annotations: { 'org.opencontainers.image.ref.name': 'latest' } }] }));
  return { dir, manifest, manifestDigest, config, layers };
}
