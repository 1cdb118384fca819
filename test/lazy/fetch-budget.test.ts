// Cold start fetches only what the workload reads: an image of several app layers whose entrypoint
// reads small files spread over them, run lazily through a byte-counting proxy in front of the
// registry. What crossed the proxy stays within 2x of what the device read, and obd's own count of
// received bytes (deviced-wide, it survives the device's detach) equals the proxy's within 5 %.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ThrottleProxy } from '../helpers/throttle-proxy';
import { workloadImageSpec } from '../helpers/workload-image';
import { LazyEnv } from './env';

describe('cold-start fetch budget', { timeout: 900_000 }, () => {
  // Production read-ahead settings (the env's default keeps tests' read-ahead small).
  const env = new LazyEnv({ config: { autoRemoveDev: true, cacheConfig: { readAheadSize: 16 << 20 } } });
  let proxy: ThrottleProxy;
  before(async () => {
    await env.start();
    const [h, p] = env.registry.host.split(':');
    proxy = new ThrottleProxy({ host: h, port: Number(p) }, 0, 0);
    await proxy.start();
  });
  after(async () => {
    await proxy?.stop();
    await env.stop();
  });

  it('small files read over several layers cost at most 2x their bytes on the wire, counted at a proxy', async (t) => {
    const { spec, readBytes } = workloadImageSpec({ appLayers: 3, fillerMiBPerLayer: 12, dataFilesPerLayer: 3, dataFileKiB: 256 });
    await env.convertImage(spec, 'budget/app', 'v1');
    const ref = `${proxy.host}/budget/app:v1`;
    await env.rpull(ref);
    const before = proxy.bytes; // manifest and config of rpull are not the device's
    const out = await env.containerd.run(ref, 'budget', [], ['--snapshotter', 'obd']);
    assert.match(out, /READY/);
    await new Promise((r) => setTimeout(r, 500)); // read-ahead still landing counts too
    const wire = proxy.bytes - before;
    const totals = await env.deviceTotals();
    t.diagnostic(`wire ${wire} B, device read ${totals.deviceReadBytes} B (workload files ${readBytes} B), obd received ${totals.receivedBytes} B, ` +
      `demand ${totals.demandBytes} read-ahead ${totals.readaheadBytes}, ${totals.fetches} fetches`);
    assert.ok(totals.deviceReadBytes >= readBytes, 'the device read at least the files');
    assert.ok(wire <= 2 * totals.deviceReadBytes, `wire ${wire} > 2 x device read ${totals.deviceReadBytes}`);
    assert.ok(Math.abs(totals.receivedBytes - wire) <= 0.05 * wire, `obd counted ${totals.receivedBytes}, the proxy ${wire}`);
  });
});
