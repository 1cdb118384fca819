// deviced restarts under running containers (issue: "without a single I/O error"), through a private
// containerd: a read-only (overlayfs-mode) container verifies reads of lazily fetched files, a
// dir-mode container writes, syncs and verifies, while deviced is killed (-9) or stopped (SIGTERM)
// and started again, round after round, with the page cache dropped before each round so reads
// reach the devices. Both must see zero I/O errors; the stall each restart causes is printed.
// A crash in the middle of a remote fetch (the registry delays the range read) must not lose the
// read: the kernel resends it to the next deviced. 20 rounds of each (OBD_RESTART_ROUNDS overrides);
// stalls are measured on the containers' own clock (the workload prints /proc/uptime per operation).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { FaultProxy } from '../helpers/fault-proxy';
import { busyboxTestImage, TarEntry } from '../helpers/images';
import { clockMs, dropCaches, IoWorkload, stallAround, summarizeStalls, VERIFY_IO_SCRIPT } from '../helpers/io-workload';
import { TestRegistry } from '../helpers/registry';
import { LazyEnv } from './env';

/** Rounds per kind (kill -9, SIGTERM, crash during a fetch). */
const ROUNDS = Number(process.env.OBD_RESTART_ROUNDS ?? 20);
const READER_FILES = 8; // 1 MiB each, read over and over by the overlayfs-mode container
const MiB = 1 << 20;
const WRITABLE = { 'containerd.io/snapshot/overlaybd.writable': 'dir' };

