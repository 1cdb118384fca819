// Demand first, and honest byte accounting, against a private registry behind a byte-counting,
// throttling proxy: a demand miss is not held up by a large background download in flight; the
// background download fills and verifies the whole blob and resumes where the cache ends; the bytes
// obd says it received equal what the proxy carried (within 5 %).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createRemoteFetcher, openBlockCache, openRemoteFile } from '../../src/addon';
import { BackgroundDownload, BlobSource, RegistryClient } from '../../src/registry';
import { TestRegistry } from '../helpers/registry';
import { ThrottleProxy } from '../helpers/throttle-proxy';

const KiB = 1024;
const MiB = 1024 * KiB;

function tmpDir(t: { after: (fn: () => void) => void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-demand-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

function assertWithin5(obd: number, proxy: number, what: string) {
  assert.ok(proxy > 0, `${what}: the proxy counted nothing`);
  assert.ok(Math.abs(obd - proxy) <= 0.05 * proxy, `${what}: obd counted ${obd} bytes received, the proxy ${proxy}`);
}

async function waitFor(cond: () => boolean, what: string, ms = 60_000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('demand first, background download, accounting', () => {
  const reg = new TestRegistry();
  const big = crypto.randomBytes(100 * MiB);
  const small = crypto.randomBytes(8 * MiB);
  let bigDigest = '';
  let smallDigest = '';
  before(async () => {
    await reg.start();
    bigDigest = await reg.pushBlob('lib/big', big);
    smallDigest = await reg.pushBlob('lib/small', small);
  });
  after(() => reg.stop());

  async function setup(t: { after: (fn: () => unknown) => void }, rate: number, latencyMs: number, dir = tmpDir(t)) {
    const [h, p] = reg.host.split(':');
    const proxy = new ThrottleProxy({ host: h, port: Number(p) }, rate, latencyMs);
    await proxy.start();
    const client = new RegistryClient();
    const source = new BlobSource(client);
    source.add({ host: proxy.host, repo: 'lib/big', digest: bigDigest, size: big.length });
    source.add({ host: proxy.host, repo: 'lib/small', digest: smallDigest, size: small.length });
    const cache = openBlockCache({ dir, capacityBytes: 512 * MiB, unitSize: 256 * KiB, sync: false });
    const fetcher = createRemoteFetcher(source.fetch);
    const bigFile = openRemoteFile({ digest: bigDigest, size: big.length, cache, fetcher });
    const smallFile = openRemoteFile({ digest: smallDigest, size: small.length, cache, fetcher });
    let stopped = false;
    const stop = async () => {
      if (stopped) return;
      stopped = true;
      fetcher.close();
      await client.close();
      await proxy.stop();
    };
    t.after(stop);
    return { proxy, source, cache, fetcher, bigFile, smallFile, dir, stop };
  }

  it('a demand miss issued during a 100 MB background download completes within one unit fetch plus a small constant', async (t) => {
    const s = await setup(t, 50 * MiB, 5);
    await s.smallFile.read(0, 4096); // warm connection
    const u0 = Date.now();
    await s.smallFile.read(2 * MiB, 4096);
    const unitMs = Date.now() - u0;

    const dl = new BackgroundDownload(s.bigFile, { enable: true, delay: 0, delayExtra: 0, maxMBps: 0, blockSize: 4 * MiB });
    t.after(() => dl.stop());
    await waitFor(() => dl.bytes >= 16 * MiB, 'the background download to be under way');
    assert.ok(s.fetcher.stats().inFlight.background > 0, 'background fetches in flight');
    const d0 = Date.now();
    const got = await s.smallFile.read(5 * MiB + 100, 4096);
    const demandMs = Date.now() - d0;
    assert.ok(got.equals(small.subarray(5 * MiB + 100, 5 * MiB + 100 + 4096)));
    assert.ok(dl.finishedAt === undefined, 'the background download was still running');
    assert.ok(demandMs <= unitMs + 400, `demand miss took ${demandMs} ms during the download; alone ${unitMs} ms`);

    await dl.done;
    assert.equal(dl.error, undefined);
    await s.cache.drain();
    const st = s.bigFile.stats();
    assert.equal(st.presentUnits, st.units);
    assert.equal(st.backgroundBytes, big.length);
    assert.equal(s.cache.stats().verifiedBlobs, 1, 'the downloaded blob was verified by sha256');
    assert.ok((await s.bigFile.read(77 * MiB, 4096)).equals(big.subarray(77 * MiB, 77 * MiB + 4096)));
    assert.equal(s.bigFile.nextMissing(0), big.length);
    await new Promise((r) => setTimeout(r, 100)); // the last chunks through the proxy
    assertWithin5(s.source.receivedBytes, s.proxy.bytes, 'demand + background');
  });

  it('a background download stopped half way resumes where the cache ends (restart), and completes verified', async (t) => {
    const dir = tmpDir(t);
    const first = await setup(t, 0, 0, dir);
    const dl = new BackgroundDownload(first.bigFile, { enable: true, delay: 0, delayExtra: 0, maxMBps: 100, blockSize: 4 * MiB });
    await waitFor(() => dl.bytes >= 40 * MiB, 'the download to reach 40 MiB');
    dl.stop();
    await new Promise((r) => setTimeout(r, 300));
    await first.cache.drain();
    const done = first.bigFile.stats().presentUnits;
    assert.ok(done > 0 && done < first.bigFile.stats().units);
    await first.stop();
    const firstBytes = first.proxy.bytes;
    assertWithin5(first.source.receivedBytes, firstBytes, 'first run');

    const second = await setup(t, 0, 0, dir); // a new process would see the same cache files
    assert.ok(second.bigFile.nextMissing(0) > 0, 'the cache remembers what was downloaded');
    const dl2 = new BackgroundDownload(second.bigFile, { enable: true, delay: 0, delayExtra: 0, maxMBps: 0, blockSize: 4 * MiB });
    await dl2.done;
    assert.equal(dl2.error, undefined);
    await second.cache.drain();
    assert.equal(second.bigFile.stats().presentUnits, second.bigFile.stats().units);
    assert.equal(second.cache.stats().verifiedBlobs, 1);
    assertWithin5(second.source.receivedBytes, second.proxy.bytes, 'second run');
    const total = firstBytes + second.proxy.bytes;
    assert.ok(total < big.length * 1.05, `both runs carried ${total} bytes for a ${big.length}-byte blob`);
  });

  it('a demand read that needs a queued background fetch promotes it to demand', async (t) => {
    const s = await setup(t, 20 * MiB, 5);
    // demand reads keep the link busy, so a background fetch waits in its queue
    const reads = Array.from({ length: 8 }, (_, i) => s.smallFile.read(i * MiB, MiB));
    const queued = s.bigFile.read(0, 4096, 'background');
    assert.equal(s.fetcher.stats().queued.background, 1);
    let demandDone = 0;
    let othersDone = 0;
    const demand = s.bigFile.read(0, 4096).then((b) => ((demandDone = Date.now()), b));
    const others = Promise.all(reads).then(() => (othersDone = Date.now()));
    assert.ok((await demand).equals(big.subarray(0, 4096)));
    assert.ok((await queued).equals(big.subarray(0, 4096)));
    await others;
    assert.equal(s.bigFile.stats().promotedFetches, 1);
    assert.ok(s.fetcher.stats().promoted >= 1); // read-ahead of the small file's readers may be promoted too
    assert.equal(s.fetcher.stats().started.background, 0, 'it was started as demand');
    assert.ok(demandDone <= othersDone, 'the promoted read did not wait for the link to become idle');
  });
});
