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
import { registryErrorKind } from '../../src/device/state-metrics';
import { RegistryNotFoundError, RegistryTimeoutError } from '../../src/registry/errors';
import { LazyEnv } from '../lazy/env';

function value(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(series + ' '));
  assert.ok(line, `no series ${series} in:\n${text}`);
  return Number(line.slice(series.length + 1));
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
  });

  it('a lazy read of a blob the registry does not have counts a registry error of kind not_found', async () => {
    const missing = 'sha256:' + 'ab'.repeat(32);
    const cfgFile = env.tmp.join('missing.json');
    fs.writeFileSync(cfgFile, JSON.stringify({ repoBlobUrl: `http://${env.registry.host}/v2/metrics/busybox/blobs`, lowers: [{ digest: missing, size: 1 << 20 }] }));
    const r = spawnSync(process.execPath, [obdBin(), 'device', 'attach', '--config', env.configPath, cfgFile], { encoding: 'utf8', timeout: 120_000 });
    assert.notEqual(r.status, 0, 'attaching a stack whose blob is missing fails');
    assert.match(r.stderr, /not found|404|BLOB_UNKNOWN/i);
    const dv = await scrape(devicedPort);
    assert.ok(value(dv, 'obd_registry_errors_total{kind="not_found"}') >= 1);
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

  it('registry error kinds come from the error codes', () => {
    assert.equal(registryErrorKind(new RegistryNotFoundError('x', { registry: 'r' })), 'not_found');
    assert.equal(registryErrorKind(new RegistryTimeoutError('x', { registry: 'r' })), 'timeout');
    assert.equal(registryErrorKind(new Error('x')), 'other');
  });
});
