// deviced under systemd, with PID 1's part played by FakeSystemd (the test machines do not run
// systemd): it says READY=1, keeps each fuse-loop device's descriptors in the unit's fd store
// (FDSTORE=1, FDNAME=<id>.fuse / <id>.loop), takes the devices over from $LISTEN_FDS after a kill -9,
// and removes them from the store on detach. No obd-fd-holder is started.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { FakeSystemd } from '../helpers/fake-systemd';
import type { Cleanup } from '../helpers/loop';
import { TempDir } from '../helpers/tmp';
import { finishTestDir, holdersUnder, leftovers, mountDev, run, sha256File, startDeviced, startTestDir, umount, writeFileSynced, writeImageConfig } from './harness';
import { dropCaches } from '../helpers/io-workload';

let tmp: TempDir;
let cleanup: Cleanup;

beforeEach(() => ({ tmp, cleanup } = startTestDir('obd-systemd-')));
afterEach(() => finishTestDir(tmp, cleanup));

describe('deviced with the systemd fd store', { timeout: 300_000 }, () => {
  it('stores device descriptors with FDSTORE, takes the devices over from LISTEN_FDS after kill -9, removes them on detach', async () => {
    const sd = new FakeSystemd(tmp.path);
    cleanup.add('close fake systemd', () => sd.close());
    const d = await startDeviced(tmp, cleanup, {}, () => sd.launch());
    assert.ok(sd.drain().includes('READY=1'), 'READY=1 once serving');
    const r = d.obd('layer', 'create', '--vsize', '128M', tmp.join('w.data'), tmp.join('w.index'));
    assert.equal(r.status, 0, r.stderr);
    const dev = d.attach(writeImageConfig(tmp, 'w.json', { upper: { data: tmp.join('w.data'), index: tmp.join('w.index') } }), 'sd');
    assert.deepEqual(sd.storedNames(), ['sd.fuse', 'sd.loop']);
    assert.deepEqual(holdersUnder(tmp.path), [], 'no fd holder under systemd');
    run('mkfs.ext4', ['-q', '-F', dev]);
    const mnt = tmp.join('mnt');
    mountDev(cleanup, dev, mnt, 'rw');
    writeFileSynced(path.join(mnt, 'a.bin'), 1 << 20, 3);
    const sha = sha256File(path.join(mnt, 'a.bin'));

    dropCaches();
    await d.kill9();
    const reading = new Promise<number | null>((resolve) =>
      spawn('dd', [`if=${path.join(mnt, 'a.bin')}`, 'of=/dev/null', 'iflag=direct', 'bs=64k'], { stdio: 'ignore' }).once('exit', resolve),
    );
    await d.restart(); // with the stored fds as LISTEN_FDS, as systemd restarts a unit
    assert.equal(await reading, 0, 'the read issued while deviced was down completed');
    assert.match(d.logs(), /fdStore=systemd/);
    assert.match(d.logs(), /took over device from the previous deviced id=sd/);
    assert.deepEqual((await d.client.list()).map((x) => x.path), [dev]);
    assert.equal(sha256File(path.join(mnt, 'a.bin')), sha);

    umount(mnt);
    await d.detach('sd');
    assert.deepEqual(sd.storedNames(), [], 'FDSTOREREMOVE on detach');
    await d.stop();
    assert.ok(sd.drain().includes('STOPPING=1'));
    assert.deepEqual(holdersUnder(tmp.path), []);
    assert.deepEqual(leftovers(tmp.path), []);
  });
});
