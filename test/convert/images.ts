// Test images for obdconv: OCI image layouts built from layer tars (GNU tar of prepared trees, or
// the e_ext4 fixture tars), optionally pushed to the private registry; a two-platform index.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { sha256 } from '../../src/digest';
import type { Descriptor } from '../../src/registry';
import { busyboxTestImage, tar, type TarEntry } from '../helpers/images';
import { writeImageLayout, type LayoutLayerInput, type WrittenLayout } from '../helpers/oci-layout';
import type { TestRegistry } from '../helpers/registry';

export type Compression = 'none' | 'gzip' | 'zstd';

export type BuiltImage = WrittenLayout;

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
  return writeLayout(dir, tars.map((t, i) => {
    const raw = fs.readFileSync(t);
    const c = Array.isArray(compression) ? compression[i % compression.length] : compression;
    return { blob: compress(raw, c), mediaType: layerTypes[c], diffId: sha256(raw) };
  }));
}

/** The diff_id a blob should have: the sha256 of its decompressed bytes (of the blob itself when it does not decompress). */
function diffIdOf(data: Buffer): string {
  try {
    if (data[0] === 0x1f && data[1] === 0x8b) return sha256(zlib.gunzipSync(data));
    if (data.subarray(0, 4).equals(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return sha256(execFileSync('zstd', ['-dcq'], { input: data, maxBuffer: 1 << 30 }));
  } catch {
    // a deliberately broken stream
  }
  return sha256(data);
}

/** An OCI layout whose layer blobs are given as they are (e.g. a deliberately broken gzip stream). */
export function buildRawImage(dir: string, blobs: { data: Buffer; mediaType: string; diffId?: string }[]): BuiltImage {
  return writeLayout(dir, blobs.map((b) => ({ blob: b.data, mediaType: b.mediaType, diffId: b.diffId ?? diffIdOf(b.data) })));
}

function writeLayout(dir: string, input: LayoutLayerInput[]): BuiltImage {
  return writeImageLayout(dir, 'latest', input, {
    architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/usr/bin:/bin'], Cmd: ['/bin/sh'] },
    history: input.map((_, i) => ({ created: '2023-11-14T22:13:20Z', created_by: `layer ${i}` })),
  });
}

function setXattr(p: string, name: string, value: string): void {
  execFileSync('python3', ['-c', 'import os,sys; os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode(), follow_symlinks=False)', p, name, value]);
}

/** GNU tar of a staged tree: pax format (xattrs), sparse files detected, numeric owners, "./" names. */
export function tarTree(dir: string, out: string): string {
  execFileSync('tar', ['--format=posix', '--xattrs', '--xattrs-include=*', '--sparse', '--numeric-owner', '--sort=name',
    '-C', dir, '-cf', out, '.']);
  return out;
}

function pattern(size: number, seed: number): Buffer {
  const b = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(x, Math.min(i, size - 4));
  }
  return b;
}

/**
 * Three layers exercising what OCI layers can hold: many small files, one large file, a sparse
 * file, hardlinks, symlinks, a fifo and device nodes, owners and odd modes, xattrs; then
 * whiteouts of files and directories, an opaque directory, a file replacing a directory and a
 * directory replacing a file, a rewritten hardlink member.
 */
export function makeRichLayers(work: string, opts: { smallFiles?: number; largeBytes?: number } = {}): string[] {
  const small = opts.smallFiles ?? 1500;
  const large = opts.largeBytes ?? 40 << 20; // > 32 MiB of incompressible data: the chunked upload path
  const l1 = path.join(work, 'stage-1');
  const w = (rel: string, data: string | Buffer, mode = 0o644) => {
    const p = path.join(l1, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, data);
    fs.chmodSync(p, mode);
    return p;
  };
  fs.mkdirSync(l1, { recursive: true });
  for (let i = 0; i < small; i++) w(`usr/share/many/d${i % 30}/f${i}.txt`, `small file ${i}\n`.repeat(1 + (i % 7)));
  w('usr/lib/large.bin', pattern(large, 7));
  const sparse = w('var/sparse.img', '');
  const fd = fs.openSync(sparse, 'r+');
  fs.writeSync(fd, Buffer.from('head'), 0, 4, 0);
  fs.writeSync(fd, Buffer.from('middle'), 0, 6, 8 << 20);
  fs.ftruncateSync(fd, 32 << 20);
  fs.closeSync(fd);
  w('etc/hello.txt', 'hello\n');
  fs.linkSync(path.join(l1, 'etc/hello.txt'), path.join(l1, 'etc/hello.link'));
  fs.linkSync(path.join(l1, 'etc/hello.txt'), path.join(l1, 'usr/hello.link2'));
  fs.symlinkSync('hello.txt', path.join(l1, 'etc/rel.sym'));
  fs.symlinkSync('/usr/lib/large.bin', path.join(l1, 'etc/abs.sym'));
  fs.symlinkSync('missing/target', path.join(l1, 'etc/dangling.sym'));
  fs.mkdirSync(path.join(l1, 'dev'), { recursive: true });
  execFileSync('mkfifo', ['-m', '0640', path.join(l1, 'dev/fifo')]);
  execFileSync('mknod', ['-m', '0666', path.join(l1, 'dev/null'), 'c', '1', '3']);
  execFileSync('mknod', ['-m', '0660', path.join(l1, 'dev/blk'), 'b', '7', '200']);
  const owned = w('home/user/owned.txt', 'mine\n', 0o600);
  fs.chownSync(owned, 1000, 1001);
  fs.chownSync(path.join(l1, 'home/user'), 1000, 1001);
  w('usr/bin/setuid', '#!/bin/sh\n', 0o4755);
  fs.mkdirSync(path.join(l1, 'tmp'));
  fs.chmodSync(path.join(l1, 'tmp'), 0o1777);
  setXattr(w('etc/xattr.txt', 'has xattrs\n'), 'user.comment', 'hello xattr');
  setXattr(path.join(l1, 'etc/xattr.txt'), 'user.other', 'v2');
  setXattr(path.join(l1, 'etc'), 'user.dir', 'on a dir');
  w('opaque/old/a.txt', 'old a\n');
  w('opaque/keep-not.txt', 'gone later\n');
  w('gone/dir/file.txt', 'whole dir removed\n');
  w('to-dir', 'a file that becomes a directory\n');
  w('to-file/inner.txt', 'a directory that becomes a file\n');
  w('etc/deleted.txt', 'deleted in layer 2\n');
  fs.mkdirSync(path.join(l1, 'emptydir'));
  fs.utimesSync(path.join(l1, 'etc/hello.txt'), 1600000000, 1600000000);

  const l2 = path.join(work, 'stage-2');
  const w2 = (rel: string, data: string | Buffer, mode = 0o644) => {
    const p = path.join(l2, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, data);
    fs.chmodSync(p, mode);
    return p;
  };
  w2('etc/.wh.deleted.txt', '');
  w2('.wh.gone', '');
  w2('opaque/.wh..wh..opq', '');
  w2('opaque/new.txt', 'new in opaque\n');
  w2('opaque/old/b.txt', 'recreated below opaque\n');
  w2('.wh.to-dir', '');
  w2('to-dir/child.txt', 'now a directory\n');
  w2('to-file', 'now a file\n', 0o600);
  w2('etc/hello.link', 'hardlink member rewritten\n');
  w2('usr/share/many/d3/f3.txt', 'rewritten small file\n');
  w2('usr/share/many/.wh.d4', '');
  fs.chmodSync(path.join(l2, 'etc'), 0o750);

  const l3 = path.join(work, 'stage-3');
  fs.mkdirSync(path.join(l3, 'etc'), { recursive: true });
  fs.writeFileSync(path.join(l3, 'etc/rel.sym'), 'symlink replaced by a file\n');
  fs.writeFileSync(path.join(l3, 'etc/.wh.abs.sym'), '');
  fs.symlinkSync('../usr/lib/large.bin', path.join(l3, 'etc/large.sym'));
  fs.mkdirSync(path.join(l3, 'usr/lib'), { recursive: true });
  fs.writeFileSync(path.join(l3, 'usr/lib/large.bin'), pattern(1 << 20, 99));
  return [l1, l2, l3].map((d, i) => tarTree(d, path.join(work, `layer-${i + 1}.tar`)));
}

export interface PushedIndex {
  ref: string;
  /** the same index as an OCI layout directory (tag as pushed) */
  layout: string;
  index: { digest: string; body: Buffer; json: { mediaType: string; annotations?: Record<string, string>; manifests: Descriptor[] } };
  amd64: WrittenLayout;
  arm64: WrittenLayout;
  /** the arm64 image's one file standing for a binary */
  arm64Binary: { path: string; data: Buffer };
  attestation: { digest: string; body: Buffer; blobs: string[] };
  /** what a container of the amd64 image must print for `script` */
  script: string;
  expectedOutput: string;
}

function gzipLayer(raw: Buffer): LayoutLayerInput {
  return { blob: zlib.gzipSync(raw, { level: 1 }), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: sha256(raw) };
}

/** The busybox test image (test/helpers/images.ts) as a linux/amd64 OCI layout with gzip layers. */
export function busyboxLayout(dir: string, tag: string): WrittenLayout {
  return writeImageLayout(dir, tag, (busyboxTestImage().spec.layers as TarEntry[][]).map((l) => gzipLayer(tar(l))),
    { architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] } });
}

