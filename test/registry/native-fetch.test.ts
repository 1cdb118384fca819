// The native fetch path (config nativeFetch): once JS has fetched a range of a blob it hands the
// blob's route to the addon, whose libcurl client fetches later ranges straight into the block
// cache. Any failure of a native fetch (refusals, expired tokens or storage URLs, wrong bytes,
// cut connections) goes back to JS, which resolves and retries, so reads still get the right
// bytes, nothing crashes, and every byte received is counted by one side or the other.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createRemoteFetcher, openBlockCache, openRemoteFile } from '../../src/addon';
import { sourceFetcher } from '../../src/device/remote';
import { registryErrorKind } from '../../src/device/state-metrics';
import { BlobSource, CredentialStore, RegistryClient } from '../../src/registry';
import { FaultProxy, type Fault } from '../helpers/fault-proxy';
import { TestRegistry } from '../helpers/registry';
import { ThrottleProxy } from '../helpers/throttle-proxy';
import { TokenServer } from '../helpers/token-server';

const KiB = 1024;
const MiB = 1024 * KiB;
const UNIT = 256 * KiB;

function tmpDir(t: { after: (fn: () => void) => void }): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-native-'));
  t.after(() => fs.rmSync(d, { recursive: true, force: true }));
  return d;
}

/** A remote file over `host` read through a native fetcher, without read-ahead (each read is one fetch). */
function nativeFile(t: { after: (fn: () => void) => void }, client: RegistryClient, host: string, repo: string, digest: string, size: number) {
  const errors: string[] = []; // failed attempts by metrics kind (obd_registry_errors_total), JS and native
  const source = new BlobSource(client, { onRetriedError: (err) => errors.push(registryErrorKind(err)) });
  source.add({ host, repo, digest, size });
  const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB, unitSize: UNIT, sync: false });
  const filled: string[] = [];
  const fetcher = sourceFetcher(source, true, source.fetch, (d) => filled.push(d));
  t.after(() => fetcher.close());
  const file = openRemoteFile({ digest, size, cache, fetcher, readAheadUnits: 0 });
  return { source, fetcher, file, filled, errors };
}

async function readChecked(file: { read(o: number, l: number): Promise<Buffer> }, data: Buffer, unit: number): Promise<void> {
  const got = await file.read(unit * UNIT, UNIT);
  assert.ok(got.equals(data.subarray(unit * UNIT, (unit + 1) * UNIT)), `bytes of unit ${unit} differ`);
}

const settle = () => new Promise((r) => setTimeout(r, 50)); // native fetches report to JS (onFetched, counters) asynchronously

