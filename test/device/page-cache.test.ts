// Page-cached fuse-loop devices (deviceCache "page"): a buffered loop device on the FUSE file's page
// cache, with the writeback cache for writable devices. What a container wrote may sit in the kernel's
// page cache of that file for a while; it must still reach the layer files on detach without a sync
// and across a kill -9 of deviced (the dirty pages stay in the kernel, the successor writes them).
// With deviceCache auto a lazy device, read-only or writable, starts direct and becomes page-cached,
// mounted, once its blobs are all local.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { parseConfig } from '../../src/config';
import type { Cleanup } from '../helpers/loop';
import { TestRegistry } from '../helpers/registry';
import { TempDir } from '../helpers/tmp';
import {
  Deviced,
  finishTestDir,
  FIXTURES,
  leftovers,
  mountDev,
  obdLayer,
  run,
  sha256File,
  startDeviced,
  startTestDir,
  umount,
  writeFileSynced,
  writeImageConfig,
} from './harness';

const MiB = 1 << 20;

let tmp: TempDir;
let cleanup: Cleanup;

beforeEach(() => ({ tmp, cleanup } = startTestDir('obd-pagecache-')));
afterEach(() => finishTestDir(tmp, cleanup));

/** A fresh writable device `id` over its own upper layer; returns its path and config file. */
function writableDevice(d: Deviced, id: string, vsize = '64M'): { dev: string; cfg: string } {
  obdLayer(d, 'create', '--vsize', vsize, tmp.join(`${id}.data`), tmp.join(`${id}.index`));
  const cfg = writeImageConfig(tmp, `${id}.json`, { upper: { data: tmp.join(`${id}.data`), index: tmp.join(`${id}.index`) } });
  return { dev: d.attach(cfg, id), cfg };
}

/** Buffered writes (no O_DIRECT, no fsync): they end in page caches, not in the layer files. */
function writeBuffered(src: string, dev: string, seekMiB: number): void {
  run('dd', [`if=${src}`, `of=${dev}`, 'bs=1M', `seek=${seekMiB}`, 'conv=notrunc', 'status=none']);
}

/** sha256 of `bytes` of the device from `skipMiB`, read around every page cache. */
function deviceSha(dev: string, skipMiB: number, bytes: number): string {
  const out = tmp.join(`read-${path.basename(dev)}-${skipMiB}.bin`);
  run('dd', [`if=${dev}`, `of=${out}`, 'bs=1M', `skip=${skipMiB}`, `count=${bytes / MiB}`, 'iflag=direct', 'status=none']);
  const sha = sha256File(out);
  fs.rmSync(out);
  return sha;
}

/** The sysfs settings of the FUSE connection's bdi that serves device `id`. */
function bdiOf(d: Deviced, id: string): Record<string, string> {
  const bdi = run('stat', ['-c', '%Hd:%Ld', path.join(d.stateDir, 'mnt', id, 'disk')]).trim();
  const read = (name: string) => fs.readFileSync(`/sys/class/bdi/${bdi}/${name}`, 'utf8').trim();
  return { strict_limit: read('strict_limit'), max_ratio: read('max_ratio'), read_ahead_kb: read('read_ahead_kb') };
}

