// deviced restarts (kill -9, SIGTERM) under running I/O on fuse-loop devices: the fd holder keeps each
// device's /dev/fuse and /dev/loopN descriptors, the next deviced takes the connection over (same
// /dev/loopN, mounts untouched), the kernel resends what the dead process had read, and the I/O that
// waited meanwhile completes. Nothing fails, nothing acknowledged is lost.
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, it } from 'node:test';
import type { Cleanup } from '../helpers/loop';
import { TempDir } from '../helpers/tmp';
import {
  Deviced,
  finishTestDir,
  FIXTURES,
  holdersUnder,
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
import { clockMs, dropCaches, IoWorkload, stallAround, summarizeStalls } from '../helpers/io-workload';

const MiB = 1 << 20;

let tmp: TempDir;
let cleanup: Cleanup;

beforeEach(() => ({ tmp, cleanup } = startTestDir('obd-takeover-')));
afterEach(() => finishTestDir(tmp, cleanup));

/** A writable device (ext4 made here) and a read-only stack over the e_ext4 fixtures, both mounted. */
async function twoDevices(d: Deviced): Promise<{ rw: string; ro: string; rwMnt: string; roMnt: string }> {
  obdLayer(d, 'create', '--vsize', '256M', tmp.join('w.data'), tmp.join('w.index'));
  const rw = d.attach(writeImageConfig(tmp, 'w.json', { upper: { data: tmp.join('w.data'), index: tmp.join('w.index') } }), 'rw');
  run('mkfs.ext4', ['-q', '-F', rw]);
  run('tar', ['-xzf', path.join(FIXTURES, 'ext4_64.tar.gz'), '-C', tmp.path, 'ext4_64']);
  const roCfg = writeImageConfig(tmp, 'r.json', {
    lowers: [{ file: tmp.join('ext4_64') }, { file: path.join(FIXTURES, 'e_ext4', 'e1.commit.lz4_bs4k.zfile') }],
  });
  const ro = d.attach(roCfg, 'ro');
  const rwMnt = tmp.join('rw');
  const roMnt = tmp.join('ro');
  mountDev(cleanup, rw, rwMnt, 'rw');
  mountDev(cleanup, ro, roMnt, 'ro,noload');
  return { rw, ro, rwMnt, roMnt };
}

function roFiles(roMnt: string): string[] {
  return ['bin/data.bin', 'etc/hello.txt'].map((f) => path.join(roMnt, f));
}

function holderSocket(d: Deviced): string {
  return path.join(d.stateDir, 'fd-holder.sock');
}

async function detachAllAndStop(d: Deviced, mounts: string[]): Promise<void> {
  for (const m of mounts) umount(m);
  for (const dev of await d.client.list()) await d.detach(dev.id);
  await d.stop();
}

async function restartRounds(d: Deviced, how: 'kill -9' | 'SIGTERM', rounds: number): Promise<void> {
  const { rw, ro, rwMnt, roMnt } = await twoDevices(d);
  const writer = new IoWorkload('writer', 'write', [path.join(rwMnt, 'io')]);
  const reader = new IoWorkload('reader', 'read', roFiles(roMnt));
  cleanup.add('stop workloads', () => {
    writer.stop();
    reader.stop();
  });
  await Promise.all([writer.progress(5), reader.progress(5)]);
  const stalls: number[] = [];
  for (let r = 1; r <= rounds; r++) {
    dropCaches(); // the reads that follow reach the device, not the page cache
    const down = clockMs();
    if (how === 'kill -9') await d.kill9();
    else await d.stop();
    await d.restart();
    const up = clockMs();
    await Promise.all([writer.progress(3), reader.progress(3)]);
    const stall = Math.max(stallAround(writer, down, up), stallAround(reader, down, up));
    stalls.push(stall);
    console.log(`${how} round ${r}: deviced down for ${Math.round(up - down)} ms, longest I/O stall ${Math.round(stall)} ms`);
  }
  console.log(`${how}: ${summarizeStalls(stalls)}`);
  writer.stop();
  reader.stop();
  assert.deepEqual([writer.failure, reader.failure], [undefined, undefined], 'no I/O failed in either workload');
  const devs = await d.client.list();
  assert.deepEqual(devs.map((x) => [x.id, x.path]).sort(), [['ro', ro], ['rw', rw]], 'the same /dev/loopN throughout');
  const logs = d.logs();
  assert.equal(logs.match(/took over device from the previous deviced id=rw/g)?.length, rounds);
  assert.doesNotMatch(logs, /kernel cannot resend/);
  await detachAllAndStop(d, [rwMnt, roMnt]);
}

describe('deviced restarts keep fuse-loop devices running', { timeout: 900_000 }, () => {
  it('first start has no holder; kill -9 with I/O waiting: the next deviced takes over and the I/O completes', async () => {
    const d = await startDeviced(tmp, cleanup);
    assert.equal(fs.existsSync(holderSocket(d)), false, 'no holder before the first device');
    assert.deepEqual(holdersUnder(tmp.path), []);
    obdLayer(d, 'create', '--vsize', '128M', tmp.join('w.data'), tmp.join('w.index'));
    const dev = d.attach(writeImageConfig(tmp, 'w.json', { upper: { data: tmp.join('w.data'), index: tmp.join('w.index') } }), 'victim');
    assert.equal(holdersUnder(tmp.path).length, 1, 'the first device started the holder');
    run('mkfs.ext4', ['-q', '-F', dev]);
    const mnt = tmp.join('mnt');
    mountDev(cleanup, dev, mnt, 'rw');
    writeFileSynced(path.join(mnt, 'kept.bin'), 3 * MiB, 5);
    const keptSha = sha256File(path.join(mnt, 'kept.bin'));
    writeFileSynced(tmp.join('later.src'), 2 * MiB, 9);

    dropCaches(); // (a sync now would wait for the dead deviced)
    await d.kill9();
    // Issued while no deviced runs: they wait in the FUSE connection the holder keeps alive.
    const reading = runToEnd('dd', [`if=${path.join(mnt, 'kept.bin')}`, 'of=/dev/null', 'bs=64k', 'iflag=direct']);
    const writing = runToEnd('dd', [`if=${tmp.join('later.src')}`, `of=${path.join(mnt, 'later.bin')}`, 'bs=64k', 'conv=fsync']);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(reading.done, false, 'a read issued while deviced is down waits');
    assert.equal(writing.done, false, 'a write+fsync issued while deviced is down waits');

    await d.restart();
    assert.equal((await reading.result).status, 0, `read completed: ${reading.stderr}`);
    assert.equal((await writing.result).status, 0, `write+fsync completed: ${writing.stderr}`);
    assert.match(d.logs(), /took over device from the previous deviced id=victim device=\/dev\/loop\d+/);
    assert.deepEqual((await d.client.list()).map((x) => x.path), [dev], 'same /dev/loopN');
    dropCaches();
    assert.equal(sha256File(path.join(mnt, 'kept.bin')), keptSha);
    assert.equal(sha256File(path.join(mnt, 'later.bin')), sha256File(tmp.join('later.src')));

    umount(mnt);
    await d.detach('victim');
    assert.equal(holdersUnder(tmp.path).length, 1, 'the holder stays while deviced is connected');
    await d.stop();
    await waitFor('holder exit', () => holdersUnder(tmp.path).length === 0);
    assert.equal(fs.existsSync(holderSocket(d)), false, 'the holder removed its socket');
    assert.deepEqual(leftovers(tmp.path), []);
  });

  it('kill -9 rounds under a verifying writer and reader: zero I/O errors, same devices', async () => {
    await restartRounds(await startDeviced(tmp, cleanup), 'kill -9', 5);
  });

  it('SIGTERM hands devices over to the next deviced: zero I/O errors, same devices', async () => {
    const d = await startDeviced(tmp, cleanup);
    await restartRounds(d, 'SIGTERM', 3);
    assert.match(d.logs(), /handed device over to the next deviced id=rw/);
  });

  it('a restarted holder is given every held device again; detaching them all leaves nothing behind', async () => {
    const d = await startDeviced(tmp, cleanup);
    obdLayer(d, 'create', '--vsize', '64M', tmp.join('a.data'), tmp.join('a.index'));
    const dev = d.attach(writeImageConfig(tmp, 'a.json', { upper: { data: tmp.join('a.data'), index: tmp.join('a.index') } }), 'a');
    const [holder] = holdersUnder(tmp.path);
    process.kill(holder, 'SIGKILL');
    await waitFor('holder gone', () => holdersUnder(tmp.path).length === 0);
    // The next store operation finds the holder gone and starts a new one with everything in it.
    obdLayer(d, 'create', '--vsize', '64M', tmp.join('b.data'), tmp.join('b.index'));
    d.attach(writeImageConfig(tmp, 'b.json', { upper: { data: tmp.join('b.data'), index: tmp.join('b.index') } }), 'b');
    assert.equal(holdersUnder(tmp.path).length, 1);
    await d.kill9();
    await d.restart();
    assert.match(d.logs(), /took over device from the previous deviced id=a/);
    assert.deepEqual((await d.client.list()).find((x) => x.id === 'a')?.path, dev);
    await detachAllAndStop(d, []);
    await waitFor('holder exit', () => holdersUnder(tmp.path).length === 0);
    assert.deepEqual(leftovers(tmp.path), []);
  });
});

async function waitFor(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A command run in the background: done once it exited. */
function runToEnd(cmd: string, args: string[]): { done: boolean; stderr: string; result: Promise<{ status: number | null }> } {
  const p: ChildProcess = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  cleanup.add(`kill ${cmd}`, () => void (p.exitCode === null && p.kill('SIGKILL')));
  const r = { done: false, stderr: '', result: undefined as unknown as Promise<{ status: number | null }> };
  p.stderr!.on('data', (b: Buffer) => (r.stderr += b.toString()));
  r.result = new Promise((resolve) =>
    p.once('exit', (status) => {
      r.done = true;
      resolve({ status });
    }),
  );
  return r;
}
