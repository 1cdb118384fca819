// TurboOCI layers in the snapshotter (docs/formats.md, "TurboOCI"): the layer's meta blob — small —
// is fetched and unpacked at Prepare time into the snapshot's fs/ (the fs meta and the gzip index),
// and the layer is committed as a remote snapshot whose data comes from the original blob at run
// time. The meta blob is untrusted input: its digest is checked, and only the known members,
// as regular files of bounded size, are written.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { Labels } from '../../labels';
import type { LayerConfig } from '../../device/image-config';

export interface TurboLayer {
  kind: 'turbo';
  metaDigest: string;
  metaSize: number;
  targetDigest: string;
  gzip: boolean;
  imageRef: string;
}

const GZIP_TYPES = new Set(['application/vnd.docker.image.rootfs.diff.tar.gzip', 'application/vnd.oci.image.layer.v1.tar+gzip']);
const MEMBERS = new Set(['ext4.fs.meta', 'erofs.fs.meta', 'gzip.meta', '.turbo.ociv1', '.fastoci.overlaybd']);
const SHA256 = /^sha256:[0-9a-f]{64}$/;

/** The TurboOCI description of a layer from its labels; undefined when it is not one. Throws on bad values. */
export function turboFromLabels(labels: Record<string, string>): Omit<TurboLayer, 'imageRef'> & { imageRef?: string } | undefined {
  const target = labels[Labels.turboTargetDigest] ?? labels[Labels.fastociTargetDigest];
  if (target === undefined) return undefined;
  const type = labels[Labels.turboTargetMediaType] ?? labels[Labels.fastociTargetMediaType] ?? '';
  const digest = labels[Labels.blobDigest];
  const size = Number(labels[Labels.blobSize]);
  const bad = (what: string) => new Error(`TurboOCI layer: ${what}`);
  if (!SHA256.test(target)) throw bad(`label ${Labels.turboTargetDigest}=${JSON.stringify(target)} is not a sha256 digest`);
  if (!digest || !SHA256.test(digest)) throw bad(`label ${Labels.blobDigest}=${JSON.stringify(digest)} is not a sha256 digest`);
  if (!Number.isSafeInteger(size) || size <= 0) throw bad(`label ${Labels.blobSize}=${JSON.stringify(labels[Labels.blobSize])} must be a positive integer`);
  return { kind: 'turbo', metaDigest: digest, metaSize: size, targetDigest: target, gzip: GZIP_TYPES.has(type),
    imageRef: labels[Labels.imageRef] || labels[Labels.criImageRef] || undefined };
}

function octal(b: Buffer, off: number, len: number): number {
  const s = b.toString('latin1', off, off + len).replace(/\0.*$/, '').trim();
  if (!/^[0-7]*$/.test(s)) return NaN;
  return s === '' ? 0 : parseInt(s, 8);
}

/**
 * Checks the meta blob against its digest, unpacks its known members into dir (which must be empty),
 * and returns them. Fails on anything that is not a well-formed meta blob.
 */
export function unpackTurboMeta(blob: Buffer, layer: TurboLayer, dir: string): Record<string, string> {
  const what = `TurboOCI meta blob ${layer.metaDigest}`;
  const got = `sha256:${crypto.createHash('sha256').update(blob).digest('hex')}`;
  if (got !== layer.metaDigest) throw new Error(`${what}: content digest is ${got}`);
  let tar: Buffer;
  try {
    tar = zlib.gunzipSync(blob, { maxOutputLength: Math.min(2 ** 32, blob.length * 64 + (1 << 20)) });
  } catch (err) {
    throw new Error(`${what}: not a gzip'd tar (${(err as Error).message})`);
  }
  const out: Record<string, string> = {};
  for (let off = 0; off + 512 <= tar.length;) {
    const h = tar.subarray(off, off + 512);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < 512; i++) sum += i >= 148 && i < 156 ? 32 : h[i];
    if (octal(h, 148, 8) !== sum) throw new Error(`${what}: tar header at ${off}: bad checksum`);
    const size = octal(h, 124, 12);
    if (!Number.isSafeInteger(size)) throw new Error(`${what}: tar header at ${off}: bad size`);
    const type = String.fromCharCode(h[156] || 0x30);
    const name = h.toString('utf8', 0, 100).replace(/\0.*$/s, '').replace(/^\.\//, '');
    const data = off + 512;
    if (data + size > tar.length) throw new Error(`${what}: member ${name} runs past the end`);
    if (type === '0' && MEMBERS.has(name)) {
      if (out[name]) throw new Error(`${what}: member ${name} appears twice`);
      const file = path.join(dir, name);
      fs.writeFileSync(file, tar.subarray(data, data + size), { flag: 'wx', mode: 0o600 });
      out[name] = file;
    }
    off = data + Math.ceil(size / 512) * 512;
  }
  if (!out['ext4.fs.meta']) throw new Error(`${what}: no ext4.fs.meta member (only ext4 TurboOCI images are supported)`);
  if (layer.gzip && !out['gzip.meta']) throw new Error(`${what}: the target is gzip but there is no gzip.meta member`);
  return out;
}

/** The config.v1.json lower of an unpacked TurboOCI layer (ACI's field set). */
export function turboLowerConfig(layer: TurboLayer, fsDir: string): LayerConfig {
  return {
    ...(layer.gzip ? { gzipIndex: path.join(fsDir, 'gzip.meta') } : {}),
    file: path.join(fsDir, 'ext4.fs.meta'),
    targetDigest: layer.targetDigest,
    dir: fsDir,
  };
}
