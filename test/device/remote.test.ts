// deviced with registry-backed lowers (repoBlobUrl + digest): the upstream ext4 fixture stack pushed
// to a private docker-registry, attached lazily, mounted, read; only what is read is fetched.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { Cleanup } from '../helpers/loop';
import { TestRegistry } from '../helpers/registry';
import { makeTempDir, TempDir } from '../helpers/tmp';
import { FIXTURES, leftovers, mountDev, run, startDeviced, umount, writeImageConfig } from './harness';

let tmp: TempDir;
let cleanup: Cleanup;
const registry = new TestRegistry();

before(() => registry.start());
after(() => registry.stop());
beforeEach(() => {
  tmp = makeTempDir('obd-device-remote-');
  cleanup = new Cleanup();
});
afterEach(() => {
  try {
    cleanup.run();
  } finally {
    const left = leftovers(tmp.path);
    tmp.cleanup();
    assert.deepEqual(left, [], 'the test left kernel state behind');
  }
});

describe('deviced remote lowers', { timeout: 300_000 }, () => {
  it('attaches a registry-backed stack lazily; a fresh deviced reads it again from the cache', async () => {
    run('tar', ['-xzf', path.join(FIXTURES, 'ext4_64.tar.gz'), '-C', tmp.path, 'ext4_64']);
    const files = [tmp.join('ext4_64'), path.join(FIXTURES, 'e_ext4', 'e1.commit.lz4_bs4k.zfile'), path.join(FIXTURES, 'e_ext4', 'e2.commit.lz4_bs4k.zfile')];
    const lowers = [];
    let total = 0;
    for (const f of files) {
      const data = fs.readFileSync(f);
      total += data.length;
      lowers.push({ digest: await registry.pushBlob('obd/fixture', data), size: data.length, dir: tmp.join('nowhere') });
    }
    const d = await startDeviced(tmp, cleanup, { cacheConfig: { cacheDir: tmp.join('cache'), cacheSizeGB: 1 } });
    const cfg = writeImageConfig(tmp, 'remote.json', { repoBlobUrl: `${registry.url}/v2/obd/fixture/blobs`, lowers, resultFile: tmp.join('result') });
    const dev = d.attach(cfg, 'remote');
    assert.equal(fs.readFileSync(tmp.join('result'), 'utf8'), 'success');
    const mnt = tmp.join('mnt');
    mountDev(cleanup, dev, mnt, 'ro,noload');
    assert.equal(fs.readFileSync(path.join(mnt, 'etc/hello.txt'), 'utf8'), 'hello overlaybd, modified in e2\n');
    const data = fs.readFileSync(path.join(mnt, 'bin/data.bin'));
    assert.ok(data.every((b, i) => b === (i * 7) % 251));
    const st = (await d.client.stats('remote'))[0];
    assert.ok(st.fetchedBytes > 0, 'blocks came from the registry');
    assert.ok(st.fetchedBytes <= total, `fetched ${st.fetchedBytes} of ${total} bytes`);
    assert.ok(st.cacheMisses > 0);
    umount(mnt);
    await d.client.detach('remote');
    await d.stop();

    // Same cache, new process: everything read before comes from the cache, nothing from the registry.
    await d.restart();
    const again = d.attach(cfg, 'remote');
    mountDev(cleanup, again, mnt, 'ro,noload');
    assert.ok(fs.readFileSync(path.join(mnt, 'bin/data.bin')).every((b, i) => b === (i * 7) % 251));
    const st2 = (await d.client.stats('remote'))[0];
    assert.equal(st2.fetchedBytes, 0, 'served from the persisted block cache');
    assert.ok(st2.cacheHits > 0);
    umount(mnt);
    await d.client.detach('remote');
    await d.stop();
  });
});
