// obdconv of a multi-platform index (buildx-shaped: linux/amd64, linux/arm64/v8, an attestation of
// the amd64 image): DST gets an index of the same shape whose platform manifests are overlaybd
// images; the amd64 one runs through containerd with the obd snapshotter, the arm64 one is checked
// by its structure and files; the attestation is kept byte for byte; --platform converts only the
// platforms it names and leaves the others out.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { layerInfo } from '../../src/addon';
import { sha256 } from '../../src/digest';
import { Cleanup } from '../helpers/loop';
import { LazyEnv } from '../lazy/env';
import { pushTwoPlatformIndex, type PushedIndex } from './images';
import { getBlob, getManifest, mountStack, obdconv } from './support';

interface IndexSummary {
  manifestDigest: string;
  platforms: { platform: { os: string; architecture: string; variant?: string }; manifestDigest: string; layers: unknown[] }[];
  attestations: { digest: string; of: string; blobs: string[] }[];
  dropped: { digest: string; platform: string; reason: string }[];
}

const overlaybdAnnotations = (l: { digest: string; size: number }) => ({
  'containerd.io/snapshot/overlaybd/version': '0.1.0',
  'containerd.io/snapshot/overlaybd/blob-digest': l.digest,
  'containerd.io/snapshot/overlaybd/blob-size': String(l.size),
  'containerd.io/snapshot/overlaybd/blob-fs-type': 'ext4',
});

