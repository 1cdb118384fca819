// The converted image against the real thing: the same source image pulled by a private
// containerd with its overlayfs snapshotter and mounted with `ctr images mount` holds exactly the
// tree the converted overlaybd stack holds.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { TestContainerd } from '../helpers/containerd';
import { Cleanup, unmount } from '../helpers/loop';
import { TestRegistry } from '../helpers/registry';
import { makeTempDir, type TempDir } from '../helpers/tmp';
import { buildImage, makeRichLayers } from './images';
import { fetchConverted, mountStack, obdconv, pushLayout } from './support';
import { diffTrees, snapshotTree } from './tree';

describe('obdconv vs containerd overlayfs', () => {
  let tmp: TempDir;
  let reg: TestRegistry;
  let ctd: TestContainerd;
  const cleanup = new Cleanup();

  before(async () => {
    tmp = makeTempDir('obd-conv-ctd-');
    reg = new TestRegistry();
    await reg.start();
    ctd = new TestContainerd();
    await ctd.start();
  });

  after(async () => {
    cleanup.run();
    await ctd?.stop();
    await reg?.stop();
    tmp?.cleanup();
  });

  test('the converted stack equals the image unpacked by containerd’s overlayfs snapshotter', async () => {
    const tars = makeRichLayers(tmp.join('stage'), { smallFiles: 400, largeBytes: 4 << 20 });
    const img = buildImage(tmp.join('src'), tars, ['gzip', 'none', 'gzip']);
    await pushLayout(reg, 'lib/ctd', 'v1', img);
    const ref = `${reg.host}/lib/ctd:v1`;
    const r = await obdconv([ref, `${reg.host}/lib/ctd:v1-obd`, '--json', '--cache-dir', tmp.join('cache')]);
    assert.equal(r.code, 0, r.stderr);
    const converted = await fetchConverted(reg, 'lib/ctd', 'v1-obd', tmp.join('blobs'));
    mountStack(cleanup, converted.blobs, tmp.join('disk.raw'), tmp.join('mnt-obd'));

    await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'overlayfs', ref], { timeoutMs: 120_000 });
    const view = tmp.join('mnt-ctd');
    fs.mkdirSync(view);
    await ctd.ctr(['images', 'mount', '--snapshotter', 'overlayfs', ref, view], { timeoutMs: 120_000 });
    cleanup.add(`umount ${view}`, () => unmount(view)); // ours, outside containerd's dirs
    const want = snapshotTree(view);
    const got = snapshotTree(tmp.join('mnt-obd'), ['lost+found']);
    assert.ok(Object.keys(want).length > 400);
    assert.deepEqual(diffTrees(want, got), []);
    cleanup.run();
  });
});
