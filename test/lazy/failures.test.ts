// What happens to running lazy containers when the parts around them fail or restart:
//  - the snapshotter restarts: the running container keeps working (its data path is in deviced);
//  - deviced is killed with SIGKILL: the container's uncached reads wait, and complete once the next
//    deviced has taken the device over (test/device/takeover.test.ts has the rounds); new containers run;
//  - the registry goes away: blocks in the block cache are still read, others fail with EIO within
//    the read deadline.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { busyboxTestImage, TarEntry } from '../helpers/images';
import { LazyEnv } from './env';

describe('failures under running lazy containers', { timeout: 900_000 }, () => {
  const env = new LazyEnv();
  let ref = '';
  const bigSha: string[] = [];
  before(async () => {
    await env.start();
    const img = busyboxTestImage();
    const big: TarEntry[] = [{ path: 'big', type: 'dir' }];
    for (let i = 0; i < 8; i++) {
      const data = crypto.randomBytes(2 << 20);
      bigSha.push(crypto.createHash('sha256').update(data).digest('hex'));
      big.push({ path: `big/f${i}`, type: 'file', data });
    }
    ref = await env.convertImage({ layers: [...(img.spec.layers as TarEntry[][]), big] }, 'lazy/fail');
    await env.rpull(ref);
  });
  after(() => env.stop());

  const ctr = (args: string[], timeoutMs?: number) => env.containerd.ctr(args, { timeoutMs });
  const startDetached = (id: string) =>
    ctr(['run', '-d', '--runc-root', env.containerd.runcRoot, '--snapshotter', 'obd', ref, id, '/bin/sleep', '100000']);
  let execSeq = 0;
  const exec = (id: string, cmd: string, timeoutMs = 90_000) =>
    ctr(['task', 'exec', '--exec-id', `e${++execSeq}`, id, '/bin/sh', '-c', cmd], timeoutMs);
  const stopContainer = async (id: string) => {
    await ctr(['task', 'kill', '-s', 'SIGKILL', id]).catch(() => undefined);
    await ctr(['task', 'delete', '-f', id], 60_000).catch(() => undefined);
    await ctr(['containers', 'rm', id]).catch(() => undefined);
  };

  it('a snapshotter restart leaves running containers working', async () => {
    await startDetached('sr');
    assert.equal((await exec('sr', 'cat /etc/msg')).stdout, 'layer3\n');
    await env.snapshotter.stop();
    assert.equal((await exec('sr', 'cat /data/keep.txt; ls /big | wc -l')).stdout.replace(/\s+/g, ' ').trim(), 'keep 8');
    await env.snapshotter.start();
    // containerd's connection to the proxy plugin comes back after its gRPC reconnect backoff.
    let out = '';
    for (let i = 0; ; i++) {
      try {
        out = await env.containerd.run(ref, `sr2-${i}`, ['/bin/cat', '/etc/msg'], ['--snapshotter', 'obd']);
        break;
      } catch (err) {
        if (i >= 30 || !/connection error|unavailable/.test((err as Error).message)) throw err;
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
    assert.equal(out, 'layer3\n');
    await stopContainer('sr');
  });

  it('kill -9 of deviced: an uncached read waits and completes once the next deviced took over; new containers run', async () => {
    await startDetached('kd');
    assert.equal((await exec('kd', 'cat /etc/msg')).stdout, 'layer3\n');
    await env.killDeviced('SIGKILL');
    const reading = exec('kd', 'sha256sum /big/f1');
    let done = false;
    void reading.then(() => (done = true), () => (done = true));
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(done, false, 'the read waits while no deviced runs');
    await env.startDeviced();
    assert.equal((await reading).stdout.split(' ')[0], bigSha[1], 'the read completed with the right data');
    assert.match(env.devicedLogs, /took over device from the previous deviced/);
    assert.equal(await env.containerd.run(ref, 'kd2', ['/bin/sh', '-c', 'cat /etc/msg; cat /big/f2 | wc -c'], ['--snapshotter', 'obd']), 'layer3\n2097152\n');
    await stopContainer('kd');
  });

  it('registry gone: cached blocks are still read, uncached reads fail with EIO within the deadline', async () => {
    await startDetached('rg');
    const cached = (await exec('rg', 'cat /big/f3 | wc -c')).stdout.trim();
    assert.equal(cached, '2097152');
    await env.registry.stop();
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3'); // the next reads must go to the device
    assert.equal((await exec('rg', 'cat /big/f3 | wc -c')).stdout.trim(), '2097152', 'served from the block cache');
    const t0 = Date.now();
    await assert.rejects(exec('rg', 'cat /big/f6 > /dev/null', 150_000), /Input\/output error/);
    const took = Date.now() - t0;
    assert.ok(took < 130_000, `uncached read failed after ${took} ms`);
    await stopContainer('rg');
  });
});
