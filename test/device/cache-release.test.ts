// The block cache of deviced's remote lowers as an operator sees it: a blob's cache files are open
// only while a device reads the blob, and cacheSizeGB bounds the cache of every registry location
// together (least recently used units go first, whichever blob or location they belong to), also
// counting what earlier runs left on disk.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { defaultConfig } from '../../src/config';
import { RemoteLowers } from '../../src/device/remote';
import { silentLogger } from '../../src/log';
import { TestRegistry } from '../helpers/registry';
import { fdsUnder } from '../helpers/proc-fds';
import { makeTempDir, TempDir } from '../helpers/tmp';

const UNIT = 64 << 10;
const MiB = 1 << 20;

describe('block cache of remote lowers: open files and size', { timeout: 120_000 }, () => {
  const registry = new TestRegistry();
  let tmp: TempDir;
  before(async () => {
    tmp = makeTempDir('obd-cache-release-');
    await registry.start();
  });
  after(async () => {
    await registry.stop();
    tmp.cleanup();
  });

  const lowers = (cacheDir: string, cacheSizeGB = 1) => {
    const cfg = defaultConfig();
    cfg.cacheConfig = { ...cfg.cacheConfig, cacheDir, cacheSizeGB, refillSize: UNIT, readAheadSize: 0 };
    cfg.credentialFile = '';
    return new RemoteLowers(cfg, silentLogger);
  };
  const open = (r: RemoteLowers, repo: string, digest: string, size: number) => {
    const o = r.open(`${registry.url}/v2/${repo}/blobs/${digest}`, digest, size);
    assert.equal(o.kind, 'remote');
    if (o.kind !== 'remote') throw new Error('unreachable');
    return o;
  };

  it('a blob\'s cache files are closed when the last device reading it releases it', async () => {
    const blob = crypto.randomBytes(4 * UNIT);
    const digest = await registry.pushBlob('cache/release', blob);
    const cacheDir = tmp.join('release');
    const r = lowers(cacheDir);
    try {
      const a = open(r, 'cache/release', digest, blob.length);
      const b = open(r, 'cache/release', digest, blob.length);
      assert.ok((await a.file.read(0, blob.length)).equals(blob));
      const files = fdsUnder('self', cacheDir);
      assert.deepEqual(files.map((f) => path.basename(f)).sort(), [`sha256_${digest.slice(7)}.bitmap`, `sha256_${digest.slice(7)}.data`]);
      a.release();
      assert.equal(fdsUnder('self', cacheDir).length, 2, 'still read by the second device');
      b.release();
      await r.drainCache(); // units still queued for writing are written through briefly opened files
      assert.deepEqual(fdsUnder('self', cacheDir), [], 'no descriptor left into the cache');
      const st = r.cacheStats()!;
      assert.equal(st.openBlobs, 0);
      assert.equal(st.usedBytes, blob.length, 'the cached units stay, and count against cacheSizeGB');

      // The next device of the blob reads it from the cache without fetching.
      const before = r.totals().receivedBytes;
      const c = open(r, 'cache/release', digest, blob.length);
      assert.ok((await c.file.read(0, blob.length)).equals(blob));
      assert.equal(r.totals().receivedBytes, before, 'served from the cache entry, reopened');
      c.release();
      assert.deepEqual(fdsUnder('self', cacheDir), []);
    } finally {
      await r.close();
    }
  });

  it('cacheSizeGB bounds the caches of all registry locations together, evicting the least recently used units', async () => {
    const capacity = 1 * MiB;
    const sizeGB = capacity / 2 ** 30;
    const old = crypto.randomBytes(12 * UNIT);
    const recent = crypto.randomBytes(12 * UNIT);
    const dOld = await registry.pushBlob('cache/one', old);
    const dRecent = await registry.pushBlob('cache/two', recent);
    const cacheDir = tmp.join('bound');
    const r = lowers(cacheDir, sizeGB);
    try {
      const a = open(r, 'cache/one', dOld, old.length);
      assert.ok((await a.file.read(0, old.length)).equals(old));
      await r.drainCache();
      const b = open(r, 'cache/two', dRecent, recent.length); // another location
      assert.ok((await b.file.read(0, recent.length)).equals(recent));
      await r.drainCache();
      const st = r.cacheStats()!;
      assert.ok(st.usedBytes <= capacity, `used ${st.usedBytes} of ${capacity} over two locations of 768 KiB each`);
      assert.ok(st.evictedUnits >= 8, `evicted ${st.evictedUnits} units`);
      // The older location's blob lost its units first: the recent one is whole in the cache.
      assert.equal(b.file.stats().presentUnits, 12, 'the most recently read blob is whole');
      assert.ok(a.file.stats().presentUnits < 12, 'the older blob gave up units');
      a.release();
      b.release();
    } finally {
      await r.close();
    }

    // A later deviced counts what is on disk from the start, and a smaller size evicts at once.
    const smaller = lowers(cacheDir, capacity / 2 / 2 ** 30);
    try {
      const c = open(smaller, 'cache/two', dRecent, recent.length);
      const st = smaller.cacheStats()!;
      assert.ok(st.usedBytes <= capacity / 2, `used ${st.usedBytes} after opening with half the size`);
      assert.ok(st.blobs >= 2, 'entries of both locations are known');
      c.release();
    } finally {
      await smaller.close();
    }
  });
});
