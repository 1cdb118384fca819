// The metrics endpoints: the snapshotter counts every snapshots.v1 call by operation and result with
// its latency, deviced counts devices by state and registry errors by kind; both listen on
// 127.0.0.1 unless configured otherwise.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { obdBin } from '../helpers/bin';
import { busyboxTestImage } from '../helpers/images';
import { freePort } from '../helpers/registry';
import { Counter, Histogram, renderFamilies } from '../../src/metrics/prometheus';
import crypto from 'node:crypto';
import { defaultConfig } from '../../src/config';
import { RemoteLowers } from '../../src/device/remote';
import { DevicedStateMetrics, registryErrorKind } from '../../src/device/state-metrics';
import { silentLogger } from '../../src/log';
import {
  RegistryAuthError, RegistryDigestMismatchError, RegistryHttpError, RegistryNetworkError, RegistryNotFoundError, RegistryTimeoutError,
} from '../../src/registry/errors';
import { FaultProxy } from '../helpers/fault-proxy';
import { LyingRegistry } from '../helpers/lying-registry';
import { TestRegistry } from '../helpers/registry';
import { openRemoteLower } from '../helpers/remote-lower';
import { makeTempDir } from '../helpers/tmp';
import { LazyEnv } from '../lazy/env';

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  assert.ok(line, `no series ${series} in:\n${text}`);
  return Number(line.slice(series.length + 1));
}

/** The value of a series, 0 when it has not appeared yet (a counter that never counted). */
function valueOr0(text: string, series: string): number {
  return text.split('\n').some((l) => l.startsWith(series + ' ')) ? value(text, series) : 0;
}

/** Local addresses of listening TCP sockets on `port`, from /proc/net/tcp (hex, little endian). */
function listeners(port: number): string[] {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  return fs
    .readFileSync('/proc/net/tcp', 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.trim().split(/\s+/))
    .filter((f) => f.length > 3 && f[3] === '0A' && f[1].endsWith(`:${hexPort}`))
    .map((f) => f[1].split(':')[0].match(/../g)!.reverse().map((h) => parseInt(h, 16)).join('.'));
}

