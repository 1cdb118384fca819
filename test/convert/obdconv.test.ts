// obdconv end to end against the private registry: the converted layer stack holds exactly the
// tree an overlayfs unpack of the source gives; blobs are valid overlaybd layers as ACI writes
// them; the conversion cache reuses layers shared between images.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { after, before, describe, test } from 'node:test';
import { layerInfo, zfileInspect } from '../../src/addon';
import { sha256 } from '../../src/digest';
import { tarWrapPrefix } from '../../src/convert/tar-wrap';
import { obdBin } from '../helpers/bin';
import { Cleanup, loopsBackedBy, mountsUnder } from '../helpers/loop';
import { TestRegistry } from '../helpers/registry';
import { makeTempDir, type TempDir } from '../helpers/tmp';
import { buildImage, buildRawImage, makeRichLayers, type BuiltImage } from './images';
import { fetchConverted, mountStack, obdconv, pushLayout, type ConvertedImage } from './support';
import { diffTrees, overlayReference, snapshotTree } from './tree';

interface Summary {
  manifestDigest: string;
  layers: { index: number; digest: string; size: number; cached: boolean; push: string }[];
}

describe('obdconv', () => {
  let tmp: TempDir;
  let reg: TestRegistry;
  let tars: string[];
  let image: BuiltImage;
  let converted: ConvertedImage;
  let summary: Summary;
  const cleanup = new Cleanup();

  before(async () => {
    tmp = makeTempDir('obd-conv-');
    reg = new TestRegistry();
    await reg.start();
    tars = makeRichLayers(tmp.join('stage'));
    image = buildImage(tmp.join('src-a'), tars, ['gzip', 'zstd', 'none']);
    await pushLayout(reg, 'lib/rich', 'v1', image);
  });

  after(async () => {
    cleanup.run();
    await reg?.stop();
    tmp?.cleanup();
  });

  test('converts a multi-layer image from the registry and pushes an ACI-shaped manifest', async () => {
    const r = await obdconv([`${reg.host}/lib/rich:v1`, `${reg.host}/lib/rich:v1-obd`, '--json', '--cache-dir', tmp.join('cache')]);
    assert.equal(r.code, 0, r.stderr);
    summary = JSON.parse(r.stdout) as Summary;
    assert.equal(summary.layers.length, 3);
    assert.ok(summary.layers.every((l) => !l.cached && l.push === 'uploaded'));
    converted = await fetchConverted(reg, 'lib/rich', 'v1-obd', tmp.join('blobs-a'));
    const m = converted.manifest;
    assert.equal(m.mediaType, 'application/vnd.docker.distribution.manifest.v2+json');
    assert.equal(m.config.mediaType, 'application/vnd.docker.container.image.v1+json');
    assert.deepEqual(converted.config.rootfs.diff_ids, m.layers.map((l) => l.digest));
    for (const l of m.layers) {
      assert.equal(l.mediaType, 'application/vnd.oci.image.layer.v1.tar');
      assert.deepEqual(l.annotations, {
        'containerd.io/snapshot/overlaybd/version': '0.1.0',
        'containerd.io/snapshot/overlaybd/blob-digest': l.digest,
        'containerd.io/snapshot/overlaybd/blob-size': String(l.size),
        'containerd.io/snapshot/overlaybd/blob-fs-type': 'ext4',
      });
    }
    assert.equal(mountsUnder(tmp.join('cache')).length, 0);
    assert.equal(loopsBackedBy(tmp.join('cache')).length, 0);
    assert.deepEqual(fs.readdirSync(tmp.join('cache', 'tmp')), []);
  });

  test('converted blobs are tar-wrapped ZFile LSMT layers with a uuid chain', () => {
    const shown = execFileSync(process.execPath, [obdBin(), 'layer', 'info', converted.blobs[0]], { encoding: 'utf8' });
    assert.match(shown, /type: +tar-wrapped\+zfile\+lsmt-sealed/);
    let parent = '00000000-0000-0000-0000-000000000000';
    for (const f of converted.blobs) {
      const info = layerInfo(f);
      assert.deepEqual(info.formats.slice(-1), ['lsmt-sealed']);
      assert.equal(info.header!.flags, 0x07);
      assert.equal(info.trailer!.flags, 0x06);
      assert.equal(info.header!.virtualSize, 64 * 1024 ** 3);
      assert.equal(info.trailer!.indexSize % 256, 0);
      assert.equal(info.header!.parentUuid, parent);
      parent = info.header!.uuid;
      assert.ok(info.zfile && info.zfile.algorithm === 'lz4' && info.zfile.blockSize === 4096 && info.zfile.verify && info.zfile.headerOverwritten);
      // tar wrapper exactly as overlaybd-commit -t writes it; payload starts with the ZFile magic
      const data = fs.readFileSync(f);
      const payloadSize = data.length - 1536 - 1024 - ((512 - ((data.length - 1536 - 1024) % 512)) % 512);
      const prefix = data.subarray(0, 1536);
      const declared = Number(/size=(\d+)/.exec(prefix.subarray(512, 1024).toString('latin1'))![1]);
      assert.ok(declared <= payloadSize + 511 && declared >= payloadSize - 511);
      assert.ok(prefix.equals(tarWrapPrefix(declared)));
      assert.equal(data.subarray(1536, 1536 + 8).toString('latin1'), 'ZFile\0\u0001\0');
      const payload = path.join(path.dirname(f), 'payload.zfile');
      fs.writeFileSync(payload, data.subarray(1536, 1536 + declared));
      const z = zfileInspect(payload);
      assert.equal(z.blockSize, 4096);
      fs.rmSync(payload);
    }
  });

  test('the converted block stack holds the same file tree as an overlayfs unpack of the source', () => {
    mountStack(cleanup, converted.blobs, tmp.join('disk-a.raw'), tmp.join('mnt-a'));
    overlayReference(cleanup, tmp.join('ref'), tars, tmp.join('ref-mnt'));
    const want = snapshotTree(tmp.join('ref-mnt'));
    const got = snapshotTree(tmp.join('mnt-a'), ['lost+found']);
    assert.ok(Object.keys(want).length > 1500);
    assert.deepEqual(diffTrees(want, got), []);
    // the checks that matter most, spelled out
    assert.equal(got['etc/deleted.txt'], undefined);
    assert.equal(got['gone'], undefined);
    assert.equal(got['opaque/keep-not.txt'], undefined);
    assert.equal(got['opaque/old/a.txt'], undefined);
    assert.equal(got['to-dir'].type, 'dir');
    assert.equal(got['to-file'].type, 'file');
    assert.equal(got['etc/hello.txt'].sha256, want['etc/hello.txt'].sha256);
    assert.equal(got['etc/xattr.txt'].xattrs['user.comment'], Buffer.from('hello xattr').toString('hex'));
    assert.equal(got['dev/blk'].rdev, '7:200');
    assert.equal(got['home/user/owned.txt'].uid, 1000);
    cleanup.run();
  });

  test('a second image sharing the base layers reuses the cached conversions (mounted, not uploaded)', async () => {
    const l3 = path.join(tmp.path, 'stage', 'other-3');
    fs.mkdirSync(path.join(l3, 'srv'), { recursive: true });
    fs.writeFileSync(path.join(l3, 'srv', 'other.txt'), 'a different top layer\n');
    const { tarTree } = await import('./images');
    const other = buildImage(tmp.join('src-b'), [tars[0], tars[1], tarTree(l3, tmp.join('other-3.tar'))], ['gzip', 'zstd', 'none']);
    await pushLayout(reg, 'lib/other', 'v1', other);
    const r = await obdconv([`${reg.host}/lib/other:v1`, `${reg.host}/lib/other:v1-obd`, '--json', '--cache-dir', tmp.join('cache')]);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as Summary;
    assert.deepEqual(s.layers.map((l) => [l.cached, l.push]), [[true, 'mounted'], [true, 'mounted'], [false, 'uploaded']]);
    assert.deepEqual(s.layers.slice(0, 2).map((l) => l.digest), summary.layers.slice(0, 2).map((l) => l.digest));

    // the same image again into its own repository: nothing is converted or uploaded
    const again = await obdconv([`${reg.host}/lib/rich:v1`, `${reg.host}/lib/rich:v1-obd`, '--json', '--cache-dir', tmp.join('cache')]);
    assert.equal(again.code, 0, again.stderr);
    const s2 = JSON.parse(again.stdout) as Summary;
    assert.deepEqual(s2.layers.map((l) => [l.cached, l.push]), [[true, 'present'], [true, 'present'], [true, 'present']]);
    assert.equal(s2.manifestDigest, summary.manifestDigest);
  });

  test('a layer whose decompressed tar does not match its diff_id is refused (plain, gzip, zstd), naming the layer and both digests', async () => {
    const stage = tmp.join('stage', 'liar');
    fs.mkdirSync(path.join(stage, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(stage, 'etc', 'hello.txt'), 'not what the diff_id says\n');
    const { tarTree } = await import('./images');
    const tar = fs.readFileSync(tarTree(stage, tmp.join('liar.tar')));
    const real = sha256(tar);
    const claimed = image.layers[0].diffId; // another image's layer: a hit in the conversion cache if it were trusted
    const blobs = {
      'application/vnd.oci.image.layer.v1.tar': tar,
      'application/vnd.oci.image.layer.v1.tar+gzip': zlib.gzipSync(tar),
      'application/vnd.oci.image.layer.v1.tar+zstd': execFileSync('zstd', ['-q', '-c'], { input: tar }),
    };
    for (const [mediaType, data] of Object.entries(blobs)) {
      const name = mediaType.replace(/\W+/g, '-');
      const liar = buildRawImage(tmp.join(`src-liar-${name}`), [{ data, mediaType, diffId: claimed }]);
      const r = await obdconv([`oci:${liar.dir}`, `oci:${tmp.join(`dst-liar-${name}`)}`, '--json', '--cache-dir', tmp.join('cache')]);
      assert.notEqual(r.code, 0, `${mediaType}: converted although the diff_id is wrong`);
      assert.match(r.stderr, new RegExp(`layer 1/1 \\(${liar.layers[0].digest}\\): the decompressed tar is ${real}, but the image config's diff_id is ${claimed}`));
      assert.equal(fs.existsSync(tmp.join(`dst-liar-${name}`, 'index.json')), false, 'no image written');
    }
    // The honest image still converts from the cache: the liar planted nothing.
    const again = buildImage(tmp.join('src-honest'), tars.slice(0, 1), 'gzip');
    const ok = await obdconv([`oci:${again.dir}`, `oci:${tmp.join('dst-honest')}`, '--json', '--cache-dir', tmp.join('cache-honest')]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  test('oci: layout in and out, zstd ZFile, OCI manifest', async () => {
    const e = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'overlaybd', 'e_ext4');
    const src = buildImage(tmp.join('src-oci'), [path.join(e, 'e1.tar'), path.join(e, 'e2.tar')], 'none');
    const r = await obdconv([`oci:${src.dir}`, `oci:${tmp.join('dst-oci')}:conv`, '--json', '--oci', '--algorithm', 'zstd', '--bs', '64',
      '--vsize', '8', '--cache-dir', tmp.join('cache-oci')]);
    assert.equal(r.code, 0, r.stderr);
    const index = JSON.parse(fs.readFileSync(tmp.join('dst-oci', 'index.json'), 'utf8'));
    assert.equal(index.manifests[0].annotations['org.opencontainers.image.ref.name'], 'conv');
    const m = JSON.parse(fs.readFileSync(tmp.join('dst-oci', 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8'));
    assert.equal(m.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    const blobs = m.layers.map((l: { digest: string }) => tmp.join('dst-oci', 'blobs', 'sha256', l.digest.slice(7)));
    for (const b of blobs) {
      const info = layerInfo(b);
      assert.equal(info.zfile!.algorithm, 'zstd');
      assert.equal(info.zfile!.blockSize, 65536);
      assert.equal(info.header!.virtualSize, 8 * 1024 ** 3);
    }
  });

  test('--mkfs=false stacks on the upstream ext4_64 base and gives the tree upstream overlaybd-apply gives (e_ext4)', async () => {
    const fx = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'overlaybd');
    const e = path.join(fx, 'e_ext4');
    fs.mkdirSync(tmp.join('base'));
    execFileSync('tar', ['-xzf', path.join(fx, 'ext4_64.tar.gz'), '-C', tmp.join('base')]);
    const src = buildImage(tmp.join('src-e'), [path.join(e, 'e1.tar'), path.join(e, 'e2.tar')], 'gzip');
    const r = await obdconv([`oci:${src.dir}`, `oci:${tmp.join('dst-e')}`, '--json', '--mkfs', 'false', '--base-layer', tmp.join('base', 'ext4_64'),
      '--cache-dir', tmp.join('cache-e')]);
    assert.equal(r.code, 0, r.stderr);
    const index = JSON.parse(fs.readFileSync(tmp.join('dst-e', 'index.json'), 'utf8'));
    const m = JSON.parse(fs.readFileSync(tmp.join('dst-e', 'blobs', 'sha256', index.manifests[0].digest.slice(7)), 'utf8'));
    assert.equal(m.layers[0].digest, 'sha256:c3a417552a6cf9ffa959b541850bab7d7f08f4255425bf8b48c85f7b36b378d9');
    assert.equal(m.layers[0].size, 4737695);
    const blobs = m.layers.map((l: { digest: string }) => tmp.join('dst-e', 'blobs', 'sha256', l.digest.slice(7)));
    assert.equal(layerInfo(blobs[1]).header!.parentUuid, 'C02FB491-B4D4-4904-8684-A014D032AF78');
    mountStack(cleanup, blobs, tmp.join('disk-e.raw'), tmp.join('mnt-e'));
    const upstream = [tmp.join('base', 'ext4_64'), path.join(fx, 'e_ext4', 'e1.commit.lz4_bs4k.zfile'), path.join(fx, 'e_ext4', 'e2.commit.lz4_bs4k.zfile')];
    mountStack(cleanup, upstream, tmp.join('disk-up.raw'), tmp.join('mnt-up'));
    const got = snapshotTree(tmp.join('mnt-e'), ['lost+found']);
    assert.deepEqual(diffTrees(snapshotTree(tmp.join('mnt-up'), ['lost+found']), got), []);
    assert.equal(got['etc/hello.txt'].sha256, '7758c833cd7223ea1daac0da4c211b83831fca98e6a72a42e27899d23d16ebdc');
    assert.equal(got['opaque/old.txt'], undefined);
    cleanup.run();
  });

  test('usage errors are one line', async () => {
    const r = await obdconv(['oci:/nonexistent-dir', 'oci:/tmp/x', '--bs', '3']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr.trim(), /^error: .*--bs/);
    const r2 = await obdconv(['oci:/nonexistent-dir', `oci:${tmp.join('never')}`, '--cache-dir', tmp.join('cache-x')]);
    assert.equal(r2.code, 1);
    assert.equal(r2.stderr.trim().split('\n').length, 1, r2.stderr);
    assert.match(r2.stderr, /^obdconv: .*nonexistent-dir/);
  });
});