describe('obdconv of a multi-platform index', { timeout: 900_000 }, () => {
  const env = new LazyEnv();
  const cleanup = new Cleanup();
  let src: PushedIndex;
  let summary: IndexSummary;
  const convert = (args: string[]) => obdconv([...args, '--json', '--plain-http', '--cache-dir', env.tmp.join('obdconv-cache')]);

  before(async () => {
    await env.start();
    src = await pushTwoPlatformIndex(env.registry, 'multi/app', 'v1', env.tmp.join('src'));
  });
  after(async () => {
    cleanup.run();
    await env.stop();
  });

  test('every platform is converted into an index of the same shape; the attestation stays byte-identical', async () => {
    const r = await convert([src.ref, `${env.registry.host}/multi/app-obd:v1`]);
    assert.equal(r.code, 0, r.stderr);
    summary = JSON.parse(r.stdout) as IndexSummary;
    assert.deepEqual(summary.platforms.map((p) => p.platform), [{ architecture: 'amd64', os: 'linux' }, { architecture: 'arm64', os: 'linux', variant: 'v8' }]);
    assert.deepEqual(summary.attestations.map((a) => [a.digest, a.of]), [[src.attestation.digest, src.amd64.manifestDigest]]);
    assert.deepEqual(summary.attestations[0].blobs, ['mounted', 'mounted'], 'another repository of the same registry: mounted, not copied');
    assert.deepEqual(summary.dropped, []);

    const index = (await getManifest(env.registry, 'multi/app-obd', 'v1'))!;
    assert.equal(sha256(index.body), summary.manifestDigest);
    assert.equal(index.json.mediaType, 'application/vnd.oci.image.index.v1+json');
    assert.deepEqual(index.json.annotations, src.index.json.annotations);
    const [amd, arm, att] = index.json.manifests;
    assert.equal(index.json.manifests.length, 3);
    assert.deepEqual(amd, { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', digest: summary.platforms[0].manifestDigest,
      size: amd.size, platform: src.index.json.manifests[0].platform });
    assert.deepEqual(arm.platform, { architecture: 'arm64', os: 'linux', variant: 'v8' });
    assert.equal(arm.digest, summary.platforms[1].manifestDigest);
    assert.deepEqual(att, src.index.json.manifests[2], 'the attestation descriptor is the source descriptor');
    const kept = (await getManifest(env.registry, 'multi/app-obd', att.digest))!;
    assert.ok(kept.body.equals(src.attestation.body), 'the attestation manifest is byte-identical');
    for (const b of src.attestation.blobs) assert.ok(await getBlob(env.registry, 'multi/app-obd', b), `attestation blob ${b} in DST`);
  });

  test('the amd64 image runs lazily through containerd with the obd snapshotter', async () => {
    const ref = `${env.registry.host}/multi/app-obd:v1`;
    assert.match(await env.rpull(ref), /done/);
    const out = await env.containerd.run(ref, 'multi-amd64', ['/bin/sh', '-c', src.script], ['--snapshotter', 'obd']);
    assert.equal(out, src.expectedOutput);
  });

  test('the arm64 image is an overlaybd image: its layers, diff_ids, platform and files', async () => {
    const m = (await getManifest(env.registry, 'multi/app-obd', summary.platforms[1].manifestDigest))!.json;
    assert.equal(m.layers.length, 2);
    for (const l of m.layers) {
      assert.equal(l.mediaType, 'application/vnd.oci.image.layer.v1.tar');
      assert.deepEqual(l.annotations, overlaybdAnnotations(l));
    }
    const config = JSON.parse((await getBlob(env.registry, 'multi/app-obd', m.config.digest))!.toString());
    assert.deepEqual(config.rootfs.diff_ids, m.layers.map((l: { digest: string }) => l.digest));
    assert.deepEqual([config.os, config.architecture, config.variant], ['linux', 'arm64', 'v8']);
    assert.deepEqual(config.config, { Cmd: ['/bin/app'] });
    const blobs: string[] = [];
    for (const l of m.layers) {
      const f = env.tmp.join(`arm64-${l.digest.slice(7)}`);
      fs.writeFileSync(f, (await getBlob(env.registry, 'multi/app-obd', l.digest))!);
      assert.deepEqual(layerInfo(f).formats.slice(-1), ['lsmt-sealed']);
      blobs.push(f);
    }
    const mnt = env.tmp.join('mnt-arm64');
    mountStack(cleanup, blobs, env.tmp.join('arm64.raw'), mnt);
    assert.ok(fs.readFileSync(path.join(mnt, src.arm64Binary.path)).equals(src.arm64Binary.data));
    assert.equal(fs.readFileSync(path.join(mnt, 'etc/arch'), 'utf8'), 'arm64\n');
    cleanup.run();
  });

  test('--platform linux/arm64 converts only that platform; the others and their attestations are left out', async () => {
    const r = await convert([src.ref, `${env.registry.host}/multi/app-arm:v1`, '--platform', 'linux/arm64']);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as IndexSummary;
    assert.deepEqual(s.platforms.map((p) => p.platform.architecture), ['arm64']);
    assert.equal(s.platforms[0].manifestDigest, summary.platforms[1].manifestDigest, 'the same conversion as before (cache)');
    assert.deepEqual(s.dropped.map((d) => d.reason), ['platform not chosen', 'attestation of a platform not converted']);
    const index = (await getManifest(env.registry, 'multi/app-arm', 'v1'))!.json;
    assert.deepEqual(index.manifests.map((d: { digest: string }) => d.digest), [s.platforms[0].manifestDigest]);

    const none = await convert([src.ref, `${env.registry.host}/multi/app-none:v1`, '--platform', 'linux/s390x,windows/amd64']);
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /has no image manifest for linux\/s390x, windows\/amd64 \(has linux\/amd64, linux\/arm64\/v8\)/);
  });

  test('the same index as an OCI layout converts the same way (oci: in, oci: out)', async () => {
    const out = env.tmp.join('out-layout');
    const r = await convert([`oci:${src.layout}:v1`, `oci:${out}:obd`]);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout) as IndexSummary;
    assert.deepEqual(s.platforms.map((p) => p.manifestDigest), summary.platforms.map((p) => p.manifestDigest), 'the same manifests as in the registry');
    const top = JSON.parse(fs.readFileSync(path.join(out, 'index.json'), 'utf8'));
    assert.deepEqual(top.manifests.map((d: { digest: string; annotations: Record<string, string> }) =>
      [d.digest, d.annotations['org.opencontainers.image.ref.name']]), [[s.manifestDigest, 'obd']]);
    const blob = (d: string) => path.join(out, 'blobs', 'sha256', d.slice(7));
    const index = JSON.parse(fs.readFileSync(blob(s.manifestDigest), 'utf8'));
    assert.deepEqual(index.manifests.map((d: { digest: string }) => d.digest), [...summary.platforms.map((p) => p.manifestDigest), src.attestation.digest]);
    assert.ok(fs.readFileSync(blob(src.attestation.digest)).equals(src.attestation.body));
    for (const b of src.attestation.blobs) assert.ok(fs.existsSync(blob(b)), `attestation blob ${b} copied`);
  });
});