describe('native fetch path', () => {
  const reg = new TestRegistry();
  const data = crypto.randomBytes(32 * UNIT);
  let digest = '';
  let proxy: FaultProxy;
  before(async () => {
    await reg.start();
    digest = await reg.pushBlob('lib/native', data);
    proxy = await FaultProxy.inFrontOf(reg.host);
  });
  after(async () => {
    await proxy?.stop();
    await reg.stop();
  });

  it('fetches natively after the first fetch of a blob, and counts every byte once', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    proxy.clear();
    const { source, fetcher, file, filled } = nativeFile(t, client, proxy.host, 'lib/native', digest, data.length);
    await readChecked(file, data, 0);
    await settle();
    for (let u = 1; u < 8; u++) await readChecked(file, data, u);
    await settle();
    assert.deepEqual(filled, Array(8).fill(digest), 'the owner hears of every fetch, JS or native (it shares complete blobs)');
    const n = fetcher.stats().native!;
    assert.equal(source.fetches, 1, 'only the first fetch went through JS');
    assert.equal(n.fetches, 7);
    assert.equal(n.bytes.demand, 7 * UNIT);
    assert.equal(n.receivedBytes + source.receivedBytes, 8 * UNIT, 'received bytes, JS + native');
    assert.equal(n.routes, 1);
    const gets = proxy.seen.filter((s) => s.method === 'GET');
    assert.equal(gets.length, 8, 'one GET per fetch');
  });

  it('resolves a blob once: fetches issued while its first fetch is with JS wait for it, then go natively', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    proxy.clear();
    const { source, fetcher, file } = nativeFile(t, client, proxy.host, 'lib/native', digest, data.length);
    // One batch, as a reader's first requests (or a layer's open) come: the first one resolves the blob.
    await Promise.all([0, 5, 11, 20, 31].map((u) => readChecked(file, data, u)));
    assert.equal(source.fetches, 1, 'one fetch through JS, not one per request of the batch');
    const n = fetcher.stats().native!;
    assert.equal(n.fetches, 4, 'the others waited for its route and went natively');
    assert.equal(n.receivedBytes + source.receivedBytes, 5 * UNIT);
    assert.equal(proxy.seen.filter((s) => s.method === 'GET').length, 5);
  });

  it('when the resolving fetch fails, the fetches that waited for it go to JS each, and the next ones natively', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    proxy.clear();
    proxy.inject({ kind: 'status', status: 404 }, 1);
    const { source, fetcher, file } = nativeFile(t, client, proxy.host, 'lib/native', digest, data.length);
    const results = await Promise.allSettled([0, 5, 11].map((u) => readChecked(file, data, u)));
    assert.equal(results[0].status, 'rejected', 'the resolving read got the 404');
    assert.match(String((results[0] as PromiseRejectedResult).reason), /404|not found/i);
    assert.deepEqual(results.slice(1).map((r) => r.status), ['fulfilled', 'fulfilled'], 'the waiting reads were answered');
    assert.equal(source.fetches, 3, 'each waiting fetch went to JS (which retries on its own), none waited forever');
    await readChecked(file, data, 20);
    assert.equal(fetcher.stats().native!.fetches, 1, 'JS handed over a route meanwhile');
  });

  it('a fetcher whose first fetch of a blob hands over no route does not hold that blob\'s later fetches back', async (t) => {
    let inFlight = 0;
    let most = 0;
    const fetcher = createRemoteFetcher(async (_d, offset, length) => {
      most = Math.max(most, ++inFlight);
      await new Promise((r) => setTimeout(r, 30));
      inFlight--;
      return data.subarray(offset, offset + length);
    }, { native: {} });
    t.after(() => fetcher.close());
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB, unitSize: UNIT, sync: false });
    const file = openRemoteFile({ digest, size: data.length, cache, fetcher, readAheadUnits: 0 });
    await Promise.all([0, 5, 11].map((u) => readChecked(file, data, u)));
    assert.equal(most, 2, 'the first fetch alone, then the two that waited for it together');
    most = 0;
    await Promise.all([1, 6, 12, 21].map((u) => readChecked(file, data, u)));
    assert.equal(most, 4, 'without a route coming, the next batch goes to JS at once');
  });

  for (const [name, fault, kinds] of [
    ['a 500', { kind: 'status', status: 500 }, ['5xx']],
    // The registry client answers a 401 by authenticating and sending again, which it does not count either.
    ['a 401 (expired token)', { kind: 'status', status: 401, headers: { 'www-authenticate': 'Basic realm="x"' } }, []],
    ['a 404', { kind: 'status', status: 404 }, ['404']],
    ['a dropped connection', { kind: 'drop' }, ['reset']],
    ['a truncated body', { kind: 'truncate', afterBytes: 1000 }, ['reset']],
    ['a wrong Content-Range', { kind: 'wrong-content-range' }, ['protocol']],
  ] as [string, Fault, string[]][]) {
    it(`a native fetch answered with ${name} is counted as a registry error ${JSON.stringify(kinds)} and redone by JS, with the right bytes`, async (t) => {
      const client = new RegistryClient({ retry: { baseDelayMs: 1, maxDelayMs: 5 } });
      t.after(() => client.close());
      proxy.clear();
      const { source, fetcher, file, errors } = nativeFile(t, client, proxy.host, 'lib/native', digest, data.length);
      await readChecked(file, data, 0);
      await settle();
      proxy.inject(fault, 1);
      await readChecked(file, data, 1);
      const n = fetcher.stats().native!;
      assert.equal(n.fallbacks, 1, 'the native attempt failed once');
      assert.equal(n.failedRequests, 1, 'one native GET failed');
      assert.equal(source.fetches, 2, 'JS did the first fetch and the failed one');
      assert.deepEqual(errors, kinds, 'the native failure counts as the registry client counts its own (JS itself got the bytes first time)');
      await settle();
      await readChecked(file, data, 2);
      assert.equal(fetcher.stats().native!.fetches, 1, 'JS handed over a new route');
      const wire = proxy.seen.filter((s) => s.method === 'GET').length;
      assert.ok(wire >= 4, `${wire} GETs`);
    });
  }

  it('a blob of another size than the route says fails the native fetch, and JS reports it', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    const { fetcher, file, errors } = nativeFile(t, client, proxy.host, 'lib/native', digest, data.length);
    await readChecked(file, data, 0);
    await settle();
    // A route that claims another size: the native client refuses the answer without taking its body.
    fetcher.setRoute(digest, { url: `http://${proxy.host}/v2/lib/native/blobs/${digest}`, headers: [], size: data.length + 1 });
    await readChecked(file, data, 3);
    assert.equal(fetcher.stats().native!.fallbacks, 1);
    assert.deepEqual(errors, ['size_mismatch']);
  });

  it('follows a redirect in JS and then reads the storage URL natively, without Authorization', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    proxy.clear();
    proxy.inject({ kind: 'redirect' }, Infinity);
    t.after(() => proxy.clear());
    const { fetcher, file } = nativeFile(t, client, proxy.host, 'lib/native', digest, data.length);
    await readChecked(file, data, 0);
    await settle();
    for (let u = 1; u < 4; u++) await readChecked(file, data, u);
    assert.equal(fetcher.stats().native!.fetches, 3);
    const store = proxy.seen.filter((s) => s.server === 'store');
    assert.equal(store.length, 4, 'the storage URL served every fetch after the redirect');
    assert.ok(store.every((s) => s.authorization === undefined), 'no credentials at the store');
    assert.equal(proxy.seen.filter((s) => s.server === 'proxy' && s.method === 'GET').length, 1, 'one GET at the registry');
  });

  it('a storage URL that refuses a native GET counts as the registry client counts it, and JS reads on', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    proxy.clear();
    proxy.inject({ kind: 'redirect' }, Infinity);
    t.after(() => proxy.clear());
    const { fetcher, file, errors } = nativeFile(t, client, proxy.host, 'lib/native', digest, data.length);
    await readChecked(file, data, 0);
    await settle();
    // The store's next answer is a 401: from the registry the client would answer a challenge, from
    // a redirect target it is a failure (and so it must be counted when the native GET gets it).
    proxy.inject({ kind: 'status', status: 401 }, 1);
    await readChecked(file, data, 1);
    assert.equal(fetcher.stats().native!.failedRequests, 1, 'the native GET to the store failed');
    assert.deepEqual(errors, ['401'], 'counted once, by its status');
    assert.equal(proxy.seen.filter((s) => s.server === 'store' && s.fault === 'status').length, 1, 'the store refused once');
  });

  it('an expired storage URL is refused natively and JS resolves the redirect again', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    proxy.clear();
    proxy.inject({ kind: 'redirect', expiresInSec: 1 }, Infinity);
    t.after(() => proxy.clear());
    const { fetcher, file } = nativeFile(t, client, proxy.host, 'lib/native', digest, data.length);
    await readChecked(file, data, 0);
    await settle();
    await new Promise((r) => setTimeout(r, 1500));
    await readChecked(file, data, 1);
    assert.ok(proxy.seen.filter((s) => s.server === 'proxy' && s.method === 'GET').length >= 2, 'the registry was asked again');
    assert.ok(fetcher.stats().native!.routes <= 1);
  });
});

