// Labels are untrusted input (from whoever creates containers, and from image annotations):
//  - record-trace-path may only name a regular file in the config's traceDir (obd opens it as root);
//  - blob-fs-type is allow-listed (ext4, erofs, defaultFsType) and image devices are mounted nodev;
//  - vsize is capped by maxVsizeGB, and sizes only a fresh disk (over an image the upper takes its size);
//  - random label sets on Prepare/Commit/Mounts: every call answers, with success or an error that
//    names a label.
// Through a private containerd (ctr run) and directly against the snapshotter's socket.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxTestImage } from '../helpers/images';
import { SnapshotsClient } from '../helpers/snapshotter';
import { LazyEnv } from './env';

const L = {
  targetRef: 'containerd.io/snapshot.ref',
  imageRef: 'containerd.io/snapshot/image-ref',
  criImageRef: 'containerd.io/snapshot/cri.image-ref',
  criLayerDigest: 'containerd.io/snapshot/cri.layer-digest',
  blobDigest: 'containerd.io/snapshot/overlaybd/blob-digest',
  blobSize: 'containerd.io/snapshot/overlaybd/blob-size',
  fsType: 'containerd.io/snapshot/overlaybd/blob-fs-type',
  remote: 'containerd.io/snapshot/remote',
  writable: 'containerd.io/snapshot/overlaybd.writable',
  localCommitPath: 'containerd.io/snapshot/overlaybd.localcommitpath',
  vsize: 'containerd.io/snapshot/overlaybd/vsize',
  recordTrace: 'containerd.io/snapshot/overlaybd/record-trace',
  recordTracePath: 'containerd.io/snapshot/overlaybd/record-trace-path',
};

