// Test images built in TS: tar layers (ustar, written here), an OCI image layout directory, and a
// push with skopeo to a registry on 127.0.0.1. `busyboxTestImage()` is the standard multi-layer image
// of the snapshotter tests, made from /bin/busybox (busybox-static): overwrites, a whiteout, an
// opaque dir, symlinks and a hardlink, with what a container must see listed in `expect`.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { sha256 } from '../../src/digest';
import { writeImageLayout } from './oci-layout';

export interface TarEntry {
  path: string; // relative, no leading "/"
  type: 'file' | 'dir' | 'symlink' | 'hardlink' | 'fifo';
  mode?: number;
  data?: Buffer | string;
  /** symlink target, or the path of the hardlinked file (same layer) */
  target?: string;
}

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width - 1, '0') + '\0';
}

function header(e: TarEntry, size: number): Buffer {
  const h = Buffer.alloc(512);
  const name = e.type === 'dir' && !e.path.endsWith('/') ? e.path + '/' : e.path;
  if (Buffer.byteLength(name) > 100) throw new Error(`tar: name too long for ustar: ${name}`);
  h.write(name, 0, 100);
  const mode = e.mode ?? (e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644);
  h.write(octal(mode, 8), 100);
  h.write(octal(0, 8), 108); // uid
  h.write(octal(0, 8), 116); // gid
  h.write(octal(size, 12), 124);
  h.write(octal(1_700_000_000, 12), 136); // fixed mtime: reproducible digests
  h.write('        ', 148); // checksum placeholder
  h.write({ file: '0', hardlink: '1', symlink: '2', dir: '5', fifo: '6' }[e.type], 156);
  if (e.target) h.write(e.target, 157, 100);
  h.write('ustar\0', 257);
  h.write('00', 263);
  h.write('root', 265);
  h.write('root', 297);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148);
  return h;
}

