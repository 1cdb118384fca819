// A SIGKILLed obdconv leaves its layer's FUSE mount and loop device behind (nobody is left to clean
// them); the next run in the same cache dir removes them before it starts, and converts normally.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { obdconvBin } from '../helpers/bin';
import { loopsBackedBy, mountsUnder } from '../helpers/loop';
import { makeTempDir, type TempDir } from '../helpers/tmp';
import { buildImage, makeRichLayers } from './images';
import { obdconv } from './support';

async function waitFor(what: string, cond: () => boolean, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('obdconv killed mid-conversion', { timeout: 600_000 }, () => {
  let tmp: TempDir;
  before(() => {
    tmp = makeTempDir('obd-convkill-');
  });
  after(() => {
    for (const m of mountsUnder(tmp.path).reverse()) spawn('umount', ['-l', m]);
    tmp.cleanup();
  });

  test('SIGKILL while a layer is being built, then a normal run: no mounts, loop devices or work dirs are left', async () => {
    const tars = makeRichLayers(tmp.join('stage'), { smallFiles: 4000 });
    const image = buildImage(tmp.join('src'), tars, 'gzip');
    const cache = tmp.join('cache');
    const args = [obdconvBin(), `oci:${image.dir}`, `oci:${tmp.join('dst')}`, '--json', '--cache-dir', cache, '--vsize', '4'];

    const victim = spawn(process.execPath, args, { stdio: 'ignore' });
    const exited = new Promise((r) => victim.once('exit', r));
    // The layer device is up once the FUSE mount and its loop device exist under the work dir.
    await waitFor('a layer device of the first run', () => loopsBackedBy(cache).length > 0 && mountsUnder(cache).length > 0);
    victim.kill('SIGKILL');
    await exited;
    assert.ok(mountsUnder(cache).length > 0, 'the killed run left its FUSE mount (the case this test is about)');
    const leftDirs = fs.readdirSync(path.join(cache, 'tmp'));
    assert.equal(leftDirs.length, 1);
    assert.match(leftDirs[0], new RegExp(`^conv-${victim.pid}-`), 'work dirs are named after their owner');

    const r = await obdconv([`oci:${image.dir}`, `oci:${tmp.join('dst')}`, '--json', '--cache-dir', cache, '--vsize', '4']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /obdconv: cleanup after a killed run: unmounted .*conv-\d+-/);
    assert.match(r.stderr, /obdconv: cleanup after a killed run: removed .*conv-\d+-/);
    assert.equal(JSON.parse(r.stdout).layers.length, tars.length);
    assert.deepEqual(mountsUnder(cache), []);
    // The loop device is released once its FUSE file is gone: the kernel may take a moment.
    await waitFor('the loop devices of the killed run to be released', () => loopsBackedBy(cache).length === 0, 30_000);
    assert.deepEqual(fs.readdirSync(path.join(cache, 'tmp')), []);
  });
});