describe('native fetch path on a slow link', () => {
  const reg = new TestRegistry();
  const data = crypto.randomBytes(32 * UNIT);
  let digest = '';
  let proxy: ThrottleProxy;
  before(async () => {
    await reg.start();
    digest = await reg.pushBlob('lib/slow', data);
    const [host, port] = reg.host.split(':');
    proxy = new ThrottleProxy({ host, port: Number(port) }, 2 * MiB, 0);
    await proxy.start();
  });
  after(async () => {
    await proxy?.stop();
    await reg.stop();
  });

  it('hands each unit of a large GET to its readers as it arrives, not when the whole GET ends', async (t) => {
    const client = new RegistryClient();
    t.after(() => client.close());
    const { fetcher, file } = nativeFile(t, client, proxy.host, 'lib/slow', digest, data.length);
    await readChecked(file, data, 31);
    await settle();
    // One GET of 16 units (4 MiB, ~2 s at 2 MiB/s); the reader of its first unit must not wait for the rest.
    const t0 = Date.now();
    const whole = file.read(0, 16 * UNIT).then((b) => ({ b, ms: Date.now() - t0 }));
    const first = file.read(0, 4096).then((b) => ({ b, ms: Date.now() - t0 }));
    const [w, f] = await Promise.all([whole, first]);
    assert.ok(w.b.equals(data.subarray(0, 16 * UNIT)), 'bytes of the large read');
    assert.ok(f.b.equals(data.subarray(0, 4096)), 'bytes of the first unit');
    assert.equal(fetcher.stats().native!.fetches, 1, 'both reads were served by one native GET');
    assert.ok(f.ms < w.ms / 3, `the first unit came after ${f.ms} ms, the whole GET after ${w.ms} ms`);
  });
});