export function tar(entries: TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.type === 'file' ? Buffer.from(e.data ?? '') : Buffer.alloc(0);
    parts.push(header(e, data.length), data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}


export interface ImageSpec {
  layers: TarEntry[][] | Buffer[]; // entries, or ready-made tars
  cmd?: string[];
  gzip?: boolean;
}

export interface OciLayout {
  dir: string;
  tag: string;
  manifestDigest: string;
  diffIds: string[];
}

/** Writes an OCI image layout (oci-layout, index.json, blobs/sha256/*) for `spec` under `dir`. */
export function writeOciLayout(dir: string, tag: string, spec: ImageSpec): OciLayout {
  const gzip = spec.gzip ?? true;
  const layers = spec.layers.map((l) => {
    const raw = Buffer.isBuffer(l) ? l : tar(l);
    return {
      blob: gzip ? zlib.gzipSync(raw, { level: 1 }) : raw,
      mediaType: `application/vnd.oci.image.layer.v1.tar${gzip ? '+gzip' : ''}`,
      diffId: sha256(raw),
    };
  });
  const written = writeImageLayout(dir, tag, layers, {
    architecture: 'amd64',
    os: 'linux',
    config: { Env: ['PATH=/bin'], Cmd: spec.cmd ?? ['/bin/sh'] },
  });
  return { dir, tag, manifestDigest: written.manifestDigest, diffIds: written.layers.map((l) => l.diffId) };
}

/** `skopeo copy oci:DIR:TAG docker://HOST/REPO:TAG` to a plain-http registry. */
export function pushOciLayout(layout: OciLayout, registryHost: string, repo: string): Promise<string> {
  const ref = `${registryHost}/${repo}:${layout.tag}`;
  return new Promise((resolve, reject) => {
    execFile(
      'skopeo',
      ['copy', '--quiet', '--dest-tls-verify=false', `oci:${layout.dir}:${layout.tag}`, `docker://${ref}`],
      { timeout: 300_000, maxBuffer: 16 << 20 },
      (err, _stdout, stderr) => (err ? reject(new Error(`skopeo copy to ${ref}: ${stderr || err.message}`)) : resolve(ref)),
    );
  });
}

const APPLETS = ['sh', 'cat', 'ls', 'echo', 'test', 'stat', 'readlink', 'du', 'sleep', 'find', 'true'];

/** The multi-layer busybox test image and what a container of it must see. */
export function busyboxTestImage(): { spec: ImageSpec; script: string; expectedOutput: string } {
  const busybox = fs.readFileSync('/bin/busybox');
  const base: TarEntry[] = [
    { path: 'bin', type: 'dir' },
    { path: 'bin/busybox', type: 'file', mode: 0o755, data: busybox },
    ...APPLETS.map((a): TarEntry => ({ path: `bin/${a}`, type: 'symlink', target: 'busybox' })),
    { path: 'etc', type: 'dir' },
    { path: 'etc/msg', type: 'file', data: 'layer1\n' },
    { path: 'data', type: 'dir' },
    { path: 'data/keep.txt', type: 'file', data: 'keep\n' },
    { path: 'data/gone.txt', type: 'file', data: 'gone\n' },
    { path: 'opq', type: 'dir' },
    { path: 'opq/old1', type: 'file', data: 'old1\n' },
    { path: 'opq/old2', type: 'file', data: 'old2\n' },
    { path: 'tmp', type: 'dir', mode: 0o1777 },
    { path: 'proc', type: 'dir' },
    { path: 'dev', type: 'dir' },
    { path: 'sys', type: 'dir' },
  ];
  const second: TarEntry[] = [
    { path: 'etc', type: 'dir' },
    { path: 'etc/msg', type: 'file', data: 'layer2\n' },
    { path: 'data', type: 'dir' },
    { path: 'data/.wh.gone.txt', type: 'file' },
    { path: 'data/hard-src', type: 'file', data: 'hardlinked\n' },
    { path: 'data/hard-dst', type: 'hardlink', target: 'data/hard-src' },
    { path: 'data/sym', type: 'symlink', target: 'keep.txt' },
    { path: 'opq', type: 'dir' },
    { path: 'opq/.wh..wh..opq', type: 'file' },
    { path: 'opq/new', type: 'file', data: 'new\n' },
  ];
  const third: TarEntry[] = [
    { path: 'etc', type: 'dir' },
    { path: 'etc/msg', type: 'file', data: 'layer3\n' },
    { path: 'data', type: 'dir' },
    { path: 'data/abs-sym', type: 'symlink', target: '/etc/msg' },
  ];
  const script = [
    'cat /etc/msg',
    'ls /opq',
    'test -e /data/gone.txt && echo gone-present || echo gone-absent',
    'cat /data/sym',
    'cat /data/abs-sym',
    'cat /data/hard-dst',
    'test "$(stat -c %i /data/hard-src)" = "$(stat -c %i /data/hard-dst)" && echo hardlink-ok',
  ].join('; ');
  const expectedOutput = ['layer3', 'new', 'gone-absent', 'keep', 'layer3', 'hardlinked', 'hardlink-ok'].join('\n') + '\n';
  return { spec: { layers: [base, second, third] }, script, expectedOutput };
}

/** An image of about `totalMiB` of incompressible data over `layerCount` layers (benchmarks). */
export function largeImageSpec(totalMiB: number, layerCount: number): ImageSpec {
  const base = busyboxTestImage().spec.layers[0] as TarEntry[];
  const perLayer = Math.max(1, Math.floor(totalMiB / layerCount));
  const layers: TarEntry[][] = [base];
  for (let i = 0; i < layerCount; i++) {
    const files: TarEntry[] = [{ path: `big${i}`, type: 'dir' }];
    for (let f = 0; f < perLayer; f++) files.push({ path: `big${i}/f${f}`, type: 'file', data: crypto.randomBytes(1 << 20) });
    layers.push(files);
  }
  return { layers, gzip: false };
}
