// Range reads through a fault-injecting proxy: every read returns the right bytes or a clear error,
// within a bounded time.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, beforeEach, describe, it } from 'node:test';
import {
  RegistryClient, RegistryError, RegistryHttpError, RegistryNetworkError, RegistryProtocolError, RegistrySizeMismatchError,
  RegistryTimeoutError,
} from '../../src/registry';
import { FaultProxy } from '../helpers/fault-proxy';
import { TestRegistry } from '../helpers/registry';

const blob = crypto.randomBytes(2 << 20);

describe('range reads under faults', () => {
  const reg = new TestRegistry();
  let proxy: FaultProxy;
  let digest = '';
  let client: RegistryClient;
  before(async () => {
    await reg.start();
    digest = await reg.pushBlob('lib/f', blob);
    proxy = await FaultProxy.inFrontOf(reg.host);
  });
  after(async () => {
    await client?.close();
    await proxy?.stop();
    await reg.stop();
  });
  beforeEach(async () => {
    proxy.clear();
    await client?.close();
    client = new RegistryClient({ operationDeadlineMs: 3000, requestTimeoutMs: 1000, retry: { baseDelayMs: 10, maxDelayMs: 100 } });
  });

  const reader = () => client.blobReader(proxy.host, 'lib/f', digest, { size: blob.length });
  const expectBytes = async (off: number, n: number) => assert.deepEqual(await reader().read(off, n), blob.subarray(off, off + n));

  it('retries dropped connections', async () => {
    proxy.inject({ kind: 'drop' }, 2);
    await expectBytes(1000, 300000);
  });

  it('retries 500s and truncated bodies', async () => {
    proxy.inject({ kind: 'status', status: 500 }, 2);
    proxy.inject({ kind: 'truncate', afterBytes: 1000 }, 2);
    await expectBytes(7, 500000);
    assert.ok(client.retry.retries >= 4);
  });

  it('rejects a wrong Content-Range and retries', async () => {
    proxy.inject({ kind: 'wrong-content-range' }, 1);
    await expectBytes(4096, 4096);
  });

  it('waits as long as Retry-After says on 429', async () => {
    proxy.inject({ kind: 'status', status: 429, headers: { 'retry-after': '1' } }, 1);
    const t0 = Date.now();
    await expectBytes(0, 100);
    assert.ok(Date.now() - t0 >= 950, `waited ${Date.now() - t0} ms`);
  });

  it('a slow answer within the deadline is fine; a stalled one fails within the deadline', async () => {
    proxy.inject({ kind: 'delay', ms: 300 }, 1);
    await expectBytes(10, 10);
    proxy.inject({ kind: 'delay', ms: 60_000 }, Infinity);
    const t0 = Date.now();
    await assert.rejects(reader().read(0, 10), (e: Error) => e instanceof RegistryError && e.message.includes(proxy.host));
    assert.ok(Date.now() - t0 < 4000, `took ${Date.now() - t0} ms`);
  });

  it('persistent 500s end in an error naming the registry and the status, in bounded time', async () => {
    proxy.inject({ kind: 'status', status: 503 }, Infinity);
    const t0 = Date.now();
    await assert.rejects(reader().read(0, 10), (e: Error) =>
      (e instanceof RegistryHttpError || e instanceof RegistryTimeoutError) && (e as RegistryError).status === 503 &&
      e.message.includes(proxy.host) && e.message.includes('503'));
    assert.ok(Date.now() - t0 < 4000);
  });

  it('persistent drops end in a network error or timeout', async () => {
    proxy.inject({ kind: 'drop' }, Infinity);
    await assert.rejects(reader().read(0, 10), (e: Error) => e instanceof RegistryNetworkError || e instanceof RegistryTimeoutError);
  });

  it('persistent truncation ends in a protocol error', async () => {
    proxy.inject({ kind: 'truncate', afterBytes: 10 }, Infinity);
    await assert.rejects(reader().read(0, 100000), (e: Error) =>
      e instanceof RegistryProtocolError || e instanceof RegistryNetworkError || e instanceof RegistryTimeoutError);
  });

  it('a blob of another size than expected fails at once, without retries', async () => {
    const t0 = Date.now();
    await assert.rejects(client.blobReader(proxy.host, 'lib/f', digest, { size: blob.length + 1 }).read(0, 10),
      (e: Error) => e instanceof RegistrySizeMismatchError && e.message.includes(`blob size is ${blob.length}`));
    assert.equal(client.retry.retries, 0);
    assert.ok(Date.now() - t0 < 1000);
  });

  it('follows a blob redirect to another port without Authorization and reuses it until it expires', async () => {
    proxy.inject({ kind: 'redirect', expiresInSec: 600 }, 1);
    const r = reader();
    for (let i = 0; i < 4; i++) assert.deepEqual(await r.read(i * 65536, 65536), blob.subarray(i * 65536, (i + 1) * 65536));
    const store = proxy.seen.filter((s) => s.server === 'store');
    const registryGets = proxy.seen.filter((s) => s.server === 'proxy' && s.method === 'GET');
    assert.equal(store.length, 4);
    assert.equal(registryGets.length, 1);
    assert.ok(store.every((s) => s.authorization === undefined));
    assert.equal(r.stats.redirects, 1);
  });

  it('re-resolves a redirect that has expired', async () => {
    proxy.inject({ kind: 'redirect', expiresInSec: 1 }, 2); // expires at once (30 s safety margin)
    const r = reader();
    assert.deepEqual(await r.read(0, 10), blob.subarray(0, 10));
    assert.deepEqual(await r.read(10, 10), blob.subarray(10, 20));
    assert.equal(r.stats.redirects, 2);
  });
});