describe('native streaming GETs of a sequential reader', () => {
  const reg = new TestRegistry();
  const data = crypto.randomBytes(96 * UNIT);
  let digest = '';
  before(async () => {
    await reg.start();
    digest = await reg.pushBlob('lib/stream', data);
  });
  after(() => reg.stop());

  /** A byte-counting proxy at `bytesPerSec` and a remote file with read-ahead behind it. */
  async function streamed(t: { after: (fn: () => void | Promise<void>) => void }, bytesPerSec: number) {
    const [host, port] = reg.host.split(':');
    const proxy = new ThrottleProxy({ host, port: Number(port) }, bytesPerSec, 0);
    await proxy.start();
    t.after(() => proxy.stop());
    const client = new RegistryClient();
    t.after(() => client.close());
    const source = new BlobSource(client);
    source.add({ host: proxy.host, repo: 'lib/stream', digest, size: data.length });
    const cache = openBlockCache({ dir: tmpDir(t), capacityBytes: 64 * MiB, unitSize: UNIT, sync: false });
    const fetcher = sourceFetcher(source, true);
    t.after(() => fetcher.close());
    const file = openRemoteFile({ digest, size: data.length, cache, fetcher });
    const received = () => source.receivedBytes + fetcher.stats().native!.receivedBytes;
    const read = async (from: number, to: number) => {
      for (let off = from; off < to; off += MiB) {
        const got = await file.read(off, MiB);
        assert.ok(got.equals(data.subarray(off, off + MiB)), `bytes at ${off} differ`);
      }
    };
    return { proxy, fetcher, source, file, received, read };
  }

  /** Waits until nothing has crossed the proxy for 300 ms (a stream's last GET ran to its end). */
  async function quiet(proxy: ThrottleProxy): Promise<void> {
    for (let last = -1; proxy.bytes !== last;) {
      last = proxy.bytes;
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  it('reads its read-ahead windows through a few bounded GETs, and obd counts what the wire carried (within 5%)', async (t) => {
    const { proxy, fetcher, received, read } = await streamed(t, 64 * MiB);
    await read(0, data.length);
    await quiet(proxy);
    const n = fetcher.stats().native!;
    assert.ok(n.bytes.readahead > data.length / 2, `read-ahead fetched ${n.bytes.readahead} bytes`);
    assert.ok(n.fetches >= 5, `${n.fetches} native fetches`);
    assert.ok(n.requests < n.fetches, `${n.requests} native GETs for ${n.fetches} fetches (windows share GETs)`);
    const wire = proxy.bytes;
    t.diagnostic(`wire ${wire} bytes, obd received ${received()}, ${n.requests} GETs for ${n.fetches} fetches`);
    assert.ok(Math.abs(wire - received()) <= 0.05 * wire, `wire ${wire} bytes, obd received ${received()}, ${n.requests} GETs`);
  });

  it('sizes a stream\'s second GET by what its first showed of a fast link: a long read takes a few GETs', async (t) => {
    const { proxy, fetcher, source, received, read } = await streamed(t, 1024 * MiB);
    await read(0, data.length);
    await quiet(proxy);
    const gets = source.fetches + fetcher.stats().native!.requests;
    // The first request through JS, the second a demand GET, then the stream: a first GET of two
    // windows, sent blind, and one that covers the rest (24 MiB is far below 250 ms of this link).
    assert.ok(gets <= 4, `${gets} GETs for ${data.length} bytes`);
    assert.ok(Math.abs(proxy.bytes - received()) <= 0.05 * proxy.bytes, `wire ${proxy.bytes} bytes, obd received ${received()}`);
  });

  it('a reader that stops costs at most 250 ms of the link past its read-ahead, and every byte on the wire reaches obd (within 5%)', async (t) => {
    const { proxy, fetcher, file, received, read } = await streamed(t, 16 * MiB);
    await read(0, 8 * MiB);
    await quiet(proxy); // the GET in flight runs to its end: nothing is cut
    const fetched = file.stats().fetchedBytes;
    const wire = proxy.bytes;
    t.diagnostic(`8 MiB read: fetched ${fetched} bytes, wire ${wire}, obd received ${received()}`);
    assert.ok(fetched < 16 * MiB, `fetched ${fetched} bytes for an 8 MiB read`);
    // Past the windows asked for, a stream's last GET reads at most one window or 250 ms of the link.
    assert.ok(wire - fetched <= 0.25 * 16 * MiB * 1.05, `wire ${wire} bytes, ${fetched} asked for`);
    assert.ok(Math.abs(wire - received()) <= 0.05 * wire, `wire ${wire} bytes, obd received ${received()}`);
    // The reader comes back: what the last GET brought past its last window serves it first.
    const requests = fetcher.stats().native!.requests;
    await read(8 * MiB, 9 * MiB);
    await quiet(proxy);
    assert.ok(fetcher.stats().native!.requests <= requests + 2, 'the continued read took at most two more GETs');
    assert.ok(Math.abs(proxy.bytes - received()) <= 0.05 * proxy.bytes, `wire ${proxy.bytes} bytes, obd received ${received()}`);
  });
});

describe('native fetch path with bearer tokens', () => {
  const tokens = new TokenServer({ users: { alice: 'secret' } });
  let reg: TestRegistry;
  let proxy: FaultProxy;
  const data = crypto.randomBytes(8 * UNIT);
  let digest = '';
  let credFile = '';
  before(async () => {
    await tokens.start();
    reg = new TestRegistry({ token: { server: tokens, user: 'alice', password: 'secret' } });
    await reg.start();
    digest = await reg.pushBlob('private/native', data);
    proxy = await FaultProxy.inFrontOf(reg.host);
    credFile = path.join(tokens.dir, 'config.json');
    fs.writeFileSync(credFile, JSON.stringify({ auths: { [proxy.host]: { auth: Buffer.from('alice:secret').toString('base64') } } }));
  });
  after(async () => {
    await proxy?.stop();
    await reg?.stop();
    await tokens.stop();
  });

  it('sends the token natively; a refused token goes back to JS, which gets a new one and hands it over', async (t) => {
    const client = new RegistryClient({ credentials: CredentialStore.fromFile(credFile) });
    t.after(() => client.close());
    const { fetcher, file } = nativeFile(t, client, proxy.host, 'private/native', digest, data.length);
    await readChecked(file, data, 0);
    await settle();
    await readChecked(file, data, 1);
    assert.equal(fetcher.stats().native!.fetches, 1, 'the token went with the native fetch');
    const native = proxy.seen.filter((s) => s.method === 'GET').at(-1)!;
    assert.match(native.authorization ?? '', /^Bearer /);
    // The token is refused twice: once natively, once when JS sends it again; JS then fetches a new one.
    const before = client.auth.tokenRequests;
    proxy.inject({ kind: 'status', status: 401, headers: { 'www-authenticate': `Bearer realm="${tokens.realm}",service="${tokens.service}"` } }, 2);
    await readChecked(file, data, 2);
    assert.equal(client.auth.tokenRequests, before + 1, 'a new token was fetched');
    assert.equal(fetcher.stats().native!.fallbacks, 1);
    await settle();
    await readChecked(file, data, 3);
    assert.equal(fetcher.stats().native!.fetches, 2, 'the new token went native again');
  });
});
