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
import { openRemoteLower } from '../helpers/remote-lower';
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
  const open = (r: RemoteLowers, repo: string, digest: string, size: number) => openRemoteLower(r, registry.host, repo, digest, size);

  it('a blob\'s cache files are closed when the last device reading it releases it', async () => {
    const blob = crypto.randomBytes(4 * UNIT);
    const digest = await registry.pushBlob('cache/release', blob);
    const cacheDir = tmp.join('release');
    const r = lowers(cacheDir);
    try {
      const a = open(r, 'cache/release', digest, blob.length);
      const b = open(r, 'cache/release', digest, blob.length);
      // Three of its four units: a blob read whole would become a verified copy (another test).
      assert.ok((await a.file.read(0, 3 * UNIT)).equals(blob.subarray(0, 3 * UNIT)));
      await r.drainCache(); // a write in progress holds a direct descriptor of its own for its time
      const files = fdsUnder('self', cacheDir);
      assert.deepEqual(files.map((f) => path.basename(f)).sort(), [`sha256_${digest.slice(7)}.bitmap`, `sha256_${digest.slice(7)}.data`]);
      a.release();
      assert.equal(fdsUnder('self', cacheDir).length, 2, 'still read by the second device');
      b.release();
      await r.drainCache(); // units still queued for writing are written through briefly opened files
      assert.deepEqual(fdsUnder('self', cacheDir), [], 'no descriptor left into the cache');
      const st = r.cacheStats()!;
      assert.equal(st.openBlobs, 0);
      assert.equal(st.usedBytes, 3 * UNIT, 'the cached units stay, and count against cacheSizeGB');

      // The next device of the blob reads it from the cache without fetching.
      const before = r.totals().receivedBytes;
      const c = open(r, 'cache/release', digest, blob.length);
      assert.ok((await c.file.read(0, 3 * UNIT)).equals(blob.subarray(0, 3 * UNIT)));
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
      assert.ok((await a.file.read(0, 11 * UNIT)).equals(old.subarray(0, 11 * UNIT))); // not whole: no verified copy
      await r.drainCache();
      const b = open(r, 'cache/two', dRecent, recent.length); // another location
      assert.ok((await b.file.read(0, 11 * UNIT)).equals(recent.subarray(0, 11 * UNIT)));
      await r.drainCache();
      const st = r.cacheStats()!;
      assert.ok(st.usedBytes <= capacity, `used ${st.usedBytes} of ${capacity} over two locations of 704 KiB each`);
      assert.ok(st.evictedUnits >= 6, `evicted ${st.evictedUnits} units`);
      // The older location's blob lost its units first: the recent one is all in the cache.
      assert.equal(b.file.stats().presentUnits, 11, 'the most recently read blob keeps every unit');
      assert.ok(a.file.stats().presentUnits < 11, 'the older blob gave up units');
      a.release();
      b.release();
    } finally {
      await r.close();
    }

    // A later deviced counts what is on disk from the start, and a smaller size evicts at once.
    const smaller = lowers(cacheDir, capacity / 2 / 2 ** 30);
    try {
      const c = open(smaller, 'cache/two', dRecent, recent.length);
      await smaller.drainCache(); // eviction to the new size runs on the cache's writer
      const st = smaller.cacheStats()!;
      assert.ok(st.usedBytes <= capacity / 2, `used ${st.usedBytes} after opening with half the size`);
      assert.ok(st.blobs >= 2, 'entries of both locations are known');
      c.release();
    } finally {
      await smaller.close();
    }
  });

  it('verified copies count against cacheSizeGB: at most half of it when unused, the block cache gets the rest, a location\'s entry of a verified blob goes with its device', async () => {
    const capacity = 16 * UNIT;
    const cacheDir = tmp.join('verified');
    const r = lowers(cacheDir, capacity / 2 ** 30);
    const blobs = await Promise.all(['a', 'b', 'c', 'd'].map(async (n) => {
      const data = crypto.randomBytes(4 * UNIT);
      return { data, digest: await registry.pushBlob(`cache/v${n}`, data), repo: `cache/v${n}` };
    }));
    const verifiedFile = (digest: string) => path.join(cacheDir, 'verified', `sha256_${digest.slice(7)}`);
    /** Reads a blob whole through its location, shares it, and lets its device go. */
    const share = async (i: number) => {
      const { data, digest, repo } = blobs[i];
      const o = open(r, repo, digest, data.length);
      assert.ok((await o.file.read(0, data.length)).equals(data));
      await r.drainCache();
      assert.ok((await r.promoteComplete()) >= 1, `blob ${i} shared`);
      o.release();
      await r.drainCache();
    };
    try {
      await share(0);
      assert.ok(fs.existsSync(verifiedFile(blobs[0].digest)));
      let st = r.cacheStats();
      assert.equal(st.capacityBytes, capacity - 4 * UNIT, 'the block cache gets what the verified copy leaves');
      assert.equal(st.usedBytes, 0, 'the location\'s entry of the verified blob is gone');
      assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'locations')).flatMap((d) => fs.readdirSync(path.join(cacheDir, 'locations', d))), []);

      await share(1);
      const inUse = r.open(`${registry.url}/v2/${blobs[1].repo}/blobs/${blobs[1].digest}`, blobs[1].digest, blobs[1].data.length);
      assert.equal(inUse.kind, 'verified', 'a device of a verified blob reads the local copy');
      await share(2); // three copies: 12 units > 8, the least recently used idle one (a) goes
      assert.equal(fs.existsSync(verifiedFile(blobs[0].digest)), false, 'the oldest idle copy was removed');
      assert.ok(fs.existsSync(verifiedFile(blobs[1].digest)) && fs.existsSync(verifiedFile(blobs[2].digest)));
      await share(3); // b is in use: c goes, though b is older
      assert.ok(fs.existsSync(verifiedFile(blobs[1].digest)), 'a copy a device reads is never removed');
      assert.equal(fs.existsSync(verifiedFile(blobs[2].digest)), false);
      assert.equal(r.verifiedBytes(), 8 * UNIT);
      st = r.cacheStats();
      assert.equal(st.capacityBytes, capacity - 8 * UNIT);
      assert.ok(st.usedBytes + r.verifiedBytes() <= capacity);
      inUse.release();
    } finally {
      await r.close();
    }
  });
});