describe('metrics endpoints', { timeout: 600_000 }, () => {
  let env: LazyEnv;
  let devicedPort: number;
  let snapshotterPort: number;

  before(async () => {
    devicedPort = await freePort();
    snapshotterPort = await freePort();
    env = new LazyEnv({ config: { exporterConfig: { enable: true, port: devicedPort, snapshotterPort } } });
    await env.start();
  });
  after(() => env.stop());

  const scrape = async (port: number) => {
    const r = await fetch(`http://127.0.0.1:${port}/metrics`);
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type') ?? '', /text\/plain; version=0\.0\.4/);
    return r.text();
  };

  it('both endpoints listen on 127.0.0.1 only by default', () => {
    assert.deepEqual(listeners(devicedPort), ['127.0.0.1']);
    assert.deepEqual(listeners(snapshotterPort), ['127.0.0.1']);
  });

  it('snapshot operations by kind and result with latency; devices by state after a lazy run', async () => {
    const img = busyboxTestImage();
    const ref = await env.convertImage(img.spec, 'metrics/busybox');
    await env.rpull(ref);
    const stdout = await env.containerd.run(ref, 'metrics-1', ['/bin/sh', '-c', img.script], ['--snapshotter', 'obd']);
    assert.equal(stdout, img.expectedOutput);

    const sn = await scrape(snapshotterPort);
    assert.equal(value(sn, 'obd_snapshotter_alive'), 1);
    // rpull prepares each remote layer once: answered AlreadyExists, as the remote snapshot protocol wants.
    assert.ok(value(sn, 'obd_snapshot_operations_total{operation="Prepare",result="AlreadyExists"}') >= img.spec.layers.length);
    assert.ok(value(sn, 'obd_snapshot_operations_total{operation="Prepare",result="ok"}') >= 1, 'the container snapshot');
    const prepares = value(sn, 'obd_snapshot_operation_duration_seconds_count{operation="Prepare"}');
    assert.equal(prepares, value(sn, 'obd_snapshot_operation_duration_seconds_bucket{operation="Prepare",le="+Inf"}'));
    assert.ok(value(sn, 'obd_snapshot_operation_duration_seconds_sum{operation="Prepare"}') > 0);

    // ctr run --rm deletes the container; containerd's garbage collector then removes its snapshot.
    let removes = 0;
    for (let i = 0; i < 300 && removes === 0; i++) {
      const m = /^obd_snapshot_operations_total\{operation="Remove",result="ok"\} (\d+)$/m.exec(await scrape(snapshotterPort));
      removes = m ? Number(m[1]) : 0;
      if (removes === 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(removes >= 1, 'the container snapshot was removed within 30 s and the Remove counted');

    const dv = await scrape(devicedPort);
    assert.equal(value(dv, 'obd_deviced_alive'), 1);
    const attached = value(dv, 'obd_deviced_devices');
    assert.ok(attached >= 1, 'the image device stays attached after the container (autoRemoveDev is off)');
    assert.equal(value(dv, 'obd_devices{state="in_use"}') + value(dv, 'obd_devices{state="idle"}'), attached);
    assert.equal(value(dv, 'obd_devices{state="missing"}'), 0);
    // The block cache: bound, use, and the lazy run's reads of remote layers.
    assert.equal(value(dv, 'obd_cache_capacity_bytes'), 4 * 2 ** 30);
    assert.ok(value(dv, 'obd_cache_used_bytes') > 0);
    assert.ok(value(dv, 'obd_cache_misses_total') > 0, 'the first reads waited for fetches');
    assert.ok(value(dv, 'obd_cache_hits_total') > 0, 'later reads of the same units did not');
    assert.ok(value(dv, 'obd_cache_open_blobs') >= 1, 'the attached image reads its blobs');
    assert.equal(value(dv, 'obd_cache_evictions_total'), 0, 'nothing evicted under 4 GiB');
    assert.ok(value(dv, 'obd_fetch_bytes_total{kind="demand"}') > 0);
    assert.ok(value(dv, 'obd_fetch_duration_seconds_count') > 0);
  });

  it('a lazy read of a blob the registry does not have counts a registry error of kind not_found', async () => {
    const missing = 'sha256:' + 'ab'.repeat(32);
    const cfgFile = env.tmp.join('missing.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ repoBlobUrl: `http://${env.registry.host}/v2/metrics/busybox/blobs`, lowers: [{ digest: missing, size: 1 << 20 }] }));
    const r = spawnSync(process.execPath, [obdBin(), 'device', 'attach', '--config', env.configPath, cfgFile], { encoding: 'utf8', timeout: 120_000 });
    assert.notEqual(r.status, 0, 'attaching a stack whose blob is missing fails');
    assert.match(r.stderr, /not found|404|BLOB_UNKNOWN/i);
    const dv = await scrape(devicedPort);
    assert.ok(value(dv, 'obd_registry_errors_total{kind="404"}') >= 1);
  });
});

describe('deviced metrics move when the thing happens (remote lowers in this process)', { timeout: 120_000 }, () => {
  const UNIT = 64 << 10;
  const registry = new TestRegistry();
  const liar = new LyingRegistry();
  let proxy: FaultProxy;
  const tmp = makeTempDir('obd-metrics-');
  before(async () => {
    await registry.start();
    await liar.start();
    proxy = await FaultProxy.inFrontOf(registry.host);
  });
  after(async () => {
    await proxy.stop();
    await liar.stop();
    await registry.stop();
    tmp.cleanup();
  });

  /** RemoteLowers wired to deviced's metrics, with a cache of `cacheUnits` refill units. */
  const deviced = (name: string, cacheUnits = 1024) => {
    const cfg = defaultConfig();
    cfg.cacheConfig = { ...cfg.cacheConfig, cacheDir: tmp.join(name), cacheSizeGB: (cacheUnits * UNIT) / 2 ** 30, refillSize: UNIT, readAheadSize: 0 };
    cfg.credentialFile = '';
    const metrics = new DevicedStateMetrics();
    const remote = new RemoteLowers(cfg, silentLogger, metrics.onFetchError);
    metrics.watchCache(remote);
    return { remote, scrape: () => renderFamilies(metrics.families()) };
  };

  it('a 5xx the retry gets past counts registry_errors{kind="5xx"}; a dropped connection counts "reset"; a missing blob "404"', async () => {
    const blob = crypto.randomBytes(4 * UNIT);
    const digest = await registry.pushBlob('metrics/faults', blob);
    const { remote, scrape } = deviced('faults');
    try {
      const f = openRemoteLower(remote, proxy.host, 'metrics/faults', digest, blob.length);
      assert.equal(valueOr0(scrape(), 'obd_registry_errors_total{kind="5xx"}'), 0);
      proxy.inject({ kind: 'status', status: 503 }, 1);
      assert.ok((await f.file.read(0, 4096)).equals(blob.subarray(0, 4096)), 'the read succeeds on the retry');
      assert.equal(value(scrape(), 'obd_registry_errors_total{kind="5xx"}'), 1);

      proxy.inject({ kind: 'drop' }, 1);
      assert.ok((await f.file.read(UNIT, 4096)).equals(blob.subarray(UNIT, UNIT + 4096)));
      assert.equal(value(scrape(), 'obd_registry_errors_total{kind="reset"}'), 1);

      const missing = 'sha256:' + 'cd'.repeat(32);
      const m = openRemoteLower(remote, registry.host, 'metrics/faults', missing, UNIT);
      await assert.rejects(m.file.read(0, 10));
      assert.equal(value(scrape(), 'obd_registry_errors_total{kind="404"}'), 1);
      f.release();
      m.release();
    } finally {
      proxy.clear();
      await remote.close();
    }
  });

  it('a blob whose bytes do not hash to its digest counts registry_errors{kind="digest_mismatch"}', async () => {
    const good = crypto.randomBytes(3 * UNIT);
    const digest = 'sha256:' + crypto.createHash('sha256').update(good).digest('hex');
    const evil = crypto.randomBytes(good.length);
    liar.blob('metrics/liar', digest, evil);
    const { remote, scrape } = deviced('liar');
    try {
      const f = openRemoteLower(remote, liar.host, 'metrics/liar', digest, evil.length);
      await f.file.read(0, evil.length); // the whole blob: the cache checks its sha256
      await remote.drainCache();
      assert.equal(value(scrape(), 'obd_registry_errors_total{kind="digest_mismatch"}'), 1);
      f.release();
    } finally {
      await remote.close();
    }
  });

  it('reads beyond a tiny cache count evictions; reads of cached units count hits, the others misses', async () => {
    const blob = crypto.randomBytes(12 * UNIT);
    const digest = await registry.pushBlob('metrics/evict', blob);
    const { remote, scrape } = deviced('evict', 4);
    try {
      const f = openRemoteLower(remote, registry.host, 'metrics/evict', digest, blob.length);
      await f.file.read(0, 4096);
      await remote.drainCache();
      let m = scrape();
      assert.equal(value(m, 'obd_cache_misses_total'), 1);
      assert.equal(value(m, 'obd_cache_hits_total'), 0);
      assert.equal(value(m, 'obd_cache_evictions_total'), 0);
      await f.file.read(100, 4096);
      assert.equal(value(scrape(), 'obd_cache_hits_total'), 1);

      for (let u = 1; u < 12; u++) await f.file.read(u * UNIT, 4096);
      await remote.drainCache();
      m = scrape();
      assert.ok(value(m, 'obd_cache_evictions_total') >= 8, `evictions ${value(m, 'obd_cache_evictions_total')}`);
      assert.ok(value(m, 'obd_cache_used_bytes') <= 4 * UNIT);
      assert.equal(value(m, 'obd_cache_capacity_bytes'), 4 * UNIT);
      assert.equal(value(m, 'obd_cache_misses_total'), 12);
      assert.equal(value(m, 'obd_cache_open_blobs'), 1);
      f.release();
      m = scrape();
      assert.equal(value(m, 'obd_cache_open_blobs'), 0);
      assert.equal(value(m, 'obd_cache_misses_total'), 12, 'counts stay after the device is gone');
    } finally {
      await remote.close();
    }
  });
});

describe('metric families', () => {
  it('render counters, histograms and label escaping as Prometheus text', () => {
    const c = new Counter('x_total', 'a counter');
    c.inc({ a: 'q"\\\n' });
    c.inc({ a: 'q"\\\n' }, 2);
    const h = new Histogram('x_seconds', 'a histogram', [0.1, 1]);
    h.observe({ op: 'P' }, 0.5);
    h.observe({ op: 'P' }, 5);
    assert.equal(
      renderFamilies([c, h]),
      [
        '# HELP x_total a counter',
        '# TYPE x_total counter',
        'x_total{a="q\\"\\\\\\n"} 3',
        '# HELP x_seconds a histogram',
        '# TYPE x_seconds histogram',
        'x_seconds_bucket{op="P",le="0.1"} 0',
        'x_seconds_bucket{op="P",le="1"} 1',
        'x_seconds_bucket{op="P",le="+Inf"} 2',
        'x_seconds_sum{op="P"} 5.5',
        'x_seconds_count{op="P"} 2',
      ].join('\n') + '\n',
    );
  });

  it('registry error kinds are what an operator asks: 401, 403, 404, 5xx, timeout, reset, digest mismatch', () => {
    const r = { registry: 'r' };
    assert.equal(registryErrorKind(new RegistryAuthError('x', { ...r, status: 401 })), '401');
    assert.equal(registryErrorKind(new RegistryAuthError('x', { ...r, status: 403 })), '403');
    assert.equal(registryErrorKind(new RegistryNotFoundError('x', r)), '404');
    assert.equal(registryErrorKind(new RegistryHttpError('x', { ...r, status: 502 })), '5xx');
    assert.equal(registryErrorKind(new RegistryHttpError('x', { ...r, status: 429 })), '429');
    assert.equal(registryErrorKind(new RegistryHttpError('x', { ...r, status: 418 })), '4xx');
    assert.equal(registryErrorKind(new RegistryTimeoutError('x', r)), 'timeout');
    assert.equal(registryErrorKind(new RegistryTimeoutError('x', { ...r, cause: new RegistryHttpError('y', { ...r, status: 500 }) })), '5xx',
      'a deadline after a failed attempt counts the attempt\'s failure');
    const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    assert.equal(registryErrorKind(new RegistryNetworkError('x', { ...r, cause: reset })), 'reset');
    const refused = Object.assign(new Error('connect'), { code: 'ECONNREFUSED' });
    assert.equal(registryErrorKind(new RegistryNetworkError('x', { ...r, cause: refused })), 'network');
    assert.equal(registryErrorKind(new RegistryDigestMismatchError('x', r)), 'digest_mismatch');
    assert.equal(registryErrorKind(new Error('x')), 'other');
  });
});
