// TurboOCI end to end: an ordinary gzip OCI image converted with `obdconv --turbo-oci` (meta blobs
// only; the source layers go to the registry unchanged) is registered with `obd rpull` and started
// with `ctr run --snapshotter obd`; the container sees the image's files while the bytes fetched from
// the original layer blobs stay far below their size.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { busyboxTestImage, TarEntry } from '../helpers/images';
import { LazyEnv } from './env';

describe('TurboOCI: rpull + ctr run with the obd snapshotter', { timeout: 900_000 }, () => {
  const env = new LazyEnv();
  before(() => env.start());
  after(() => env.stop());

  it('runs a converted OCI image lazily from its original gzip layers', async (t) => {
    const img = busyboxTestImage();
    const big: TarEntry[] = [{ path: 'big', type: 'dir' }];
    for (let i = 0; i < 16; i++) big.push({ path: `big/f${i}`, type: 'file', data: crypto.randomBytes(2 << 20) });
    const spec = { layers: [...(img.spec.layers as TarEntry[][]), big], cmd: ['/bin/sh'] };
    const ref = await env.convertImage(spec, 'turbo/busybox', 'latest', ['--turbo-oci']);
    const manifest = await (await fetch(`${env.registry.url}/v2/turbo/busybox/manifests/latest`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
    })).json() as { layers: { size: number; annotations: Record<string, string> }[] };
    const targets = manifest.layers.map((l) => l.annotations['containerd.io/snapshot/overlaybd/turbo-oci/target-digest']);
    assert.ok(targets.every((d) => /^sha256:/.test(d)), 'every layer names its original blob');
    let sourceBytes = 0;
    for (const d of targets) {
      const r = await fetch(`${env.registry.url}/v2/turbo/busybox/blobs/${d}`, { method: 'HEAD' });
      assert.equal(r.status, 200, `original layer ${d} is in the repository`);
      sourceBytes += Number(r.headers.get('content-length'));
    }
    const metaBytes = manifest.layers.reduce((n, l) => n + l.size, 0);
    t.diagnostic(`meta blobs ${metaBytes} bytes for ${sourceBytes} bytes of source layers`);

    const out = await env.rpull(ref);
    assert.match(out, /done/);
    const snaps = (await env.containerd.ctr(['snapshots', '--snapshotter', 'obd', 'ls'])).stdout;
    assert.equal(snaps.trim().split('\n').length - 1, manifest.layers.length, `one committed layer per meta blob:\n${snaps}`);

    const stdout = await env.containerd.run(ref, 'turbo-1', ['/bin/sh', '-c', img.script], ['--snapshotter', 'obd']);
    assert.equal(stdout, img.expectedOutput);
    // a file of the big layer, read whole: its bytes come from the original gzip blob
    const sum = await env.containerd.run(ref, 'turbo-2', ['/bin/sh', '-c', 'md5sum /big/f3 | cut -d" " -f1'], ['--snapshotter', 'obd']);
    const want = crypto.createHash('md5').update((big[4] as { data: Buffer }).data).digest('hex');
    assert.equal(sum.trim(), want);

    const stats = await env.deviceStats();
    const fetched = stats.reduce((n, s) => n + s.fetchedBytes, 0);
    t.diagnostic(`fetched ${fetched} of ${sourceBytes} source bytes (${((100 * fetched) / sourceBytes).toFixed(1)}%)`);
    assert.ok(fetched > 0, 'file data came from the registry');
    assert.ok(fetched < sourceBytes / 4, `fetched ${fetched} bytes of ${sourceBytes}`);
  });
});
