// Remote blobs through the addon's block cache: right bytes from the registry, one fetch per unit
// for concurrent readers, eviction under a small limit, read-ahead, failures as EIO in bounded
// time, sha256 check of fully cached blobs, and crash safety under kill -9.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createRemoteFetcher, openBlockCache, openRemoteFile, type BlobFetchFn } from '../../src/addon';
import { BackgroundDownload, BlobSource, RegistryClient } from '../../src/registry';
import { FaultProxy } from '../helpers/fault-proxy';
import { TestRegistry } from '../helpers/registry';

const KiB = 1024;
const MiB = 1024 * KiB;
const popcount = (b: number) => {
  let n = 0;
  for (; b; b &= b - 1) n++;
  return n;
};
const sha = (b: Uint8Array) => 'sha256:' + crypto.createHash('sha256').update(b).digest('hex');

function tmpDir(t: { after: (fn: () => void) => void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-cache-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** A fetch function over a buffer that counts calls and can be slowed down or broken. */
function localSource(data: Buffer, opts: { delayMs?: number; corrupt?: boolean; fail?: string } = {}) {
  const calls: { offset: number; length: number }[] = [];
  const fn: BlobFetchFn = async (_digest, offset, length) => {
    calls.push({ offset, length });
    if (opts.delayMs) await new Promise((r) => setTimeout(r, opts.delayMs));
    if (opts.fail) throw new Error(opts.fail);
    const out = Buffer.from(data.subarray(offset, offset + length));
    if (opts.corrupt) out[0] ^= 0xff;
    return out;
  };
  return { fn, calls };
}

async function readAndCheck(file: { read(o: number, l: number): Promise<Buffer> }, data: Buffer, off: number, len: number) {
  const got = await file.read(off, len);
  const want = Buffer.alloc(len);
  data.copy(want, 0, Math.min(off, data.length), Math.min(off + len, data.length));
  assert.ok(got.equals(want), `bytes at ${off}+${len} differ`);
}

describe('remote file through the block cache', () => {
  const reg = new TestRegistry();
  const data = crypto.randomBytes(8 * MiB + 12345);
  let digest = '';
  let proxy: FaultProxy;
  before(async () => {
    await reg.start();
    digest = await reg.pushBlob('lib/remote', data);
    proxy = await FaultProxy.inFrontOf(reg.host);
  });
  after(async () => {
    await proxy?.stop();
    await reg.stop();
  });

  it('reads the right bytes from the registry, then from the cache without fetching again', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    const source = new BlobSource(client);
    source.add({ host: reg.host, repo: 'lib/remote', digest, size: data.length });
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB });
    const fetcher = createRemoteFetcher(source.fetch);
    t.after(() => fetcher.close());
    // No read-ahead: a speculative fetch still in flight after the first pass would count in the second.
    const file = openRemoteFile({ digest, size: data.length, cache, fetcher, readAheadUnits: 0 });
    assert.equal(file.size, data.length);
    const ranges: [number, number][] = [[0, 1], [100, 4096], [256 * KiB - 10, 20], [3 * MiB + 7, 2 * MiB], [data.length - 100, 1000],
      [data.length + 5, 10]];
    for (let i = 0; i < 30; i++) ranges.push([crypto.randomInt(data.length), crypto.randomInt(1, 300 * KiB)]);
    for (const [o, l] of ranges) await readAndCheck(file, data, o, l);
    await cache.drain();
    const fetches = source.fetches;
    for (const [o, l] of ranges) await readAndCheck(file, data, o, l);
    assert.equal(source.fetches, fetches);
    assert.ok(file.stats().hits >= ranges.length);
  });

  it('fails reads with EIO, naming the blob, when the registry keeps failing (bounded time)', async (t) => {
    const client = new RegistryClient({ operationDeadlineMs: 1500, retry: { baseDelayMs: 10, maxDelayMs: 50 } });
    t.after(() => client.close());
    const source = new BlobSource(client);
    source.add({ host: proxy.host, repo: 'lib/remote', digest, size: data.length });
    proxy.inject({ kind: 'status', status: 500 }, Infinity);
    t.after(() => proxy.clear());
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB });
    const fetcher = createRemoteFetcher(source.fetch);
    t.after(() => fetcher.close());
    const file = openRemoteFile({ digest, size: data.length, cache, fetcher });
    const t0 = Date.now();
    await assert.rejects(file.read(5000, 100), (e: NodeJS.ErrnoException) =>
      e.code === 'EIO' && e.message.includes(digest) && e.message.includes('500') && e.message.includes(proxy.host));
    assert.ok(Date.now() - t0 < 5000);
    proxy.clear();
    await readAndCheck(file, data, 5000, 100); // and it recovers once the registry does
  });

  it('concurrent readers of one refill unit cause one fetch', async (t) => {
    const src = localSource(data, { delayMs: 100 });
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB, unitSize: 1 * MiB });
    const fetcher = createRemoteFetcher(src.fn);
    t.after(() => fetcher.close());
    const file = openRemoteFile({ digest: sha(data), size: data.length, cache, fetcher, readAheadUnits: 0 });
    await Promise.all(Array.from({ length: 32 }, (_, i) => readAndCheck(file, data, 2 * MiB + i * 20000, 15000)));
    assert.equal(src.calls.length, 1);
    assert.deepEqual(src.calls[0], { offset: 2 * MiB, length: 1 * MiB });
    assert.equal(file.stats().fetches, 1);
  });

  it('keeps reads correct while evicting under a small size limit', async (t) => {
    const src = localSource(data);
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 1 * MiB, unitSize: 64 * KiB });
    const fetcher = createRemoteFetcher(src.fn);
    t.after(() => fetcher.close());
    const file = openRemoteFile({ digest: sha(data), size: data.length, cache, fetcher, readAheadUnits: 4 });
    for (let i = 0; i < 200; i++) {
      await readAndCheck(file, data, crypto.randomInt(data.length), crypto.randomInt(1, 200 * KiB));
      if (i % 50 === 0) await cache.drain();
    }
    await cache.drain();
    const s = cache.stats();
    assert.ok(s.usedBytes <= 1 * MiB, `used ${s.usedBytes}`);
    assert.ok(s.evictedUnits > 0);
    assert.equal(s.writeErrors, 0, s.lastError);
  });

  it('under random delays, failures and eviction, every read returns the right bytes or EIO, and none hangs', async (t) => {
    let calls = 0;
    const flaky: BlobFetchFn = async (_d, offset, length) => {
      calls++;
      await new Promise((r) => setTimeout(r, crypto.randomInt(0, 20)));
      if (crypto.randomInt(10) === 0) throw new Error('injected failure');
      return Buffer.from(data.subarray(offset, offset + length));
    };
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 2 * MiB, unitSize: 64 * KiB });
    const fetcher = createRemoteFetcher(flaky);
    t.after(() => fetcher.close());
    const file = openRemoteFile({ digest: sha(data), size: data.length, cache, fetcher, readAheadUnits: 8, maxFetchUnits: 4 });
    let ok = 0;
    let failed = 0;
    await Promise.all(Array.from({ length: 16 }, async () => {
      for (let i = 0; i < 40; i++) {
        const seq = crypto.randomInt(3) === 0;
        const off = seq ? (i * 96 * KiB) % data.length : crypto.randomInt(data.length);
        const len = crypto.randomInt(1, 300 * KiB);
        try {
          await readAndCheck(file, data, off, len);
          ok++;
        } catch (e) {
          assert.equal((e as NodeJS.ErrnoException).code, 'EIO', String(e));
          assert.match((e as Error).message, /injected failure/);
          failed++;
        }
      }
    }));
    await cache.drain();
    assert.equal(ok + failed, 640);
    assert.ok(ok > failed, `ok ${ok}, failed ${failed}, fetches ${calls}`);
    assert.ok(cache.stats().usedBytes <= 2 * MiB);
  });

  it('respects a disk-free floor: nothing is cached, reads still return the right bytes', async (t) => {
    const src = localSource(data);
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB, minFreeBytes: Number.MAX_SAFE_INTEGER });
    const fetcher = createRemoteFetcher(src.fn);
    t.after(() => fetcher.close());
    const file = openRemoteFile({ digest: sha(data), size: data.length, cache, fetcher });
    await readAndCheck(file, data, 1000, 600 * KiB);
    await cache.drain();
    const s = cache.stats();
    assert.equal(s.usedBytes, 0);
    assert.ok(s.skippedForSpace > 0);
    assert.match(s.lastError, /free; not caching/);
  });

  it('reads ahead on sequential access', async (t) => {
    const src = localSource(data);
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB, unitSize: 64 * KiB });
    const fetcher = createRemoteFetcher(src.fn);
    t.after(() => fetcher.close());
    const file = openRemoteFile({ digest: sha(data), size: data.length, cache, fetcher, readAheadUnits: 16, maxFetchUnits: 8 });
    for (let off = 0; off < 4 * MiB; off += 32 * KiB) await readAndCheck(file, data, off, 32 * KiB);
    const st = file.stats();
    assert.ok(st.readAheadFetches > 0);
    assert.ok(st.fetches < 30, `fetches ${st.fetches} for 64 units`);
    assert.ok(st.hits > 64, `hits ${st.hits}`);
  });

  it('verifies a fully cached blob and drops it when its sha256 does not match', async (t) => {
    const small = crypto.randomBytes(1 * MiB + 100);
    const good = localSource(small);
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB, unitSize: 256 * KiB });
    const f1 = createRemoteFetcher(good.fn);
    t.after(() => f1.close());
    const ok = openRemoteFile({ digest: sha(small), size: small.length, cache, fetcher: f1 });
    await readAndCheck(ok, small, 0, small.length);
    await cache.drain();
    assert.equal(cache.stats().verifiedBlobs, 1);

    const other = crypto.randomBytes(1 * MiB);
    const bad = localSource(other, { corrupt: true });
    const f2 = createRemoteFetcher(bad.fn);
    t.after(() => f2.close());
    const wrong = openRemoteFile({ digest: sha(other), size: other.length, cache, fetcher: f2 });
    await wrong.read(0, other.length);
    await cache.drain();
    const s = cache.stats();
    assert.equal(s.verifyFailures, 1);
    assert.match(s.lastError, new RegExp(`${sha(other)}: cached content has digest sha256:[0-9a-f]{64}; dropped`));
    assert.equal(wrong.stats().presentUnits, 0);
    assert.equal(ok.stats().presentUnits, ok.stats().units);
  });

  it('fails with EIO when the fetch function rejects or returns the wrong length', async (t) => {
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB });
    const f1 = createRemoteFetcher(localSource(data, { fail: 'registry says no' }).fn);
    const f2 = createRemoteFetcher(async () => Buffer.alloc(3));
    t.after(() => {
      f1.close();
      f2.close();
    });
    const d = sha(data);
    await assert.rejects(openRemoteFile({ digest: d, size: data.length, cache, fetcher: f1 }).read(0, 10),
      (e: NodeJS.ErrnoException) => e.code === 'EIO' && e.message.includes('registry says no') && e.message.includes(d));
    const cache2 = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB });
    await assert.rejects(openRemoteFile({ digest: d, size: data.length, cache: cache2, fetcher: f2 }).read(0, 10),
      (e: NodeJS.ErrnoException) => e.code === 'EIO' && /returned 3 bytes/.test(e.message));
    assert.throws(() => openRemoteFile({ digest: '../etc/passwd', size: 1, cache, fetcher: f1 }), /not a sha256 digest/);
  });

  it('background download fills the whole blob at the configured rate and verifies it', async (t) => {
    const blob = crypto.randomBytes(4 * MiB);
    const src = localSource(blob);
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB });
    const fetcher = createRemoteFetcher(src.fn);
    t.after(() => fetcher.close());
    const file = openRemoteFile({ digest: sha(blob), size: blob.length, cache, fetcher });
    const t0 = Date.now();
    const dl = new BackgroundDownload(file, { enable: true, delay: 0, delayExtra: 0, maxMBps: 16, blockSize: 1 * MiB });
    await dl.done;
    assert.equal(dl.error, undefined);
    assert.ok(Date.now() - t0 >= 200, `took ${Date.now() - t0} ms for 4 MiB at 16 MB/s`);
    await cache.drain();
    assert.equal(file.stats().presentUnits, file.stats().units);
    assert.equal(cache.stats().verifiedBlobs, 1);
    const off = new BackgroundDownload(file, { enable: false });
    await off.done;
    assert.equal(off.bytes, 0);
  });

  it('after kill -9 during heavy filling, every unit marked present matches the source', async (t) => {
    const dir = tmpDir(t);
    const unit = 64 * KiB;
    const source = crypto.randomBytes(48 * MiB + 777);
    const sourcePath = path.join(dir, 'source');
    fs.writeFileSync(sourcePath, source);
    const cacheDir = path.join(dir, 'cache');
    const digest = sha(source);
    const child = spawn(process.execPath, [path.join(__dirname, 'cache-fill-child.js'), cacheDir, sourcePath, digest, String(unit)],
      { stdio: ['ignore', 'pipe', 'inherit'] });
    t.after(() => child.kill('SIGKILL'));
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (c) => reject(new Error(`child exited ${c}`)));
    });
    // Kill while it is filling: once a tenth of the units are in (or after 3 s at most).
    const stem = path.join(cacheDir, `sha256_${digest.slice(7)}`);
    const units = Math.ceil(source.length / unit);
    const presentNow = () => {
      try {
        return fs.readFileSync(stem + '.bitmap').subarray(64).reduce((n, b) => n + popcount(b), 0);
      } catch {
        return 0;
      }
    };
    for (let waited = 0; waited < 3000 && presentNow() < units / 10; waited += 10) await new Promise((r) => setTimeout(r, 10));
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;

    const bitmap = fs.readFileSync(stem + '.bitmap');
    const cached = fs.readFileSync(stem + '.data');
    assert.equal(bitmap.subarray(0, 8).toString(), 'OBDCACH1');
    let present = 0;
    for (let u = 0; u < units; u++) {
      if (!((bitmap[64 + (u >> 3)] >> (u & 7)) & 1)) continue;
      present++;
      const a = u * unit, b = Math.min(source.length, a + unit);
      assert.ok(cached.subarray(a, b).equals(source.subarray(a, b)), `unit ${u} marked present but differs`);
    }
    assert.ok(present > 0 && present < units, `present ${present} of ${units}`);

    // Restart: present units are served from the cache; the fetcher is not even asked for them.
    const src = localSource(source, { fail: 'must not fetch' });
    const cache = openBlockCache({ dir: cacheDir, capacityBytes: 256 * MiB, unitSize: unit });
    const fetcher = createRemoteFetcher(src.fn);
    t.after(() => fetcher.close());
    const file = openRemoteFile({ digest, size: source.length, cache, fetcher, readAheadUnits: 0 });
    for (let u = 0; u < units; u++) {
      if ((bitmap[64 + (u >> 3)] >> (u & 7)) & 1) await readAndCheck(file, source, u * unit, Math.min(unit, source.length - u * unit));
    }
    assert.equal(src.calls.length, 0);
    assert.equal(cache.stats().usedBytes, present * unit - (((bitmap[64 + ((units - 1) >> 3)] >> ((units - 1) & 7)) & 1) ? unit * units - source.length : 0));
  });
});
