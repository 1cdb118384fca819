// Nothing is left behind when a writable snapshot cannot be made: mkfs failing in the snapshotter
// (a mkfs.ext4 on PATH that fails, a fault injected from outside) must not leave its writable device
// attached in deviced, nor a snapshot dir or record.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { SnapshotsClient } from '../helpers/snapshotter';
import { LazyEnv } from './env';

describe('leaks of failed creates', { timeout: 300_000 }, () => {
  const env = new LazyEnv();
  let client: SnapshotsClient;
  const bin = env.tmp.join('failing-bin');
  before(async () => {
    fs.mkdirSync(bin, { recursive: true });
    fs.writeFileSync(path.join(bin, 'mkfs.ext4'), '#!/bin/sh\necho "mkfs.ext4: injected failure" >&2\nexit 1\n', { mode: 0o755 });
    await env.startDeviced();
    const oldPath = process.env.PATH;
    process.env.PATH = `${bin}:${oldPath}`;
    try {
      await env.snapshotter.start();
    } finally {
      process.env.PATH = oldPath;
    }
    client = new SnapshotsClient(env.snapshotter.address);
  });
  after(async () => {
    client.close();
    await env.stop();
  });

  it('mkfs fails: the writable device is detached, no record and no snapshot dir stay', async () => {
    await assert.rejects(client.prepare('w', '', { 'containerd.io/snapshot/overlaybd.writable': 'dir' }), /injected failure/);
    assert.deepEqual(await env.deviceStats(), [], 'no device left attached in deviced');
    assert.equal((await client.list()).length, 0);
    const dirs = fs.readdirSync(path.join(env.snapshotter.root, 'snapshots'));
    assert.deepEqual(dirs, [], `no snapshot dir left: ${dirs.join(', ')}`);
  });
});
