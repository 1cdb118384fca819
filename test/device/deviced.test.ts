// deviced with the fuse-loop transport, end to end: real loop devices, real ext4, real mounts.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { obdBin } from '../helpers/bin';
import type { Cleanup } from '../helpers/loop';
import { freePort } from '../helpers/registry';
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
  treeDigest,
  umount,
  writeFileSynced,
  writeImageConfig,
} from './harness';

const MiB = 1 << 20;

let tmp: TempDir;
let cleanup: Cleanup;

beforeEach(() => ({ tmp, cleanup } = startTestDir('obd-device-')));
afterEach(() => finishTestDir(tmp, cleanup));

function loopBound(dev: string): boolean {
  return fs.existsSync(`/sys/block/${path.basename(dev)}/loop/backing_file`);
}

async function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('deviced fuse-loop', { timeout: 600_000 }, () => {
  it('writable stack: mkfs, write, commit; base+committed read-only has every file intact', async () => {
    const d = await startDeviced(tmp, cleanup);
    const mnt = tmp.join('mnt');
    const expected = new Map<string, string>();
    const snapshot = () => {
      expected.clear();
      for (const [k, v] of treeDigest(mnt)) expected.set(k, v);
    };

    // Layer 1: a fresh writable layer, formatted and filled.
    obdLayer(d, 'create', '--vsize', '256M', '--uuid', '11111111-0000-4000-8000-000000000001', tmp.join('a.data'), tmp.join('a.index'));
    const cfgA = writeImageConfig(tmp, 'a.json', {
      upper: { data: tmp.join('a.data'), index: tmp.join('a.index') },
      resultFile: tmp.join('a.result'),
    });
    const devA = d.attach(cfgA, 'layer-a');
    assert.match(devA, /^\/dev\/loop\d+$/);
    assert.equal(d.attach(cfgA, 'layer-a'), devA, 'attach is idempotent for the same id and config');
    const other = writeImageConfig(tmp, 'other.json', { upper: { data: tmp.join('a.data'), index: tmp.join('a.index') }, resultFile: tmp.join('x') });
    assert.match(d.obd('device', 'attach', other, '--id', 'layer-a').stderr, /already attached .* with a different config/);
    assert.equal(fs.readFileSync(tmp.join('a.result'), 'utf8'), 'success');
    run('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', devA]);
    mountDev(cleanup, devA, mnt, 'rw');
    const sizes = [0, 1, 511, 4095, 4096, 65537, 1 * MiB + 3, 5 * MiB];
    sizes.forEach((n, i) => writeFileSynced(path.join(mnt, `dir${i % 3}`, `sub${i % 2}`, `f${i}.bin`), n, i + 1));
    fs.symlinkSync('dir0/sub0/f0.bin', path.join(mnt, 'link'));
    writeFileSynced(path.join(mnt, 'doomed.txt'), 1000, 99);
    umount(mnt);
    await d.detach('layer-a');
    assert.equal(loopBound(devA), false, 'detach unbinds the loop device');
    obdLayer(d, 'commit', '--uuid', '11111111-0000-4000-8000-000000000001', tmp.join('a.data'), tmp.join('a.index'), tmp.join('a.lsmt'));

    // Layer 2: writable over the committed base; overwrite, delete, add, trim.
    obdLayer(d, 'create', '--vsize', '256M', '-p', '11111111-0000-4000-8000-000000000001', tmp.join('b.data'), tmp.join('b.index'));
    const cfgB = writeImageConfig(tmp, 'b.json', {
      lowers: [{ file: tmp.join('a.lsmt') }],
      upper: { data: tmp.join('b.data'), index: tmp.join('b.index') },
    });
    const devB = d.attach(cfgB, 'layer-b');
    mountDev(cleanup, devB, mnt, 'rw');
    writeFileSynced(path.join(mnt, 'dir1', 'sub1', 'f1.bin'), 300_000, 7);
    fs.unlinkSync(path.join(mnt, 'doomed.txt'));
    writeFileSynced(path.join(mnt, 'new', 'g.bin'), 2 * MiB, 8);
    run('fstrim', [mnt]); // discards reach the writable layer as zeroed extents
    run('sync', ['-f', path.join(mnt, 'new')]);
    snapshot();
    umount(mnt);
    const stats = JSON.parse(d.obd('device', 'stats', '--json', 'layer-b').stdout);
    assert.ok(stats[0].writeBytes >= 2 * MiB, 'kernel writes counted');
    assert.equal(stats[0].errors, 0);
    await d.detach(devB);
    obdLayer(d, 'commit', '-z', tmp.join('b.data'), tmp.join('b.index'), tmp.join('b.zfile'));

    // base + committed, read-only.
    const cfgC = writeImageConfig(tmp, 'c.json', { lowers: [{ file: tmp.join('a.lsmt') }, { file: tmp.join('b.zfile') }] });
    const devC = d.attach(cfgC, 'image');
    assert.equal(run('blockdev', ['--getro', devC]).trim(), '1', 'no upper: the loop device is read-only');
    mountDev(cleanup, devC, mnt, 'ro,noload');
    assert.deepEqual(treeDigest(mnt), expected);
    assert.ok(expected.size > sizes.length);
    umount(mnt);
    await d.detach('image');
    assert.equal(JSON.parse(d.obd('device', 'ls', '--json').stdout).length, 0);
  });

  it('upstream ext4 fixture stack read-only: the expected files are there', async () => {
    const port = await freePort();
    const d = await startDeviced(tmp, cleanup, { exporterConfig: { enable: true, uriPrefix: '/metrics', port } });
    run('tar', ['-xzf', path.join(FIXTURES, 'ext4_64.tar.gz'), '-C', tmp.path, 'ext4_64']);
    const cfg = writeImageConfig(tmp, 'e.json', {
      lowers: [
        { file: tmp.join('ext4_64') },
        { file: path.join(FIXTURES, 'e_ext4', 'e1.commit.lz4_bs4k.zfile') },
        { file: path.join(FIXTURES, 'e_ext4', 'e2.commit.lz4_bs4k.zfile') },
      ],
    });
    const dev = d.attach(cfg, 'fixture-e');
    const mnt = tmp.join('mnt');
    mountDev(cleanup, dev, mnt, 'ro,noload');
    assert.equal(fs.readFileSync(path.join(mnt, 'etc/hello.txt'), 'utf8'), 'hello overlaybd, modified in e2\n');
    assert.equal(fs.existsSync(path.join(mnt, 'etc/to_delete.txt')), false, 'whiteout applied in e2');
    assert.equal(fs.readFileSync(path.join(mnt, 'etc/empty.txt')).length, 0);
    const data = fs.readFileSync(path.join(mnt, 'bin/data.bin'));
    assert.equal(data.length, 100000);
    assert.ok(data.every((b, i) => b === (i * 7) % 251));
    assert.equal(fs.readlinkSync(path.join(mnt, 'bin/link_to_data')), 'data.bin');
    assert.deepEqual(fs.readdirSync(path.join(mnt, 'opaque')).sort(), ['new.txt']);
    assert.ok(fs.statSync(path.join(mnt, 'empty_dir')).isDirectory());

    // Mounted: a plain detach is refused with a message naming the mount; ls shows it.
    const refused = d.obd('device', 'detach', 'fixture-e');
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /is mounted at .*mnt.*unmount it first or detach with force/);
    const ls = JSON.parse(d.obd('device', 'ls', '--json').stdout);
    assert.deepEqual(ls[0].mountedAt, [mnt]);
    const st = (await d.client.stats('fixture-e'))[0];
    assert.ok(st.readBytes > 0 && st.readOps > 0);
    const human = d.obd('device', 'stats');
    assert.match(human.stdout, /fixture-e\s+\/dev\/loop\d+/, human.stderr);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    // The metrics listen on 127.0.0.1 only unless exporterConfig.address says otherwise.
    const portHex = port.toString(16).toUpperCase().padStart(4, '0');
    const listening = ['/proc/net/tcp', '/proc/net/tcp6'].flatMap((f) => fs.readFileSync(f, 'utf8').split('\n').slice(1))
      .map((l) => l.trim().split(/\s+/)).filter((c) => c.length > 3 && c[1].endsWith(`:${portHex}`) && c[3] === '0A').map((c) => c[1].split(':')[0]);
    assert.deepEqual(listening, ['0100007F'], `metrics listen on 127.0.0.1 only (${listening.join(', ')})`);
    assert.match(metrics, /^obd_deviced_devices 1$/m);
    assert.match(metrics, new RegExp(`^obd_device_read_bytes_total\\{device="fixture-e",path="${dev}"\\} [1-9]\\d*$`, 'm'));

    // Forced: detach succeeds, the mounted filesystem gets errors (not a hang), and the loop device
    // is released once it is unmounted.
    assert.equal(d.obd('device', 'detach', '--force', 'fixture-e').status, 0);
    const r = spawnSync('dd', [`if=${path.join(mnt, 'bin/data.bin')}`, 'of=/dev/null', 'iflag=direct'], { timeout: 30_000 });
    assert.notEqual(r.status, 0, 'I/O after a forced detach fails');
    umount(mnt);
    await waitFor('loop device release', () => !fs.existsSync(`/sys/block/${path.basename(dev)}/loop/backing_file`));
  });

  it('bad configs fail to attach with a clear error and leave no half-made device', async () => {
    const d = await startDeviced(tmp, cleanup);
    const corrupt = tmp.join('corrupt.lsmt');
    const garbage = Buffer.alloc(64 * 1024);
    for (let i = 0; i < garbage.length; i++) garbage[i] = (i * 131 + 17) & 0xff;
    fs.writeFileSync(corrupt, garbage);
    const truncated = tmp.join('truncated.lsmt');
    fs.writeFileSync(truncated, fs.readFileSync(path.join(FIXTURES, 'e_ext4', 'e1.commit.lsmt')).subarray(0, 1 << 20));
    obdLayer(d, 'create', '--vsize', '64M', tmp.join('u.data'), tmp.join('u.index'));
    const cases: Array<[string, object, RegExp]> = [
      ['missing layer file', { lowers: [{ file: tmp.join('nope.lsmt') }] }, /lowers\[0\]: layer file .*nope\.lsmt does not exist/],
      ['corrupt layer', { lowers: [{ file: corrupt }] }, /corrupt\.lsmt/],
      ['truncated layer', { lowers: [{ file: truncated }] }, /truncated\.lsmt/],
      ['upper without index', { upper: { data: tmp.join('u.data') } }, /"upper\.data" is set but "upper\.index" is missing/],
      ['upper index missing on disk', { upper: { data: tmp.join('u.data'), index: tmp.join('gone.index') } }, /gone\.index/],
      ['remote lower without size', { repoBlobUrl: 'http://127.0.0.1:1/v2/x/blobs', lowers: [{ digest: 'sha256:' + 'a'.repeat(64) }] }, /"size" is required/],
      ['remote lower without repoBlobUrl', { lowers: [{ digest: 'sha256:' + 'a'.repeat(64), size: 10 }] }, /"repoBlobUrl" is empty/],
      ['not JSON', { lowers: 'x' }, /"lowers" must be an array/],
    ];
    for (const [name, cfg, msg] of cases) {
      const file = writeImageConfig(tmp, `bad-${cases.findIndex((c) => c[0] === name)}.json`, { ...cfg, resultFile: tmp.join('bad.result') });
      const r = d.obd('device', 'attach', file, '--id', 'bad');
      assert.notEqual(r.status, 0, `${name}: attach must fail`);
      assert.match(r.stderr, msg, `${name}: ${r.stderr}`);
      assert.match(fs.readFileSync(tmp.join('bad.result'), 'utf8'), /^failed:/, `${name}: resultFile`);
      assert.deepEqual(await d.client.list(), [], `${name}: nothing attached`);
      assert.deepEqual(fs.readdirSync(path.join(d.stateDir, 'devices')), [], `${name}: no state left`);
      assert.deepEqual(fs.readdirSync(path.join(d.stateDir, 'mnt')), [], `${name}: no mount dir left`);
      assert.deepEqual(leftovers(tmp.path), [], `${name}: no mount or loop device left`);
    }
    // deviced survived all of it; a good device outlives a graceful restart (re-attached from its record).
    const ok = writeImageConfig(tmp, 'ok.json', { upper: { data: tmp.join('u.data'), index: tmp.join('u.index') } });
    const first = d.attach(ok, 'ok');
    await d.stop();
    assert.equal(loopBound(first), true, 'a stopped deviced hands its device over (the fd holder keeps it)');
    await d.restart();
    assert.match(d.logs(), /took over device from the previous deviced id=ok/);
    assert.deepEqual((await d.client.list()).map((x) => [x.id, x.path]), [['ok', first]]);
    await d.detach('ok');
  });

  it('buffered writes far beyond a memory cgroup limit complete (writer and deviced both limited)', async (t) => {
    const base = ['/sys/fs/cgroup/memory', '/sys/fs/cgroup'].find((p) => fs.existsSync(path.join(p, 'cgroup.procs')) && (fs.existsSync(path.join(p, 'memory.limit_in_bytes')) || fs.existsSync(path.join(p, 'memory.max'))));
    if (!base) return t.skip('no memory cgroup controller');
    const v1 = fs.existsSync(path.join(base, 'memory.limit_in_bytes'));
    const groups: string[] = [];
    const makeGroup = (name: string, bytes: number): string => {
      const g = path.join(base, `${name}-${process.pid}`);
      fs.mkdirSync(g);
      groups.push(g);
      fs.writeFileSync(path.join(g, v1 ? 'memory.limit_in_bytes' : 'memory.max'), String(bytes));
      return g;
    };
    cleanup.add('remove cgroups', () => {
      for (const g of groups) for (let i = 0; i < 50 && fs.existsSync(g); i++) {
        try {
          fs.rmdirSync(g);
        } catch {
          spawnSync('sleep', ['0.1']);
        }
      }
    });
    const devicedGroup = makeGroup('obd-test-deviced', 160 * MiB);
    const writerGroup = makeGroup('obd-test-writer', 48 * MiB);
    const d = await startDeviced(tmp, cleanup);
    fs.writeFileSync(path.join(devicedGroup, 'cgroup.procs'), String(d.pid()));
    obdLayer(d, 'create', '--vsize', '1G', tmp.join('m.data'), tmp.join('m.index'));
    const dev = d.attach(writeImageConfig(tmp, 'm.json', { upper: { data: tmp.join('m.data'), index: tmp.join('m.index') } }), 'memcg');
    run('mkfs.ext4', ['-q', '-F', dev]);
    const mnt = tmp.join('mnt');
    mountDev(cleanup, dev, mnt, 'rw');
    const out = path.join(mnt, 'big.bin');
    const w = spawnSync('sh', ['-c', `echo $$ > ${writerGroup}/cgroup.procs && exec dd if=/dev/urandom of=${out} bs=1M count=320 conv=fsync status=none`], { timeout: 300_000 });
    assert.equal(w.error, undefined, 'the writer did not hang');
    assert.equal(w.status, 0, `writer failed: ${w.stderr}`);
    const sum = run('sha256sum', [out]).split(' ')[0];
    umount(mnt);
    run('sh', ['-c', 'echo 3 > /proc/sys/vm/drop_caches']);
    mountDev(cleanup, dev, mnt, 'ro');
    assert.equal(sha256File(out), sum, 'what was written reads back');
    umount(mnt);
    await d.detach('memcg');
    assert.equal((await d.client.stats()).length, 0);
  });

  it('asking for tcmu on a kernel without target_core_user fails at start, naming the module', async (t) => {
    if (fs.existsSync('/sys/module/target_core_user')) return t.skip('this kernel has target_core_user: there is no missing module to name');
    fs.writeFileSync(tmp.join('tcmu.json'), JSON.stringify({ root: tmp.join('root'), deviceAddress: tmp.join('d.sock'), transport: 'tcmu' }));
    const r = spawnSync(process.execPath, [obdBin(), 'deviced', '--config', tmp.join('tcmu.json')], {
      encoding: 'utf8',
      timeout: 30_000,
    });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /transport "tcmu" needs .*kernel lacks .*target_core_user \(CONFIG_TCM_USER2\)/);
    assert.match(r.stderr, /tcm_loop/);
    assert.doesNotMatch(r.stderr, /deviced serving/);
  });

  it('transport auto on a kernel without tcmu falls back to fuse-loop and logs why', async (t) => {
    if (fs.existsSync('/sys/module/target_core_user')) return t.skip('this kernel has target_core_user: auto picks tcmu, there is no fallback to show');
    const d = await startDeviced(tmp, cleanup, { transport: 'auto' });
    assert.match(d.logs(), /transport chosen transport=fuse-loop reason=".*target_core_user \(CONFIG_TCM_USER2\)/);
    assert.match(d.logs(), /deviced serving .*transport=fuse-loop/);
    obdLayer(d, 'create', '--vsize', '64M', tmp.join('u.data'), tmp.join('u.index'));
    const cfg = writeImageConfig(tmp, 'u.json', { upper: { data: tmp.join('u.data'), index: tmp.join('u.index') } });
    assert.match(d.attach(cfg, 'auto-1'), /^\/dev\/loop\d+$/);
    const [info] = JSON.parse(d.obd('device', 'ls', '--json').stdout) as Array<{ id: string; transport: string }>;
    assert.deepEqual([info.id, info.transport], ['auto-1', 'fuse-loop']);
    const [st] = await d.client.stats('auto-1');
    assert.equal(st.ringCommands, 0, 'fuse-loop has no TCMU ring');
    await d.detach('auto-1');
  });
});