describe('page-cached fuse-loop devices', { timeout: 600_000 }, () => {
  it('the config refuses an unknown deviceCache by name', () => {
    assert.throws(() => parseConfig({ deviceCache: 'pages' }, 'c.json'), /config key "deviceCache": must be one of auto, page, direct \(got "pages"\)/);
    assert.equal(parseConfig({ deviceCache: 'page' }).deviceCache, 'page');
  });

  it('device ls shows the mode; the FUSE bdi has an ordinary disk\'s dirty limits and a 1 MiB readahead', async () => {
    const d = await startDeviced(tmp, cleanup, { deviceCache: 'page' });
    const { dev } = writableDevice(d, 'rw');
    const ls = JSON.parse(d.obd('device', 'ls', '--json').stdout) as Array<{ id: string; cache: string; directIo: boolean }>;
    assert.deepEqual(ls.map((x) => [x.id, x.cache, x.directIo]), [['rw', 'page', false]]);
    assert.match(d.obd('device', 'ls').stdout, /CACHE[\s\S]*\brw\b.*\bpage\b/);
    assert.equal(fs.readFileSync(`/sys/block/${path.basename(dev)}/loop/dio`, 'utf8').trim(), '0', 'a buffered loop device');
    assert.deepEqual(bdiOf(d, 'rw'), { strict_limit: '0', max_ratio: '100', read_ahead_kb: '1024' });
    await d.detach('rw');
    await d.stop();
  });

  it('buffered writes, detach without a sync, attach again: every byte is in the layer', async () => {
    const d = await startDeviced(tmp, cleanup, { deviceCache: 'page' });
    const { dev, cfg } = writableDevice(d, 'rw');
    writeFileSynced(tmp.join('src.bin'), 24 * MiB, 3);
    writeBuffered(tmp.join('src.bin'), dev, 8);
    await d.detach('rw');
    const again = d.attach(cfg, 'rw2');
    assert.equal(deviceSha(again, 8, 24 * MiB), sha256File(tmp.join('src.bin')));
    await d.detach('rw2');
    await d.stop();
    assert.deepEqual(leftovers(tmp.path), []);
  });

  it('kill -9 with synced and with dirty pages: the successor writes them back, nothing is lost', async () => {
    const d = await startDeviced(tmp, cleanup, { deviceCache: 'page' });
    const { dev, cfg } = writableDevice(d, 'rw');
    writeFileSynced(tmp.join('synced.bin'), 8 * MiB, 5);
    writeFileSynced(tmp.join('dirty.bin'), 16 * MiB, 7);
    run('dd', [`if=${tmp.join('synced.bin')}`, `of=${dev}`, 'bs=1M', 'conv=notrunc,fsync', 'status=none']);
    writeBuffered(tmp.join('dirty.bin'), dev, 16);

    await d.kill9();
    await d.restart();
    assert.match(d.logs(), /took over device from the previous deviced id=rw/);
    const [info] = JSON.parse(d.obd('device', 'ls', '--json').stdout) as Array<{ path: string; cache: string }>;
    assert.deepEqual([info.path, info.cache], [dev, 'page'], 'same device, still page-cached');
    await d.detach('rw');

    const again = d.attach(cfg, 'rw2');
    assert.equal(deviceSha(again, 0, 8 * MiB), sha256File(tmp.join('synced.bin')), 'synced before the kill');
    assert.equal(deviceSha(again, 16, 16 * MiB), sha256File(tmp.join('dirty.bin')), 'dirty at the kill');
    await d.detach('rw2');
    await d.stop();
  });

  it('auto: a lazy device starts direct and, mounted, becomes page-cached once its blobs are downloaded', () => lazyBecomesPageCached({ killFirst: false }));

  it('auto: after a kill -9 of deviced the successor still switches the lazy device it took over', () => lazyBecomesPageCached({ killFirst: true }));

  it('auto: a lazy writable device, mounted and written, becomes page-cached too; what it wrote either way is in its upper', () =>
    lazyBecomesPageCached({ killFirst: false, writable: true }));

  it('auto: a lazy writable device taken over after a kill -9 is switched by the successor; nothing it wrote is lost', () =>
    lazyBecomesPageCached({ killFirst: true, writable: true }));
});

/**
 * A lazy two-layer fixture stack, mounted; its blobs are downloaded in the background (after 3 s).
 * Writable: over a fresh upper, a file written (and synced) while direct and one written after the
 * switch (not synced) are both in the upper after unmount and detach.
 */
