// An image made by upstream overlaybd tools runs: the fixture layers (overlaybd's own ext4_64 base
// layer, a legacy ZFile, and the e1/e2 layers made by overlaybd-apply + overlaybd-commit -z) are
// pushed to the private registry as an image — the lower two annotated as ACI's converter does,
// the top one without annotations, so the snapshotter has to recognise it by its header — then
// `obd rpull` + `ctr run --snapshotter obd` (busybox bind-mounted in: the fixture has no shell).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { tar } from '../helpers/images';
import { SnapshotsClient } from '../helpers/snapshotter';
import { LazyEnv } from './env';

const FIXTURES = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'overlaybd');
const LAYER = 'application/vnd.oci.image.layer.v1.tar';

describe('an image made by upstream overlaybd tools', { timeout: 600_000 }, () => {
  const env = new LazyEnv();
  const pushed: { ref: string; layers: { digest: string }[] } = { ref: '', layers: [] };
  before(() => env.start());
  after(() => env.stop());

  it('runs lazily; the top layer is recognised by its header', async (t) => {
    execFileSync('tar', ['-xzf', path.join(FIXTURES, 'ext4_64.tar.gz'), '-C', env.tmp.path, 'ext4_64']);
    const files = [env.tmp.join('ext4_64'), path.join(FIXTURES, 'e_ext4', 'e1.commit.lz4_bs4k.zfile'), path.join(FIXTURES, 'e_ext4', 'e2.commit.lz4_bs4k.zfile')];
    const repo = 'upstream/e-ext4';
    const layers = [];
    for (const [i, f] of files.entries()) {
      const data = fs.readFileSync(f);
      const digest = await env.registry.pushBlob(repo, data);
      const annotations = i < 2
        ? {
            'containerd.io/snapshot/overlaybd/version': '0.1.0',
            'containerd.io/snapshot/overlaybd/blob-digest': digest,
            'containerd.io/snapshot/overlaybd/blob-size': String(data.length),
            'containerd.io/snapshot/overlaybd/blob-fs-type': 'ext4',
          }
        : undefined;
      layers.push({ mediaType: LAYER, digest, size: data.length, ...(annotations ? { annotations } : {}) });
    }
    const config = Buffer.from(JSON.stringify({
      architecture: 'amd64', os: 'linux', config: { Env: ['PATH=/bin'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    }));
    const configDigest = await env.registry.pushBlob(repo, config);
    await env.registry.pushManifest(repo, 'v1', {
      schemaVersion: 2,
      mediaType: 'application/vnd.docker.distribution.manifest.v2+json',
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: configDigest, size: config.length },
      layers,
    });
    const ref = `${env.registry.host}/${repo}:v1`;
    Object.assign(pushed, { ref, layers });
    await env.rpull(ref);

    const bb = '/bin/busybox';
    const script = [
      `${bb} cat /etc/hello.txt`,
      `${bb} ls /opaque`,
      `${bb} test -e /etc/to_delete.txt && echo present || echo deleted`,
      `${bb} sha256sum /bin/data.bin`,
    ].join('; ');
    const out = await env.containerd.run(ref, 'upstream', [bb, 'sh', '-c', script], [
      '--snapshotter', 'obd', '--mount', `type=bind,src=${bb},dst=${bb},options=rbind:ro`,
    ]);
    const data = Buffer.alloc(100000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 251;
    const dataSha = crypto.createHash('sha256').update(data).digest('hex');
    assert.equal(out, `hello overlaybd, modified in e2\nnew.txt\ndeleted\n${dataSha}  /bin/data.bin\n`);

    const log = fs.readFileSync(env.snapshotter.logPath, 'utf8');
    assert.match(log, /layer type detected by its header.*overlaybd=true/, 'the unannotated top layer was recognised by its header');
    const fetched = (await env.deviceStats()).reduce((n, s) => n + s.fetchedBytes, 0);
    const total = layers.reduce((n, l) => n + l.size, 0);
    t.diagnostic(`fetched ${fetched} of ${total} bytes`);
    assert.ok(fetched > 0 && fetched < total, `fetched ${fetched} of ${total}`);
  });

  it('CRI labels alone (cri.image-ref, cri.layer-digest, no annotations) take the remote path by header detection', async () => {
    const sn = new SnapshotsClient(env.snapshotter.address);
    try {
      const labels = (digest: string, chain: string) => ({
        'containerd.io/snapshot.ref': chain,
        'containerd.io/snapshot/cri.image-ref': pushed.ref,
        'containerd.io/snapshot/cri.layer-digest': digest,
        'containerd.io/snapshot/cri.manifest-digest': 'sha256:' + '0'.repeat(64),
      });
      await assert.rejects(sn.prepare('cri/1/extract a', '', labels(pushed.layers[0].digest, 'cri-chain-0')), (err: { code: number }) => err.code === 6);
      const info = await sn.stat('cri-chain-0');
      assert.equal(info.kind, 'COMMITTED');
      assert.equal(info.labels['containerd.io/snapshot/remote'], 'remote snapshot');
      // A plain tar layer named the same way stays a normal (overlay) snapshot.
      const plain = await env.registry.pushBlob('upstream/e-ext4', tar([{ path: 'x', type: 'file', data: 'x' }]));
      const mounts = await sn.prepare('cri/2/extract b', '', labels(plain, 'cri-chain-plain'));
      assert.equal(mounts[0].type, 'bind');
      await sn.remove('cri/2/extract b');
      await sn.remove('cri-chain-0');
    } finally {
      sn.close();
    }
  });
});
