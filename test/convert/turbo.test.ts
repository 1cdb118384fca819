// obdconv --turbo-oci end to end against the private registry: the source layer blobs stay in DST
// unchanged (by digest), only small meta blobs are added; the meta layers stacked with their source
// blobs (through the gzip index) hold exactly the tree an overlayfs unpack of the source gives.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { WarpLower } from '../../src/addon';
import { Cleanup, loopsBackedBy, mountsUnder } from '../helpers/loop';
import { TestRegistry } from '../helpers/registry';
import { makeTempDir, type TempDir } from '../helpers/tmp';
import { buildImage, makeRichLayers, tarTree, type BuiltImage } from './images';
import { fetchConverted, mountStack, obdconv, pushLayout, type ConvertedImage } from './support';
import { diffTrees, overlayReference, snapshotTree } from './tree';

interface TurboSummary {
  layers: { index: number; digest: string; size: number; target: string; targetPush: string; push: string }[];
}

/** Unpacks each meta blob and pairs it with its source blob: the lowers of a TurboOCI stack. */
export function turboLowers(conv: ConvertedImage, img: BuiltImage, dir: string): WarpLower[] {
  return conv.manifest.layers.map((l, i) => {
    const d = path.join(dir, `meta-${i}`);
    fs.mkdirSync(d, { recursive: true });
    execFileSync('tar', ['-xzf', conv.blobs[i], '-C', d]);
    const target = img.layers.find((s) => s.digest === l.annotations['containerd.io/snapshot/overlaybd/turbo-oci/target-digest']);
    assert.ok(target, `layer ${i}: target digest is one of the source layers`);
    const gz = path.join(d, 'gzip.meta');
    return { meta: path.join(d, 'ext4.fs.meta'), target: target.file, ...(fs.existsSync(gz) ? { gzipIndex: gz } : {}) };
  });
}