describe('deviced restarts under running containers', { timeout: 1_800_000 }, () => {
  const registry = new TestRegistry();
  let proxy: FaultProxy;
  let env: LazyEnv;
  let ref = '';
  const bigSha: string[] = []; // /big/f0.. (the reader's)
  const coldSha: string[] = []; // /cold/c0.. (one per fetch-crash round, never read before it)
  const workloads: IoWorkload[] = [];

  before(async () => {
    await registry.start();
    proxy = await FaultProxy.inFrontOf(registry.host);
    env = new LazyEnv({ registry });
    await env.start();
    const img = busyboxTestImage();
    const tools: TarEntry[] = [
      { path: 'bin', type: 'dir' },
      ...['sha256sum', 'dd', 'tee', 'sync', 'mkdir', 'head'].map((a): TarEntry => ({ path: `bin/${a}`, type: 'symlink', target: 'busybox' })),
      { path: 'verify-io.sh', type: 'file', mode: 0o755, data: fs.readFileSync(VERIFY_IO_SCRIPT) },
      { path: 'big', type: 'dir' },
      { path: 'cold', type: 'dir' },
    ];
    const file = (p: string, size: number, sums: string[]) => {
      const data = crypto.randomBytes(size);
      sums.push(crypto.createHash('sha256').update(data).digest('hex'));
      tools.push({ path: p, type: 'file', data });
    };
    for (let i = 0; i < READER_FILES; i++) file(`big/f${i}`, MiB, bigSha);
    // Past the reader's read-ahead (1 MiB); the rounds read them last to first (see below).
    file('big/pad', 3 * MiB, []);
    for (let i = 0; i < ROUNDS; i++) file(`cold/c${i}`, 2 * MiB, coldSha);
    const direct = await env.convertImage({ layers: [...(img.spec.layers as TarEntry[][]), tools] }, 'lazy/restarts');
    // Pulled through the fault proxy: the snapshot records its host, so deviced fetches through it.
    ref = direct.replace(registry.host, proxy.host);
    await env.rpull(ref);
  });
  after(async () => {
    workloads.forEach((w) => w.stop());
    await env?.stop();
    await proxy?.stop();
    await registry.stop();
  });

  const ctr = (args: string[], timeoutMs?: number) => env.containerd.ctr(args, { timeoutMs });
  const startDetached = (id: string, labels: Record<string, string> = {}) =>
    ctr([
      'run', '-d', '--runc-root', env.containerd.runcRoot, '--snapshotter', 'obd',
      ...Object.entries(labels).flatMap(([k, v]) => ['--snapshotter-label', `${k}=${v}`]),
      ref, id, '/bin/sleep', '100000',
    ]);
  let execSeq = 0;
  const exec = (id: string, cmd: string, timeoutMs = 120_000) =>
    ctr(['task', 'exec', '--exec-id', `e${++execSeq}`, id, '/bin/sh', '-c', cmd], timeoutMs);
  const workload = (id: string, mode: 'read' | 'write', args: string[]) => {
    const argv = ['ctr', '--address', env.containerd.address, '--namespace', env.containerd.namespace,
      'task', 'exec', '--exec-id', `w${++execSeq}`, id, '/bin/sh', '/verify-io.sh'];
    const w = new IoWorkload(`${id} ${mode}`, mode, args, argv);
    workloads.push(w);
    return w;
  };

  it(`${ROUNDS} kill -9 and ${ROUNDS} SIGTERM rounds: zero I/O errors in an overlayfs-mode reader and a dir-mode writer`, async () => {
    await startDetached('ro');
    await startDetached('rw', WRITABLE);
    const reader = workload('ro', 'read', bigSha.map((_, i) => `/big/f${i}`));
    const writer = workload('rw', 'write', ['/io']);
    await Promise.all([reader.progress(2 * READER_FILES), writer.progress(4)]);
    const devicesBefore = (await env.deviceStats()).map((s) => s.path).sort();
    for (const how of ['kill -9', 'SIGTERM'] as const) {
      const stalls: number[] = [];
      for (let r = 1; r <= ROUNDS; r++) {
        dropCaches();
        const down = clockMs();
        await env.killDeviced(how === 'kill -9' ? 'SIGKILL' : 'SIGTERM');
        await env.startDeviced();
        const up = clockMs();
        await Promise.all([reader.progress(2), writer.progress(1)]);
        const stall = Math.max(stallAround(reader, down, up), stallAround(writer, down, up));
        stalls.push(stall);
        console.log(`containers, ${how} round ${r}: deviced down ${Math.round(up - down)} ms, longest stall in a container ${Math.round(stall)} ms`);
      }
      console.log(`containers, ${how}: ${summarizeStalls(stalls)}`);
    }
    console.log(`deviced start-up (process start to serving), median of each step: ${devicedStartup(env.devicedLogs)}`);
    assert.deepEqual([reader.failure, writer.failure], [undefined, undefined], 'no I/O error in either container');
    assert.deepEqual((await env.deviceStats()).map((s) => s.path).sort(), devicesBefore, 'the same devices throughout');
    assert.doesNotMatch(env.devicedLogs, /kernel cannot resend|removed stale device entry/);
    reader.stop();
    writer.stop();
    // The written data verified once more from the device, after the last restart.
    dropCaches();
    assert.match((await exec('rw', 'sha256sum /io/w0 /io/w1 | wc -l')).stdout, /^2\n$/);
  });

  it('a crash in the middle of a remote fetch: the read the dead deviced had taken is resent and answered', async () => {
    await startDetached('rf');
    const stalls: number[] = [];
    // Last file first: a round's read-ahead runs on into the files after it (already read), never
    // into the one the next round reads.
    for (let r = ROUNDS - 1; r >= 0; r--) {
      proxy.clear();
      proxy.inject({ kind: 'delay', ms: 1500 }, 1);
      const t0 = Date.now();
      const reading = exec('rf', `sha256sum /cold/c${r}`); // never read before: its blocks are fetched now
      // Kill deviced while it waits on the delayed range read.
      for (let i = 0; i < 200 && !proxy.seen.some((s) => s.fault === 'delay'); i++) await new Promise((res) => setTimeout(res, 25));
      assert.ok(proxy.seen.some((s) => s.fault === 'delay'), 'the read reached the registry');
      await env.killDeviced('SIGKILL');
      await env.startDeviced();
      const out = (await reading).stdout;
      stalls.push(Date.now() - t0);
      assert.equal(out.split(' ')[0], coldSha[r], `c${r} read whole and right after the crash`);
    }
    console.log(`crash during a remote fetch: ${summarizeStalls(stalls)} (each includes the fetch itself)`);
    assert.doesNotMatch(env.devicedLogs, /kernel cannot resend/);
  });
});

/** Medians of the start-up timing each "deviced serving" line carries. */
function devicedStartup(logs: string): string {
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const field = (k: string) => [...logs.matchAll(new RegExp(`deviced serving.* ${k}=(\\d+)`, 'g'))].map((m) => Number(m[1]));
  return `modules loaded at ${median(field('startMs'))} ms, devices taken over at ${median(field('recoveredMs'))} ms, serving at ${median(field('processMs'))} ms`;
}
