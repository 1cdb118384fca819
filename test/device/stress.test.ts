// Concurrent random reads and writes through a served stack, verified by fio against the data it
// wrote (crc32c verify headers in every block): a writer overwrites one half of the disk with random
// sizes (4..64 KiB) and FLUSHes now and then, verifying behind itself as it goes, while a reader
// re-reads and verifies the other half, which lives in the lower layer. Then the device is detached
// and attached again (the writable layer's index log is replayed) and both halves are verified once
// more, and the device ls must name the FUSE path it ran on. Run once per FUSE path: /dev/fuse
// read/write, and FUSE over io_uring (the fuse module's enable_uring is switched on for that run and
// restored afterwards), and once per device cache mode: page-cached (the FUSE file's page cache and its
// writeback cache between the loop device and deviced; detach without a sync must write it back)
// and direct.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { Cleanup } from '../helpers/loop';
import { TempDir } from '../helpers/tmp';
import { Deviced, enableFuseIoUring, finishTestDir, startDeviced, startTestDir, writeImageConfig } from './harness';

const HALF = '32M';

let tmp: TempDir;
let cleanup: Cleanup;

beforeEach(() => ({ tmp, cleanup } = startTestDir('obd-stress-')));
afterEach(() => finishTestDir(tmp, cleanup));

/** Job options of the lower half: written once in phase 1, re-read with the same seed later. */
const lowerJob = ['--name=lower', '--offset=32M', `--size=${HALF}`, '--rw=randwrite', '--bs=4k', '--randseed=7', '--verify=crc32c'];
/** Job options of the upper half: random sizes, verified behind the writer, periodic FLUSH. */
const upperJob = ['--name=upper', '--offset=0', `--size=${HALF}`, '--rw=randwrite', '--bsrange=4k-64k', '--randseed=11', '--verify=crc32c'];

function fio(dev: string, ...args: string[]): void {
  // cwd: fio leaves its verify state files in the working directory; keep them in the test's temp dir.
  const r = spawnSync('fio', [`--filename=${dev}`, '--direct=1', '--ioengine=libaio', '--verify_fatal=1', '--verify_state_save=0', '--output-format=terse', ...args], {
    cwd: tmp.path,
    encoding: 'utf8',
    timeout: 300_000,
  });
  assert.ok(!r.error, `fio could not run (is fio installed? scripts/install-deps.sh installs it): ${r.error}`);
  assert.equal(r.status, 0, `fio ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
}

function obdOk(d: Deviced, ...args: string[]): string {
  const r = d.obd(...args);
  assert.equal(r.status, 0, `obd ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function stressRun(path: '/dev/fuse' | 'io_uring', cache: 'page' | 'direct'): Promise<void> {
  if (path === 'io_uring') enableFuseIoUring(cleanup);
  const d = await startDeviced(tmp, cleanup, { fuseIoUring: path === 'io_uring', deviceCache: cache });
  // Phase 1: the lower layer, written through a writable device and committed.
  obdOk(d, 'layer', 'create', '--vsize', '64M', tmp.join('l.data'), tmp.join('l.index'));
  const fill = d.attach(writeImageConfig(tmp, 'fill.json', { upper: { data: tmp.join('l.data'), index: tmp.join('l.index') } }), 'fill');
  fio(fill, ...lowerJob, '--iodepth=16', '--do_verify=0');
  obdOk(d, 'device', 'detach', 'fill');
  obdOk(d, 'layer', 'commit', tmp.join('l.data'), tmp.join('l.index'), tmp.join('l.lsmt'));

  const fusePaths = new Set<string>();
  const caches = new Set<string>();
  obdOk(d, 'layer', 'create', '--vsize', '64M', tmp.join('u.data'), tmp.join('u.index'));
  const cfg = writeImageConfig(tmp, 'rw.json', { lowers: [{ file: tmp.join('l.lsmt') }], upper: { data: tmp.join('u.data'), index: tmp.join('u.index') } });
  const dev = d.attach(cfg, 'rw');
  for (const x of JSON.parse(obdOk(d, 'device', 'ls', '--json'))) {
    fusePaths.add(x.fusePath);
    caches.add(x.cache);
  }
  // Phase 2: both at once, QD16 each, the reader several passes over its half.
  fio(
    dev,
    ...upperJob,
    '--iodepth=16',
    '--verify_backlog=64',
    '--fsync=64',
    ...lowerJob,
    '--iodepth=16',
    '--verify_only',
    '--loops=3',
  );
  await d.detach('rw');

  // Phase 3: the writable layer's log replayed on attach; both halves again, concurrently.
  const again = d.attach(cfg, 'rw2');
  fio(again, ...upperJob, '--iodepth=16', '--verify_only', ...lowerJob, '--iodepth=16', '--verify_only');
  const stats = JSON.parse(obdOk(d, 'device', 'stats', '--json', 'rw2'))[0];
  assert.equal(stats.errors, 0, 'the device reported I/O errors');
  await d.detach('rw2');
  assert.deepEqual([...fusePaths], [path], `device ls names the FUSE path the devices ran on`);
  assert.deepEqual([...caches], [cache], `device ls names the cache mode the devices ran in`);
  await d.stop();
}

describe('device stress: concurrent verified reads and writes', { timeout: 600_000 }, () => {
  for (const cache of ['page', 'direct'] as const) {
    it(`/dev/fuse, ${cache}: every block reads back as written, during the run and after re-attach`, () => stressRun('/dev/fuse', cache));
    it(`io_uring, ${cache}: every block reads back as written, during the run and after re-attach`, () => stressRun('io_uring', cache));
  }
});