describe('obdconv --turbo-oci', () => {
  let tmp: TempDir;
  let reg: TestRegistry;
  let tars: string[];
  let image: BuiltImage;
  let converted: ConvertedImage;
  const cleanup = new Cleanup();

  before(async () => {
    tmp = makeTempDir('obd-turbo-');
    reg = new TestRegistry();
    await reg.start();
    tars = makeRichLayers(tmp.join('stage'));
    image = buildImage(tmp.join('src'), tars, ['gzip', 'none', 'gzip']);
    await pushLayout(reg, 'lib/rich', 'v1', image);
  });

  after(async () => {
    cleanup.run();
    await reg?.stop();
    tmp?.cleanup();
  });

  test('keeps the source layers by digest and adds one annotated meta blob per layer', async () => {
    const r = await obdconv([`${reg.host}/lib/rich:v1`, `${reg.host}/lib/rich:v1-turbo`, '--turbo-oci', '--json', '--cache-dir', tmp.join('cache')]);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as TurboSummary;
    assert.deepEqual(s.layers.map((l) => l.targetPush), ['present', 'present', 'present']); // same repository: nothing to copy
    converted = await fetchConverted(reg, 'lib/rich', 'v1-turbo', tmp.join('blobs'));
    const m = converted.manifest;
    assert.equal(m.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.equal(m.layers.length, 3);
    m.layers.forEach((l, i) => {
      assert.equal(l.mediaType, 'application/vnd.docker.image.rootfs.diff.tar.gzip');
      assert.deepEqual(l.annotations, {
        'containerd.io/snapshot/overlaybd/version': '0.1.0-turbo.ociv1',
        'containerd.io/snapshot/overlaybd/blob-digest': l.digest,
        'containerd.io/snapshot/overlaybd/blob-size': String(l.size),
        'containerd.io/snapshot/overlaybd/turbo-oci/target-digest': image.layers[i].digest,
        'containerd.io/snapshot/overlaybd/turbo-oci/target-media-type':
          i === 1 ? 'application/vnd.oci.image.layer.v1.tar' : 'application/vnd.oci.image.layer.v1.tar+gzip',
      });
      // the meta blob: fs meta, marker, and the gzip index for gzip sources
      const members = execFileSync('tar', ['-tzf', converted.blobs[i]], { encoding: 'utf8' }).trim().split('\n');
      assert.deepEqual(members, i === 1 ? ['ext4.fs.meta', '.turbo.ociv1'] : ['ext4.fs.meta', '.turbo.ociv1', 'gzip.meta']);
    });
    // diff_ids are the sha256 of the uncompressed meta tars
    converted.config.rootfs.diff_ids.forEach((d, i) => {
      const tar = execFileSync('gzip', ['-dc', converted.blobs[i]], { maxBuffer: 1 << 30 });
      assert.equal(d, `sha256:${require('node:crypto').createHash('sha256').update(tar).digest('hex')}`);
    });
    assert.equal(mountsUnder(tmp.join('cache')).length, 0);
    assert.equal(loopsBackedBy(tmp.join('cache')).length, 0);
  });

  test('meta layers over the unchanged source blobs hold the same tree as an overlayfs unpack', () => {
    mountStack(cleanup, turboLowers(converted, image, tmp.join('unpacked')), tmp.join('disk.raw'), tmp.join('mnt'));
    overlayReference(cleanup, tmp.join('ref'), tars, tmp.join('ref-mnt'));
    const want = snapshotTree(tmp.join('ref-mnt'));
    const got = snapshotTree(tmp.join('mnt'), ['lost+found']);
    assert.ok(Object.keys(want).length > 1500);
    assert.deepEqual(diffTrees(want, got), []);
    assert.equal(got['usr/lib/large.bin'].sha256, want['usr/lib/large.bin'].sha256);
    assert.equal(got['etc/xattr.txt'].xattrs['user.comment'], Buffer.from('hello xattr').toString('hex'));
    cleanup.run();
  });

  test('into another repository of the same registry the source layers are mounted, not uploaded', async () => {
    const r = await obdconv([`${reg.host}/lib/rich:v1`, `${reg.host}/other/rich:turbo`, '--turbo-oci', '--json', '--cache-dir', tmp.join('cache')]);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as TurboSummary;
    assert.deepEqual(s.layers.map((l) => l.targetPush), ['mounted', 'mounted', 'mounted']);
    for (const l of image.layers) {
      const res = await fetch(`${reg.url}/v2/other/rich/blobs/${l.digest}`, { method: 'HEAD' });
      assert.equal(res.status, 200, `${l.digest} present in other/rich`);
    }
  });

  test('for an image of mostly regular files the meta blobs are at most 5% of the source', async () => {
    const root = tmp.join('bulk');
    // text-like files (compress ~3x, as real binaries and sources do), a few MiB each and many small ones
    const words = Array.from({ length: 4096 }, (_, i) => `w${(i * 2654435761) % 100003}`);
    let seed = 1;
    const text = (n: number) => {
      const parts: string[] = [];
      let len = 0;
      while (len < n) {
        seed = (seed * 1103515245 + 12345) & 0x7fffffff;
        const w = words[seed % words.length];
        parts.push(w);
        len += w.length + 1;
      }
      return parts.join(' ').slice(0, n);
    };
    for (let i = 0; i < 24; i++) {
      const d = path.join(root, 'opt', `pkg${i % 6}`);
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, `big${i}.dat`), text(2 << 20));
    }
    for (let i = 0; i < 600; i++) {
      const d = path.join(root, 'usr', 'share', `d${i % 20}`);
      fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(d, `f${i}.txt`), text(8192 + (i * 977) % 40000));
    }
    const img = buildImage(tmp.join('bulk-src'), [tarTree(root, tmp.join('bulk.tar'))], 'gzip');
    await pushLayout(reg, 'lib/bulk', 'v1', img);
    const r = await obdconv([`${reg.host}/lib/bulk:v1`, `${reg.host}/lib/bulk:turbo`, '--turbo-oci', '--json', '--cache-dir', tmp.join('cache')]);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as TurboSummary;
    const meta = s.layers.reduce((a, l) => a + l.size, 0);
    const source = img.layers.reduce((a, l) => a + l.size, 0);
    assert.ok(meta <= 0.05 * source, `meta ${meta} bytes vs source ${source} bytes (${((100 * meta) / source).toFixed(2)}%)`);
    // and it still reads back right
    const conv = await fetchConverted(reg, 'lib/bulk', 'turbo', tmp.join('bulk-blobs'));
    mountStack(cleanup, turboLowers(conv, img, tmp.join('bulk-unpacked')), tmp.join('bulk.raw'), tmp.join('bulk-mnt'));
    const got = snapshotTree(tmp.join('bulk-mnt'), ['lost+found']);
    const want = snapshotTree(root);
    assert.deepEqual(diffTrees(want, got).filter((l) => !l.startsWith('differs: .:')), []);
    cleanup.run();
  });

  test('zstd source layers are refused with a clear error', async () => {
    const img = buildImage(tmp.join('zsrc'), [tars[0]], 'zstd');
    await pushLayout(reg, 'lib/z', 'v1', img);
    const r = await obdconv([`${reg.host}/lib/z:v1`, `${reg.host}/lib/z:turbo`, '--turbo-oci', '--json', '--cache-dir', tmp.join('cache')]);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr + r.stdout, /zstd layers cannot be served as TurboOCI/);
  });
});
