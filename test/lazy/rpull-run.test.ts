// rpull then run: an overlaybd image made by obdconv is registered in containerd with `obd rpull`
// (manifest + config only), then `ctr run --snapshotter obd` starts it; the container sees the
// image's files while the bytes fetched from the registry stay far below the image size.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxTestImage, tar, TarEntry } from '../helpers/images';
import { LazyEnv } from './env';

describe('rpull + ctr run with the obd snapshotter', { timeout: 900_000 }, () => {
  const env = new LazyEnv();
  before(() => env.start());
  after(() => env.stop());

  it('runs the image lazily: correct output, fetched bytes far below the image size', async (t) => {
    const img = busyboxTestImage();
    const big: TarEntry[] = [{ path: 'big', type: 'dir' }];
    for (let i = 0; i < 24; i++) big.push({ path: `big/f${i}`, type: 'file', data: crypto.randomBytes(2 << 20) });
    const spec = { layers: [...(img.spec.layers as TarEntry[][]), big], cmd: ['/bin/sh'] };
    const ref = await env.convertImage(spec, 'lazy/busybox');
    const out = await env.rpull(ref);
    assert.match(out, /done/);
    const snaps = (await env.containerd.ctr(['snapshots', '--snapshotter', 'obd', 'ls'])).stdout;
    assert.equal(snaps.trim().split('\n').length - 1, 4, `four committed remote layers:\n${snaps}`);

    const manifest = await (await fetch(`${env.registry.url}/v2/lazy/busybox/manifests/latest`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
    })).json() as { layers: { size: number; annotations?: Record<string, string> }[] };
    const imageBytes = manifest.layers.reduce((n, l) => n + l.size, 0);
    assert.ok(manifest.layers.every((l) => l.annotations?.['containerd.io/snapshot/overlaybd/blob-digest']), 'obdconv annotates the layers');

    const stdout = await env.containerd.run(ref, 'lazy-1', ['/bin/sh', '-c', img.script], ['--snapshotter', 'obd']);
    assert.equal(stdout, img.expectedOutput);

    const stats = await env.deviceStats();
    const fetched = stats.reduce((n, s) => n + s.fetchedBytes, 0);
    t.diagnostic(`fetched ${fetched} of ${imageBytes} bytes (${((100 * fetched) / imageBytes).toFixed(1)}%)`);
    assert.ok(fetched > 0, 'blocks came from the registry');
    assert.ok(fetched < imageBytes / 4, `fetched ${fetched} bytes of a ${imageBytes}-byte image`);
  });

  it('a plain `ctr image pull` of an overlaybd image downloads the blobs and runs them as local layers', async () => {
    const img = busyboxTestImage();
    const ref = `${env.registry.host}/lazy/busybox:latest`;
    const ns = { namespace: 'plainpull' };
    await env.containerd.ctr(['image', 'pull', '--plain-http', '--snapshotter', 'obd', ref], ns);
    const r = await env.containerd.ctr(['run', '--rm', '--runc-root', env.containerd.runcRoot, '--snapshotter', 'obd', ref, 'local-1',
      '/bin/sh', '-c', img.script], ns);
    assert.equal(r.stdout, img.expectedOutput);
    const rows = (await env.containerd.ctr(['snapshots', '--snapshotter', 'obd', 'ls'], ns)).stdout.trim().split('\n').slice(1);
    const info = JSON.parse((await env.containerd.ctr(['snapshots', '--snapshotter', 'obd', 'info', rows[0].trim().split(/\s+/)[0]], ns)).stdout);
    assert.match(info.Labels['containerd.io/snapshot/overlaybd.localcommitpath'] ?? '', /\/fs\/overlaybd\.commit$/, 'committed as a local overlaybd layer');
  });

  it('removing the image removes its remote layers and detaches their device', async () => {
    const ref = `${env.registry.host}/lazy/busybox:latest`;
    const layerDevices = async () => (await env.deviceStats()).filter((d) => /-l\d+$/.test(d.id)).length;
    const before = await layerDevices();
    assert.ok(before >= 1);
    const dirs = () => fs.readdirSync(path.join(env.snapshotter.root, 'snapshots')).length;
    const dirsBefore = dirs();
    await env.containerd.ctr(['image', 'rm', '--sync', ref]);
    for (let i = 0; i < 150 && (await layerDevices()) >= before; i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await layerDevices(), before - 1, 'the image device went with its layer');
    assert.ok(dirs() <= dirsBefore - 4, 'the four remote layer dirs are gone');
  });

  /** Pushes an image of `blobs` (bottom first); annotated layers get the overlaybd annotations. */
  async function pushRaw(repo: string, blobs: { data: Buffer; overlaybd: boolean }[]): Promise<{ ref: string; digests: string[] }> {
    const layers = [];
    for (const b of blobs) {
      const digest = await env.registry.pushBlob(repo, b.data);
      const annotations = b.overlaybd
        ? { 'containerd.io/snapshot/overlaybd/blob-digest': digest, 'containerd.io/snapshot/overlaybd/blob-size': String(b.data.length) }
        : undefined;
      layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest, size: b.data.length, ...(annotations ? { annotations } : {}) });
    }
    const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } }));
    const cd = await env.registry.pushBlob(repo, config);
    await env.registry.pushManifest(repo, 'v1', {
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: config.length }, layers,
    });
    return { ref: `${env.registry.host}/${repo}:v1`, digests: layers.map((l) => l.digest) };
  }

  it('refuses plain OCI images and mixed stacks with an error naming the layer', async () => {
    const plain = tar([{ path: 'etc', type: 'dir' }, { path: 'etc/x', type: 'file', data: 'x\n' }]);
    const fixture = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'overlaybd', 'e_ext4', 'e1.commit.lz4_bs4k.zfile');
    const oci = await pushRaw('bad/plain', [{ data: plain, overlaybd: false }]);
    await assert.rejects(env.rpull(oci.ref), new RegExp(`${oci.digests[0]} is not an overlaybd layer`));
    const mixed = await pushRaw('bad/mixed', [{ data: fs.readFileSync(fixture), overlaybd: true }, { data: plain, overlaybd: false }]);
    await assert.rejects(env.rpull(mixed.ref), new RegExp(`layer ${mixed.digests[1]}: a plain OCI layer on top of the overlaybd layer`));
  });
});
