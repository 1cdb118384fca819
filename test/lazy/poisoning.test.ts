// Cache poisoning across images, end to end through a private containerd: an image on a registry
// that lies names the layer digests of a good image but serves its own bytes (and sizes) for them.
// It is pulled and run first; the good image, pulled and run afterwards on the same node, must still
// see its own files — the liar's ranges stay private to (liar registry, repository, digest).
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after, before, describe, it } from 'node:test';
import { busyboxTestImage, TarEntry } from '../helpers/images';
import { LyingRegistry } from '../helpers/lying-registry';
import { LazyEnv } from './env';

interface Manifest {
  mediaType?: string;
  config: { digest: string; size: number };
  layers: { digest: string; size: number; annotations?: Record<string, string> }[];
}

const MANIFEST_TYPES = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
const BLOB_DIGEST = 'containerd.io/snapshot/overlaybd/blob-digest';
const BLOB_SIZE = 'containerd.io/snapshot/overlaybd/blob-size';

describe('a registry that lies about a digest', { timeout: 900_000 }, () => {
  const env = new LazyEnv();
  const liar = new LyingRegistry();
  before(async () => {
    await env.start();
    await liar.start();
  });
  after(async () => {
    await env.stop();
    await liar.stop();
  });

  const image = (msg: string) => {
    const base = busyboxTestImage().spec.layers[0] as TarEntry[];
    // Same shapes, other bytes: random data of the same length in both images.
    const top: TarEntry[] = [
      { path: 'etc', type: 'dir' },
      { path: 'etc/msg', type: 'file', data: `${msg}\n` },
      { path: 'data', type: 'dir' },
      { path: 'data/blob', type: 'file', data: crypto.randomBytes(3 << 20) },
    ];
    return { layers: [base, top] };
  };
  const get = async (path: string, accept?: string) => {
    const r = await fetch(`${env.registry.url}${path}`, { headers: accept ? { accept } : {} });
    assert.equal(r.status, 200, path);
    return { body: Buffer.from(await r.arrayBuffer()), type: r.headers.get('content-type') ?? '' };
  };

  it('the good image reads its own bytes after the liar ran with them', async () => {
    const goodSpec = image('good');
    const goodBlob = goodSpec.layers[1].find((e) => e.path === 'data/blob')!.data as Buffer;
    const goodRef = await env.convertImage(goodSpec, 'trust/good');
    await env.convertImage(image('evil'), 'trust/evil');
    const good = JSON.parse((await get('/v2/trust/good/manifests/latest', MANIFEST_TYPES)).body.toString()) as Manifest;
    const evilM = await get('/v2/trust/evil/manifests/latest', MANIFEST_TYPES);
    const evil = JSON.parse(evilM.body.toString()) as Manifest;
    assert.equal(good.layers.length, evil.layers.length);

    // The lie: the evil image's layers under the good image's digests, with the evil sizes.
    const lie: Manifest = JSON.parse(evilM.body.toString());
    for (let i = 0; i < lie.layers.length; i++) {
      const name = good.layers[i].digest;
      const bytes = (await get(`/v2/trust/evil/blobs/${evil.layers[i].digest}`)).body;
      liar.blob('liar/app', name, bytes);
      lie.layers[i] = { ...lie.layers[i], digest: name, annotations: { ...lie.layers[i].annotations, [BLOB_DIGEST]: name, [BLOB_SIZE]: String(bytes.length) } };
    }
    liar.blob('liar/app', evil.config.digest, (await get(`/v2/trust/evil/blobs/${evil.config.digest}`)).body);
    const lieBody = Buffer.from(JSON.stringify(lie));
    liar.manifest('liar/app', 'latest', lieBody, evilM.type);
    liar.manifest('liar/app', 'sha256:' + crypto.createHash('sha256').update(lieBody).digest('hex'), lieBody, evilM.type);
    assert.ok(good.layers.some((l, i) => l.digest !== evil.layers[i].digest), 'the images differ in at least one layer');

    const liarRef = `${liar.host}/liar/app:latest`;
    await env.rpull(liarRef);
    const evilOut = await env.containerd.run(liarRef, 'liar', ['/bin/sh', '-c', 'cat /etc/msg; cat /data/blob | wc -c'], ['--snapshotter', 'obd']);
    assert.equal(evilOut, 'evil\n3145728\n', 'the liar ran with its own bytes');
    assert.ok(liar.requests.some((r) => r.startsWith('GET /v2/liar/app/blobs/') && r.includes('bytes=')), 'blocks were fetched from the liar');

    await env.rpull(goodRef);
    const goodOut = await env.containerd.run(goodRef, 'good', ['/bin/sh', '-c', 'cat /etc/msg; cat /data/blob | sha256sum'], ['--snapshotter', 'obd']);
    const want = crypto.createHash('sha256').update(goodBlob).digest('hex');
    assert.equal(goodOut, `good\n${want}  -\n`, 'the good image sees its own files');
  });
});
