// Trace prefetch: `obd record-trace` runs the workload once and records the blob ranges it touched
// (in a private cache, so the host cache stays cold); a later container whose snapshot carries the
// label record-trace-path=<trace> gets those ranges fetched in the background as soon as its image
// device is attached, so the workload's own reads are then served from the block cache.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseTrace, TRACE_HEADER } from '../../src/trace/trace';
import { busyboxTestImage, TarEntry } from '../helpers/images';
import { obdBin } from '../helpers/bin';
import { execNode, LazyEnv } from './env';

describe('record-trace and prefetch', { timeout: 900_000 }, () => {
  // No read-ahead: every block the workload misses is a fetch of its own, so the count below is exact.
  const env = new LazyEnv({ config: { cacheConfig: { readAheadSize: 0 } } });
  let ref = '';
  before(async () => {
    await env.start();
    const big: TarEntry[] = [{ path: 'big', type: 'dir' }];
    for (let i = 0; i < 8; i++) big.push({ path: `big/f${i}`, type: 'file', data: crypto.randomBytes(2 << 20) });
    ref = await env.convertImage({ layers: [...(busyboxTestImage().spec.layers as TarEntry[][]), big] }, 'lazy/trace');
    await env.rpull(ref);
  });
  after(() => env.stop());

  const fetched = async () => (await env.deviceStats()).reduce((n, s) => n + s.fetchedBytes, 0);

  it('records the ranges of a run, then prefetches them for the next container', async (t) => {
    // Trace files live in the snapshotter's traceDir (default <root>/traces).
    const trace = path.join(env.snapshotter.root, 'traces', 'app.trace');
    const out = await execNode([obdBin(), 'record-trace', '--address', env.containerd.address, '--namespace', env.containerd.namespace,
      '--no-pull', '--runc-root', env.containerd.runcRoot, '--time', '60', '-o', trace, ref, '--',
      '/bin/sh', '-c', 'cat /big/f1 /big/f5 > /dev/null; echo READY'], 180_000);
    assert.equal(out, `READY\n${trace}\n`, 'the workload ran (its output), then the trace path');
    const text = fs.readFileSync(trace, 'utf8');
    assert.ok(text.startsWith(TRACE_HEADER + '\n'));
    const ranges = parseTrace(text);
    const traced = ranges.reduce((n, r) => n + r.length, 0);
    t.diagnostic(`trace: ${ranges.length} ranges, ${traced} bytes`);
    assert.ok(traced >= 4 << 20, 'both files (4 MiB) are in the trace');
    assert.ok(traced < 12 << 20, 'files the workload did not read are not');

    // The recording used a private cache: the host's block cache is still cold for these ranges.
    await env.containerd.ctr(['run', '-d', '--runc-root', env.containerd.runcRoot, '--snapshotter', 'obd',
      '--snapshotter-label', `containerd.io/snapshot/overlaybd/record-trace-path=${trace}`, ref, 'replay', '/bin/sleep', '100000']);
    let st = await env.deviceStats();
    for (let i = 0; i < 200 && st.reduce((n, s) => n + s.prefetchedBytes, 0) < traced; i++) {
      await new Promise((r) => setTimeout(r, 100));
      st = await env.deviceStats();
    }
    const prefetched = st.reduce((n, s) => n + s.prefetchedBytes, 0);
    assert.ok(prefetched >= traced, `prefetched ${prefetched} of ${traced} traced bytes`);
    assert.match(env.devicedLogs, /prefetch started/);
    const replayDev = st.find((s) => s.prefetchedBytes > 0)!;
    assert.ok(replayDev.fetchedBytes >= traced * 0.9, `the prefetch fetched the traced ranges from the registry (${replayDev.fetchedBytes})`);
    // Read-ahead started by the prefetch's own reads may still be landing: wait until fetching is quiet.
    let afterPrefetch = await fetched();
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 300));
      const now = await fetched();
      if (now === afterPrefetch) break;
      afterPrefetch = now;
    }

    const r = await env.containerd.ctr(['task', 'exec', '--exec-id', 'x1', 'replay', '/bin/sh', '-c', 'cat /big/f1 /big/f5 | wc -c']);
    assert.equal(r.stdout.trim(), String(4 << 20));
    const extra = (await fetched()) - afterPrefetch;
    t.diagnostic(`fetched by the workload after the prefetch: ${extra} bytes`);
    t.diagnostic(env.devicedLogs.split('\n').filter((l) => /prefetch/.test(l)).join(' | '));
    assert.ok(extra < traced / 10, `the workload's reads came from the cache (fetched ${extra} more bytes)`);
    await env.containerd.ctr(['task', 'kill', '-s', 'SIGKILL', 'replay']).catch(() => undefined);
    await env.containerd.ctr(['task', 'delete', '-f', 'replay']).catch(() => undefined);
    await env.containerd.ctr(['containers', 'rm', 'replay']).catch(() => undefined);
  });
});
