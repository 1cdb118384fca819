// deviced with registry-backed lowers (repoBlobUrl + digest): the upstream ext4 fixture stack pushed
// to a private docker-registry, attached lazily, mounted, read; only what is read is fetched.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, beforeEach, describe, it } from 'node:test';
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import { FaultProxy } from '../helpers/fault-proxy';
import type { Cleanup } from '../helpers/loop';
import { TestRegistry } from '../helpers/registry';
import type { TempDir } from '../helpers/tmp';
import { finishTestDir, FIXTURES, mountDev, run, startDeviced, startTestDir, umount, writeImageConfig } from './harness';

const MiB = 1 << 20;

/** Reads `len` bytes at `off` of a block device with O_DIRECT in a child process. */
function readDirect(dev: string, off: number, len: number): Promise<{ code: number | null; data: Buffer; ms: number; err: string }> {
  const t0 = Date.now();
  return new Promise((resolve) => {
    const p = spawn('dd', [`if=${dev}`, 'iflag=direct,skip_bytes,count_bytes', `bs=${64 * 1024}`, `skip=${off}`, `count=${len}`, 'status=none']);
    const chunks: Buffer[] = [];
    let err = '';
    p.stdout.on('data', (c: Buffer) => chunks.push(c));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('close', (code) => resolve({ code, data: Buffer.concat(chunks), ms: Date.now() - t0, err }));
  });
}

let tmp: TempDir;
let cleanup: Cleanup;
const registry = new TestRegistry();

before(() => registry.start());
after(() => registry.stop());
beforeEach(() => ({ tmp, cleanup } = startTestDir('obd-device-remote-')));
afterEach(() => finishTestDir(tmp, cleanup));

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
    await d.detach('remote');
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
    await d.detach('remote');
    await d.stop();
  });

  it('registry faults: identical concurrent misses are coalesced; a failing registry gives EIO in bounded time, then recovers', async () => {
    const d = await startDeviced(tmp, cleanup, { cacheConfig: { cacheDir: tmp.join('cache'), cacheSizeGB: 1 } });
    // A 64 MiB layer of random bytes, made through a writable device and committed.
    const raw = crypto.randomBytes(64 * MiB);
    fs.writeFileSync(tmp.join('disk.raw'), raw);
    assert.equal(d.obd('layer', 'create', '--vsize', '64M', tmp.join('w.data'), tmp.join('w.index')).status, 0);
    const w = d.attach(writeImageConfig(tmp, 'w.json', { upper: { data: tmp.join('w.data'), index: tmp.join('w.index') } }), 'w');
    run('dd', [`if=${tmp.join('disk.raw')}`, `of=${w}`, 'bs=1M', 'oflag=direct', 'conv=fsync', 'status=none']);
    await d.detach('w');
    assert.equal(d.obd('layer', 'commit', tmp.join('w.data'), tmp.join('w.index'), tmp.join('big.lsmt')).status, 0);
    const blob = fs.readFileSync(tmp.join('big.lsmt'));
    const digest = await registry.pushBlob('obd/big', blob);
    const proxy = await FaultProxy.inFrontOf(registry.host);
    cleanup.add('stop proxy', () => void proxy.stop());

    const cfg = writeImageConfig(tmp, 'big.json', { repoBlobUrl: `http://${proxy.host}/v2/obd/big/blobs`, lowers: [{ digest, size: blob.length }] });
    // The proxy lives in this process: only asynchronous calls from here on (no spawnSync).
    const dev = (await d.client.attach({ id: 'big', configPath: cfg })).path;

    // Two readers of the same uncached 64 KiB while the registry is slow: one fetch, one joins it.
    proxy.inject({ kind: 'delay', ms: 1500 }, 1);
    const off = 32 * MiB;
    const [a, b] = await Promise.all([readDirect(dev, off, 65536), readDirect(dev, off, 65536)]);
    assert.equal(a.code, 0, a.err + d.logs());
    assert.equal(b.code, 0, b.err);
    assert.ok(a.data.equals(raw.subarray(off, off + 65536)) && b.data.equals(a.data), 'both readers got the right bytes');
    const st = (await d.client.stats('big'))[0];
    assert.ok(st.coalescedReads >= 1, `identical in-flight reads were coalesced (${st.coalescedReads})`);

    // Registry down: an uncached read fails with an error (no hang); cached data still reads.
    proxy.inject({ kind: 'status', status: 500 }, Infinity);
    const bad = await readDirect(dev, 48 * MiB, 65536);
    assert.notEqual(bad.code, 0, 'read of an uncached block fails while the registry fails');
    assert.ok(bad.ms < 90_000, `failed within bounded time (${bad.ms} ms)`);
    assert.ok((await d.client.stats('big'))[0].errors >= 1);
    const cached = await readDirect(dev, off, 65536);
    assert.equal(cached.code, 0, 'cached blocks still read');
    // Registry back: the same read succeeds.
    proxy.clear();
    const good = await readDirect(dev, 48 * MiB, 65536);
    assert.equal(good.code, 0);
    assert.ok(good.data.equals(raw.subarray(48 * MiB, 48 * MiB + 65536)));
    await d.detach('big');
    await d.stop();
  });
});