async function pushLayoutByDigest(reg: TestRegistry, repo: string, img: WrittenLayout): Promise<Descriptor> {
  await reg.pushBlob(repo, img.config);
  for (const l of img.layers) await reg.pushBlob(repo, fs.readFileSync(l.file));
  const mediaType = JSON.parse(img.manifest.toString()).mediaType as string;
  await reg.pushManifest(repo, img.manifestDigest, img.manifest, mediaType);
  return { mediaType, digest: img.manifestDigest, size: img.manifest.length };
}

/**
 * A buildx-shaped two-platform index pushed as REPO:TAG and written as an OCI layout in DIR:
 * linux/amd64 (the busybox test image), linux/arm64/v8 (structural only: one file stands for its
 * binary) and an in-toto attestation manifest of the amd64 image (platform unknown/unknown,
 * `vnd.docker.reference.*` annotations).
 */
export async function pushTwoPlatformIndex(reg: TestRegistry, repo: string, tag: string, dir: string): Promise<PushedIndex> {
  const bb = busyboxTestImage();
  const amd64 = busyboxLayout(dir, tag);
  const arm64Binary = { path: 'bin/app', data: Buffer.concat([Buffer.from('\x7fELF arm64 stand-in\n'), crypto.randomBytes(64 << 10)]) };
  const arm64 = writeImageLayout(dir, tag, [
    gzipLayer(tar([{ path: 'bin', type: 'dir' }, { path: arm64Binary.path, type: 'file', mode: 0o755, data: arm64Binary.data }])),
    gzipLayer(tar([{ path: 'etc', type: 'dir' }, { path: 'etc/arch', type: 'file', data: 'arm64\n' }])),
  ], { architecture: 'arm64', variant: 'v8', os: 'linux', config: { Cmd: ['/bin/app'] } });
  const amd64Desc = await pushLayoutByDigest(reg, repo, amd64);
  const arm64Desc = await pushLayoutByDigest(reg, repo, arm64);

  const statement = Buffer.from(JSON.stringify({ _type: 'https://in-toto.io/Statement/v0.1', predicateType: 'https://slsa.dev/provenance/v0.2',
    subject: [{ name: 'app', digest: { sha256: amd64.manifestDigest.slice(7) } }], predicate: { builder: { id: 'test' } } }));
  const attConfig = Buffer.from(JSON.stringify({ architecture: 'unknown', os: 'unknown', config: {}, rootfs: { type: 'layers', diff_ids: [sha256(statement)] } }));
  const attBody = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(attConfig), size: attConfig.length },
    layers: [{ mediaType: 'application/vnd.in-toto+json', digest: sha256(statement), size: statement.length,
      annotations: { 'in-toto.io/predicate-type': 'https://slsa.dev/provenance/v0.2' } }] }));
  await reg.pushBlob(repo, attConfig);
  await reg.pushBlob(repo, statement);
  await reg.pushManifest(repo, sha256(attBody), attBody, 'application/vnd.oci.image.manifest.v1+json');

  const json = {
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [
      { ...amd64Desc, platform: { architecture: 'amd64', os: 'linux' } },
      { ...arm64Desc, platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
      { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(attBody), size: attBody.length,
        annotations: { 'vnd.docker.reference.digest': amd64.manifestDigest, 'vnd.docker.reference.type': 'attestation-manifest' },
        platform: { architecture: 'unknown', os: 'unknown' } },
    ],
    annotations: { 'org.opencontainers.image.title': 'two platforms' },
  };
  const body = Buffer.from(JSON.stringify(json));
  await reg.pushManifest(repo, tag, body, json.mediaType);
  // The same index as an OCI layout: both images' blobs are in DIR already; index.json tags the index.
  for (const b of [statement, attConfig, attBody, body]) fs.writeFileSync(path.join(dir, 'blobs', 'sha256', sha256(b).slice(7)), b);
  fs.writeFileSync(path.join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: json.mediaType,
    digest: sha256(body), size: body.length, annotations: { 'org.opencontainers.image.ref.name': tag } }] }));
  return {
    ref: `${reg.host}/${repo}:${tag}`, layout: dir, index: { digest: sha256(body), body, json }, amd64, arm64, arm64Binary,
    attestation: { digest: sha256(attBody), body: attBody, blobs: [sha256(attConfig), sha256(statement)] },
    script: bb.script, expectedOutput: bb.expectedOutput,
  };
}