async function lazyBecomesPageCached(o: { killFirst: boolean; writable?: boolean }): Promise<void> {
  const registry = new TestRegistry();
  await registry.start();
  cleanup.add('stop registry', () => void registry.stop());
  run('tar', ['-xzf', path.join(FIXTURES, 'ext4_64.tar.gz'), '-C', tmp.path, 'ext4_64']);
  const lowers = [];
  for (const f of [tmp.join('ext4_64'), path.join(FIXTURES, 'e_ext4', 'e1.commit.lz4_bs4k.zfile')]) {
    const data = fs.readFileSync(f);
    lowers.push({ digest: await registry.pushBlob('obd/fixture', data), size: data.length });
  }
  const download = { enable: true, delay: 3, delayExtra: 0, maxMBps: 0, tryCnt: 5, blockSize: 262144 };
  const d = await startDeviced(tmp, cleanup, { deviceCache: 'auto', download, cacheConfig: { cacheDir: tmp.join('cache'), cacheSizeGB: 1 } });
  const upper = { data: tmp.join('u.data'), index: tmp.join('u.index') };
  if (o.writable) obdLayer(d, 'create', '--vsize', '64G', upper.data, upper.index);
  const cfg = writeImageConfig(tmp, 'lazy.json', { repoBlobUrl: `${registry.url}/v2/obd/fixture/blobs`, lowers, ...(o.writable ? { upper } : {}) });
  const dev = (await d.client.attach({ id: 'lazy', configPath: cfg })).path;
  const cacheOf = async () => (await d.client.list()).find((x) => x.id === 'lazy')?.cache;
  assert.equal(await cacheOf(), 'direct', 'lazy: direct I/O');
  const mnt = tmp.join('mnt');
  mountDev(cleanup, dev, mnt, o.writable ? 'rw' : 'ro,noload');
  const before = sha256File(path.join(mnt, 'bin/data.bin'));
  if (o.writable) {
    writeFileSynced(tmp.join('direct.bin'), 4 * MiB, 11);
    run('cp', [tmp.join('direct.bin'), path.join(mnt, 'direct.bin')]);
    run('sync', ['-f', mnt]);
  }
  if (o.killFirst) {
    assert.equal(await cacheOf(), 'direct', 'still direct at the kill');
    await d.kill9();
    await d.restart();
    assert.match(d.logs(), /took over device from the previous deviced id=lazy/);
  }
  for (let i = 0; (await cacheOf()) !== 'page'; i++) {
    assert.ok(i < 300, `not page-cached 60 s after the attach:\n${d.logs()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
  const switchedAt = d.logs().search(/device is page-cached now: all its blobs are local id=lazy/);
  assert.ok(switchedAt > 0, 'the switch is logged');
  if (o.killFirst) assert.ok(switchedAt > d.logs().search(/took over device/), 'the successor switched it');
  assert.equal(fs.readFileSync(`/sys/block/${path.basename(dev)}/loop/dio`, 'utf8').trim(), '0');
  if (o.writable) {
    writeFileSynced(tmp.join('page.bin'), 8 * MiB, 13);
    run('cp', [tmp.join('page.bin'), path.join(mnt, 'page.bin')]);
  }
  // The mounted filesystem lives on: its files read the same, from the page-cached device.
  run('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
  assert.equal(sha256File(path.join(mnt, 'bin/data.bin')), before);
  assert.ok(fs.readFileSync(path.join(mnt, 'etc/hello.txt'), 'utf8').length > 0);
  umount(mnt);
  await d.detach('lazy');
  if (o.writable) {
    // A new device over the same upper: what the first one wrote, direct and page-cached, is there.
    const again = (await d.client.attach({ id: 'again', configPath: cfg })).path;
    mountDev(cleanup, again, mnt, 'ro,noload');
    assert.equal(sha256File(path.join(mnt, 'direct.bin')), sha256File(tmp.join('direct.bin')), 'written while direct');
    assert.equal(sha256File(path.join(mnt, 'page.bin')), sha256File(tmp.join('page.bin')), 'written page-cached, not synced');
    assert.equal(sha256File(path.join(mnt, 'bin/data.bin')), before);
    umount(mnt);
    await d.detach('again');
  }
  await d.stop();
}