describe('untrusted labels', { timeout: 900_000 }, () => {
  const env = new LazyEnv();
  let ref = '';
  let client: SnapshotsClient;
  let top = '';
  before(async () => {
    await env.start();
    ref = await env.convertImage(busyboxTestImage().spec, 'labels/app');
    await env.rpull(ref);
    client = new SnapshotsClient(env.snapshotter.address);
    const all = await client.list();
    const parents = new Set(all.map((i) => i.parent));
    top = all.find((i) => i.kind === 'COMMITTED' && !parents.has(i.name))!.name;
  });
  after(async () => {
    client.close();
    await env.stop();
  });

  const run = (id: string, labels: Record<string, string>, cmd = 'cat /etc/msg') =>
    env.containerd.run(ref, id, ['/bin/sh', '-c', cmd], ['--snapshotter', 'obd', ...Object.entries(labels).flatMap(([k, v]) => ['--snapshotter-label', `${k}=${v}`])]);

  it('record-trace-path outside traceDir, or a symlink in it, is refused and the file is not touched', async () => {
    const outside = env.tmp.join('victim.empty');
    fs.writeFileSync(outside, '');
    await assert.rejects(run('trace-out', { [L.recordTrace]: 'yes', [L.recordTracePath]: outside }), (err: Error) => {
      assert.match(err.message, new RegExp(`${L.recordTracePath}.*trace directory`));
      return true;
    });
    assert.equal(fs.statSync(outside).size, 0, 'nothing was written to the file outside traceDir');
    const traceDir = path.join(env.snapshotter.root, 'traces');
    const link = path.join(traceDir, 'link.trace');
    fs.symlinkSync(outside, link);
    await assert.rejects(run('trace-link', { [L.recordTracePath]: link }), new RegExp(`${L.recordTracePath}.*(symlink|regular file)`));
    assert.equal(fs.statSync(outside).size, 0);
    // A non-empty host file outside traceDir is not read either (refused before any open).
    const secret = env.tmp.join('secret');
    fs.writeFileSync(secret, 'root:secret\n');
    await assert.rejects(run('trace-secret', { [L.recordTracePath]: secret }), new RegExp(L.recordTracePath));
    // Inside traceDir it works (records into the empty file).
    const good = path.join(traceDir, 'ok.trace');
    fs.writeFileSync(good, '');
    assert.equal(await run('trace-ok', { [L.recordTrace]: 'yes', [L.recordTracePath]: good }), 'layer3\n');
  });

  it('blob-fs-type outside the allow-list is refused naming the label; image devices are mounted nodev', async () => {
    await assert.rejects(client.prepare('fs-bad', '', { [L.writable]: 'dir', [L.fsType]: 'vfat' }), (err: Error) => {
      assert.match(err.message, /InvalidArgument|INVALID_ARGUMENT/);
      assert.match(err.message, new RegExp(`${L.fsType}.*not allowed`));
      return true;
    });
    await assert.rejects(
      client.prepare('fs-bad-layer', top, { [L.targetRef]: 'sha256:' + 'e'.repeat(64), [L.imageRef]: ref, [L.blobDigest]: 'sha256:' + 'f'.repeat(64), [L.blobSize]: '100', [L.fsType]: 'nfs' }),
      new RegExp(`${L.fsType}.*not allowed`),
    );
    assert.equal(await run('nodev', {}), 'layer3\n');
    const imageMounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(env.snapshotter.root) && l.includes('/block/mountpoint'));
    assert.ok(imageMounts.length > 0, 'the image device is mounted');
    for (const m of imageMounts) assert.match(m.split(' ')[5], /(^|,)nodev(,|$)/, `image device mounted nodev: ${m}`);
  });

  it('vsize above maxVsizeGB is refused naming the label and the limit', async () => {
    for (const v of ['65', '1000000000', '1e3', '-1', '0']) {
      await assert.rejects(client.prepare(`vs-${v}`, '', { [L.writable]: 'dir', [L.vsize]: v }), new RegExp(L.vsize), v);
    }
    await assert.rejects(client.prepare('vs-big', '', { [L.writable]: 'dir', [L.vsize]: '65' }), /maxVsizeGB/);
    const [m] = await client.prepare('vs-ok', '', { [L.writable]: 'dir', [L.vsize]: '2' });
    assert.equal(m.type, 'bind');
    await client.remove('vs-ok');
  });

  it('over an image the vsize label is ignored: the writable upper takes the image size, its filesystem mounts', async () => {
    const [m] = await client.prepare('vs-parent', top, { [L.writable]: 'dir', [L.vsize]: '1' });
    assert.equal(m.type, 'bind');
    const st = fs.statfsSync(m.source);
    assert.ok(st.blocks * st.bsize > 2 ** 30, `filesystem of ${st.blocks * st.bsize} bytes: the image's, not the 1 GiB label`);
    await client.remove('vs-parent');
  });

  it('fuzz: random label sets on Prepare/Commit/Mounts always answer, with success or an error naming a label', async (t) => {
    const seed = Number(process.env.OBD_FUZZ_SEED ?? Date.now() % 1e9);
    t.diagnostic(`seed ${seed} (OBD_FUZZ_SEED)`);
    let state = seed;
    const rnd = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const pick = <T>(xs: T[]): T => xs[Math.floor(rnd() * xs.length)];
    const traceDir = path.join(env.snapshotter.root, 'traces');
    const values: Record<string, string[]> = {
      [L.targetRef]: ['sha256:' + 'a'.repeat(64), 'x', ''],
      [L.imageRef]: [ref, 'not a ref', '127.0.0.1:1/none/app:v1', '::', ''],
      [L.criImageRef]: [ref, '127.0.0.1:1/none/app:v1', '%%%'],
      [L.criLayerDigest]: ['sha256:' + 'b'.repeat(64), 'sha256:xyz', ''],
      [L.blobDigest]: ['sha256:' + 'c'.repeat(64), 'md5:abc', '../../etc/passwd'],
      [L.blobSize]: ['1', '0', '-5', '1e30', 'abc', '18446744073709551616'],
      [L.fsType]: ['ext4', 'erofs', 'vfat', 'ext4;ro', 'nfs;addr=1.2.3.4', ''],
      [L.remote]: ['remote snapshot', 'x'],
      [L.writable]: ['dir', 'dev', 'overlayfs', 'rw', ''],
      [L.localCommitPath]: ['/etc/passwd', 'x'],
      [L.vsize]: ['1', '64', '65', '0', 'x', '99999999999'],
      [L.recordTrace]: ['yes', 'no'],
      [L.recordTracePath]: ['/etc/shadow', path.join(traceDir, 'missing'), 'relative', '/dev/zero'],
    };
    const names = Object.keys(values);
    const deadline = (p: Promise<unknown>, what: string) =>
      Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(`${what}: no answer in 60 s`)), 60_000).unref())]);
    const check = async (what: string, labels: Record<string, string>, p: Promise<unknown>): Promise<boolean> => {
      try {
        await deadline(p, what);
        return true;
      } catch (err) {
        const msg = (err as Error).message;
        assert.doesNotMatch(msg, /no answer in/, msg);
        // AlreadyExists: a remote layer target was recorded instead (containerd's protocol, not an error).
        if (/ALREADY_EXISTS|already exists/.test(msg)) return false;
        assert.ok(Object.keys(labels).some((k) => msg.includes(k)), `${what} with ${JSON.stringify(labels)}: error does not name a label: ${msg}`);
        return false;
      }
    };
    let ok = 0;
    for (let i = 0; i < 40; i++) {
      const labels: Record<string, string> = {};
      const n = 1 + Math.floor(rnd() * 5);
      for (let j = 0; j < n; j++) {
        const k = pick(names);
        labels[k] = pick(values[k]);
      }
      const key = `fuzz-${seed}-${i}`;
      const parent = rnd() < 0.5 ? top : '';
      if (!(await check(`Prepare ${key}`, labels, client.prepare(key, parent, labels)))) continue;
      ok++;
      await check(`Mounts ${key}`, labels, client.mounts(key));
      const commitLabels = rnd() < 0.5 ? labels : {};
      if (await check(`Commit ${key}`, labels, client.commit(`${key}-c`, key, commitLabels))) await client.remove(`${key}-c`);
      else await client.remove(key).catch(() => undefined);
    }
    t.diagnostic(`${ok} of 40 label sets were accepted`);
    // What is left (targets recorded by the fuzz) goes; nothing hangs.
    for (const i of await client.list()) if (i.name.startsWith('sha256:' + 'a'.repeat(8)) || i.name.includes('@fuzz-')) await client.remove(i.name).catch(() => undefined);
    void crypto;
  });
});
