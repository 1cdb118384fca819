// Commit of a writable (dir) snapshot survives kill -9 at every step: the snapshotter is killed at
// each crash point of the sealing sequence (OBD_TEST_CRASH_AT, test only), restarted, and the
// snapshot still Commits (or is committed already), and a container snapshot on it Mounts and sees
// the data written before the commit.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SnapshotsClient } from '../helpers/snapshotter';
import { LazyEnv } from './env';

const WRITABLE = 'containerd.io/snapshot/overlaybd.writable';
const POINTS = ['commit-1', 'commit-2', 'commit-3', 'commit-4', 'commit-5'];

describe('commit of a dir snapshot under kill -9', { timeout: 900_000 }, () => {
  const env = new LazyEnv();
  let client: SnapshotsClient;
  before(async () => {
    await env.startDevicedAndSnapshotter();
    client = new SnapshotsClient(env.snapshotter.address);
  });
  after(async () => {
    client.close();
    await env.stop();
  });

  const restart = async (crashAt?: string) => {
    await env.snapshotter.stop();
    if (crashAt) process.env.OBD_TEST_CRASH_AT = crashAt;
    try {
      await env.snapshotter.start();
    } finally {
      delete process.env.OBD_TEST_CRASH_AT;
    }
  };

  for (const point of POINTS) {
    it(`killed at ${point}: the snapshot commits and its child mounts after a restart`, async () => {
      const key = `w-${point}`;
      const name = `c-${point}`;
      const [m] = await client.prepare(key, '', { [WRITABLE]: 'dir' });
      assert.equal(m.type, 'bind');
      fs.writeFileSync(path.join(m.source, 'hello'), `written before ${point}\n`);
      await restart(point);
      await assert.rejects(client.commit(name, key), 'the snapshotter died in the middle of the commit');
      await env.snapshotter.stop(); // reap the killed process
      await restart();
      const committed = await client.stat(name).then(
        (i) => i.kind === 'COMMITTED',
        () => false,
      );
      if (!committed) await client.commit(name, key);
      const info = await client.stat(name);
      assert.equal(info.kind, 'COMMITTED');
      assert.ok(info.labels['containerd.io/snapshot/overlaybd.localcommitpath']?.endsWith('/fs/overlaybd.sealed'));
      const child = `k-${point}`;
      const [cm] = await client.prepare(child, name, { [WRITABLE]: 'dir' });
      assert.equal(fs.readFileSync(path.join(cm.source, 'hello'), 'utf8'), `written before ${point}\n`);
      const [again] = await client.mounts(child);
      assert.equal(again.source, cm.source);
      await client.remove(child);
      await client.remove(name);
    });
  }
});
