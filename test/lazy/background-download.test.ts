// Background download (config `download`) through a real deviced: after a container ran, deviced
// keeps filling the image's blobs in the background; killed with SIGKILL half way, the next deviced
// re-attaches the device, resumes where the cache ends and finishes. Every blob ends as a verified
// local copy whose sha256 is its digest, and the proxy in front of the registry saw the image's bytes
// about once: units finished before the kill are not fetched again.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ThrottleProxy } from '../helpers/throttle-proxy';
import { workloadImageSpec } from '../helpers/workload-image';
import { LazyEnv } from './env';

const MiB = 1 << 20;
const BLOCK = 1 << 20; // download.blockSize: the most a kill can waste per blob being fetched

async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 240_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('background download through deviced', { timeout: 600_000 }, () => {
  const env = new LazyEnv({
    config: { autoRemoveDev: false, download: { enable: true, delay: 0, delayExtra: 0, maxMBps: 6, tryCnt: 5, blockSize: BLOCK } },
  });
  let proxy: ThrottleProxy;
  before(async () => {
    await env.start();
    const [h, p] = env.registry.host.split(':');
    proxy = new ThrottleProxy({ host: h, port: Number(p) }, 0, 0); // counts bytes, no throttling
    await proxy.start();
  });
  after(async () => {
    await proxy?.stop();
    await env.stop();
  });

  it('completes, verifies by sha256 and survives kill -9 of deviced without refetching finished units', async (t) => {
    const { spec } = workloadImageSpec({ appLayers: 1, fillerMiBPerLayer: 40, dataFilesPerLayer: 2, dataFileKiB: 256 });
    await env.convertImage(spec, 'download/app', 'v1');
    const res = await fetch(`${env.registry.url}/v2/download/app/manifests/v1`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
    });
    const layers = ((await res.json()) as { layers: { digest: string; size: number }[] }).layers;
    const imageBytes = layers.reduce((n, l) => n + l.size, 0);
    const verifiedDir = path.join(String((env.config.cacheConfig as { cacheDir: string }).cacheDir), 'verified');
    const verified = (l: { digest: string; size: number }) => {
      try {
        return fs.statSync(path.join(verifiedDir, `sha256_${l.digest.slice(7)}`)).size === l.size;
      } catch {
        return false;
      }
    };

    const ref = `${proxy.host}/download/app:v1`;
    await env.rpull(ref);
    const wire0 = proxy.bytes;
    assert.match(await env.containerd.run(ref, 'download', [], ['--snapshotter', 'obd']), /READY/);
    // At 6 MB/s the image's ~40 MB take several seconds: kill deviced once a third has arrived.
    await waitFor(() => proxy.bytes - wire0 >= imageBytes / 3, 'a third of the image to be downloaded');
    assert.ok(!layers.every(verified), 'the download was still running when deviced was killed');
    await env.killDeviced('SIGKILL');
    const atKill = proxy.bytes - wire0;
    await env.startDeviced();
    await waitFor(() => layers.every(verified), 'every blob to be downloaded, verified and shared');

    const wire = proxy.bytes - wire0;
    t.diagnostic(`image ${imageBytes} B in ${layers.length} blobs; wire ${wire} B (${atKill} B before the kill)`);
    for (const l of layers) {
      const got = crypto.createHash('sha256').update(fs.readFileSync(path.join(verifiedDir, `sha256_${l.digest.slice(7)}`))).digest('hex');
      assert.equal(`sha256:${got}`, l.digest, `the verified copy of ${l.digest} hashes to its digest`);
    }
    // Each blob once, plus at most one block per blob cut short by the kill and HTTP headers.
    const slack = layers.length * BLOCK + MiB;
    assert.ok(wire <= imageBytes + slack, `wire ${wire} B > image ${imageBytes} B + ${slack} B: finished units were fetched again`);
    assert.ok(wire >= imageBytes, `wire ${wire} B < image ${imageBytes} B`);
  });
});
