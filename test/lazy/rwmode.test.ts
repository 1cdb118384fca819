// Container snapshots on an overlaybd image by rwMode (docs/labels.md), each through a real
// `ctr run --snapshotter obd`: a file written in the container ends up where the mode says —
// overlayfs: the snapshot's upperdir; dir: the private device's filesystem (a writable LSMT upper in
// block/); dev: the block device handed to containerd. A dev snapshot committed through containerd
// becomes a layer (overlaybd.sealed, localcommitpath label) another container runs on.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxTestImage } from '../helpers/images';
import { SnapshotsClient } from '../helpers/snapshotter';
import { LazyEnv } from './env';

interface ParsedMount {
  type: string;
  source: string;
  options: string[];
}

describe('rwMode: overlayfs, dir, dev', { timeout: 900_000 }, () => {
  const env = new LazyEnv();
  let ref = '';
  before(async () => {
    await env.start();
    ref = await env.convertImage(busyboxTestImage().spec, 'lazy/rw');
    await env.rpull(ref);
  });
  after(() => env.stop());

  const ctr = (args: string[]) => env.containerd.ctr(args);
  /** Runs `cmd` in a new container (kept after exit) with optional snapshot labels. */
  const runKept = (id: string, cmd: string, labels: Record<string, string> = {}) =>
    ctr([
      'run', '--runc-root', env.containerd.runcRoot, '--snapshotter', 'obd',
      ...Object.entries(labels).flatMap(([k, v]) => ['--snapshotter-label', `${k}=${v}`]),
      ref, id, '/bin/sh', '-c', cmd,
    ]);
  /** The mount containerd would do for snapshot `key`, from `ctr snapshots mounts`. */
  const parseMountLine = (out: string): ParsedMount => {
    const line = out.trim();
    const m = /^mount -t (\S+) (\S+) \/target -o (\S+)$/.exec(line);
    assert.ok(m, `unexpected mounts output: ${line}`);
    return { type: m[1], source: m[2], options: m[3].split(',') };
  };
  const mountOf = async (key: string): Promise<ParsedMount> =>
    parseMountLine((await ctr(['snapshots', '--snapshotter', 'obd', 'mounts', '/target', key])).stdout);
  const snapshotDirOf = (p: string) => /^(.*\/snapshots\/\d+)\//.exec(p)![1];

  it('overlayfs: writes land in the container snapshot upperdir, over the shared read-only image device', async () => {
    const out = (await runKept('ov', 'echo ov-data > /written; cat /etc/msg')).stdout;
    assert.equal(out, 'layer3\n');
    const m = await mountOf('ov');
    assert.equal(m.type, 'overlay');
    const upper = m.options.find((o) => o.startsWith('upperdir='))!.slice('upperdir='.length);
    const lower = m.options.find((o) => o.startsWith('lowerdir='))!.slice('lowerdir='.length);
    assert.equal(fs.readFileSync(path.join(upper, 'written'), 'utf8'), 'ov-data\n');
    assert.ok(lower.endsWith('/block/mountpoint') && !lower.includes(':'), `single lowerdir on the image device: ${lower}`);
    assert.equal(fs.readFileSync(path.join(lower, 'etc/msg'), 'utf8'), 'layer3\n');
    assert.ok(!fs.existsSync(path.join(lower, 'written')), 'the image device is read-only and shared');
    await ctr(['containers', 'rm', 'ov']);
  });

  it('a View of the image top layer is a read-only bind of its mounted device', async () => {
    const rows = (await ctr(['snapshots', '--snapshotter', 'obd', 'ls'])).stdout.trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/));
    const parents = new Set(rows.map((r) => r[1]));
    const top = rows.find((r) => r[2] === 'Committed' && !parents.has(r[0]))![0];
    // The mounts come back from the View call itself: nothing references the view, so containerd's
    // GC may remove it before a separate `ctr snapshots mounts` would run.
    const m = parseMountLine((await ctr(['snapshots', '--snapshotter', 'obd', 'view', '--target', '/target', 'vw', top])).stdout);
    assert.equal(m.type, 'bind');
    assert.deepEqual(m.options, ['ro', 'rbind']);
    assert.equal(fs.readFileSync(path.join(m.source, 'etc/msg'), 'utf8'), 'layer3\n');
    // (containerd's GC may have removed the unreferenced view already)
    await ctr(['snapshots', '--snapshotter', 'obd', 'rm', 'vw']).catch(() => undefined);
  });

  it('dir: writes land in the private writable device (LSMT upper in block/), bind-mounted', async () => {
    const out = (await runKept('dirc', 'echo dir-data > /written; cat /etc/msg', { 'containerd.io/snapshot/overlaybd.writable': 'dir' })).stdout;
    assert.equal(out, 'layer3\n');
    const m = await mountOf('dirc');
    assert.equal(m.type, 'bind');
    assert.ok(m.source.endsWith('/block/mountpoint'), m.source);
    assert.equal(fs.readFileSync(path.join(m.source, 'written'), 'utf8'), 'dir-data\n');
    const snap = snapshotDirOf(m.source);
    assert.ok(!fs.existsSync(path.join(snap, 'fs', 'written')), 'nothing in fs/: the data is on the device');
    assert.ok(fs.statSync(path.join(snap, 'block', 'writable_data')).size > 4096, 'the writable upper grew');
    await ctr(['containers', 'rm', 'dirc']);
    // containerd removes backend snapshots in its garbage collection, shortly after.
    for (let i = 0; i < 100 && fs.existsSync(snap); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(!fs.existsSync(snap), 'Remove unmounts, detaches and deletes the snapshot');
    assert.ok(!(await env.deviceStats()).some((d) => /-w\d+$/.test(d.id)), 'its private device is detached');
  });

  it('dev: Mounts hands out the block device; a commit seals the upper into a layer another container runs on', async () => {
    const out = (await runKept('devc', 'echo dev-data > /written; cat /etc/msg', { 'containerd.io/snapshot/overlaybd.writable': 'dev' })).stdout;
    assert.equal(out, 'layer3\n');
    const m = await mountOf('devc');
    assert.equal(m.type, 'ext4');
    assert.match(m.source, /^\/dev\/loop\d+$/);
    assert.deepEqual(m.options, ['rw', 'discard']);

    await ctr(['snapshots', '--snapshotter', 'obd', 'commit', 'devc-layer', 'devc']);
    const info = JSON.parse((await ctr(['snapshots', '--snapshotter', 'obd', 'info', 'devc-layer'])).stdout);
    const sealed = info.Labels['containerd.io/snapshot/overlaybd.localcommitpath'];
    assert.ok(sealed && fs.existsSync(sealed), `localcommitpath label names the sealed layer: ${JSON.stringify(info.Labels)}`);
    assert.ok(sealed.endsWith('/fs/overlaybd.sealed'));

    await ctr(['snapshots', '--snapshotter', 'obd', 'prepare', 'child', 'devc-layer']);
    const cm = await mountOf('child');
    assert.equal(cm.type, 'overlay');
    const rootfs = env.tmp.join('child-rootfs');
    fs.mkdirSync(rootfs);
    execFileSync('mount', ['-t', cm.type, cm.source, rootfs, '-o', cm.options.join(',')]);
    try {
      const r = await ctr(['run', '--rm', '--runc-root', env.containerd.runcRoot, '--rootfs', rootfs, 'childc', '/bin/sh', '-c', 'cat /written /etc/msg']);
      assert.equal(r.stdout, 'dev-data\nlayer3\n');
    } finally {
      execFileSync('umount', [rootfs]);
    }
    await ctr(['snapshots', '--snapshotter', 'obd', 'rm', 'child']);
    await ctr(['containers', 'rm', 'devc']).catch(() => undefined); // its snapshot is committed already
  });

  it('a parentless snapshot labelled writable=dir is a fresh ext4 disk; committed, it is the base layer of the next', async () => {
    // Through containerd with gc.root labels: containerd's GC removes backend snapshots its own
    // metadata does not know, so snapshots made behind its back can vanish mid-test.
    const sn = new SnapshotsClient(env.containerd.address, 'obd', env.containerd.namespace);
    const root = { 'containerd.io/gc.root': 'test' };
    try {
      const m = await sn.prepare('base-w', '', { ...root, 'containerd.io/snapshot/overlaybd.writable': 'dir', 'containerd.io/snapshot/overlaybd/vsize': '1' });
      assert.equal(m[0].type, 'bind');
      fs.writeFileSync(path.join(m[0].source, 'hello'), 'from the base layer\n');
      execFileSync('sync');
      await sn.commit('base', 'base-w', root);
      const info = await sn.stat('base');
      assert.ok(fs.existsSync(info.labels['containerd.io/snapshot/overlaybd.localcommitpath']));
      const child = await sn.prepare('on-base', 'base', root);
      const lower = child[0].options.find((o) => o.startsWith('lowerdir='))!.slice('lowerdir='.length);
      assert.equal(fs.readFileSync(path.join(lower, 'hello'), 'utf8'), 'from the base layer\n');
      await sn.remove('on-base');
      await sn.remove('base');
    } finally {
      sn.close();
    }
  });
});
