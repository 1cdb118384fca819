// obdconv --referrer against the private docker-registry 2.8, which has no referrers API: the
// overlaybd manifest is pushed by digest with `subject` = the source manifest and ACI's artifactType,
// and listed under the referrers tag (read-modify-write, so earlier referrers stay); the source's tag
// is untouched; TurboOCI referrers have their own artifactType. `obd rpull` given the plain image's
// reference finds the overlaybd image there (a native one before a TurboOCI one) and
// containerd runs it with the obd snapshotter; the same for a multi-platform index.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { referrersTag } from '../../src/registry';
import { LazyEnv } from '../lazy/env';
import { busyboxLayout, pushTwoPlatformIndex } from './images';
import { getManifest, obdconv, pushLayout } from './support';
import { busyboxTestImage } from '../helpers/images';

const NATIVE = 'application/vnd.containerd.overlaybd.native.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

describe('obdconv --referrer and rpull by referrer (registry without the referrers API)', { timeout: 900_000 }, () => {
  const env = new LazyEnv();
  const convert = (args: string[]) => obdconv([...args, '--json', '--plain-http', '--cache-dir', env.tmp.join('obdconv-cache')]);
  let srcRef: string;
  let srcDigest: string;
  let referrerDigest: string;

  before(async () => {
    await env.start();
    const img = busyboxLayout(env.tmp.join('src'), 'v1');
    await pushLayout(env.registry, 'ref/app', 'v1', img);
    srcRef = `${env.registry.host}/ref/app:v1`;
    srcDigest = img.manifestDigest;
  });
  after(() => env.stop());

  test('the overlaybd manifest is pushed as a referrer of the source: subject, artifactType, listed under the referrers tag', async () => {
    const r = await convert(['--referrer', srcRef]);
    assert.equal(r.code, 0, r.stderr);
    referrerDigest = JSON.parse(r.stdout).manifestDigest;
    const src = (await getManifest(env.registry, 'ref/app', 'v1'))!;
    assert.equal(src.json.config.digest, JSON.parse((await getManifest(env.registry, 'ref/app', srcDigest))!.body.toString()).config.digest);
    assert.equal((await getManifest(env.registry, 'ref/app', 'v1'))!.json.layers[0].annotations, undefined, 'SRC keeps its tag');

    const m = (await getManifest(env.registry, 'ref/app', referrerDigest))!;
    assert.equal(m.json.mediaType, OCI_MANIFEST);
    assert.equal(m.json.artifactType, NATIVE);
    assert.deepEqual(m.json.subject, { mediaType: OCI_MANIFEST, digest: srcDigest, size: src.body.length });
    assert.ok(m.json.layers.every((l: { annotations?: Record<string, string> }) => l.annotations?.['containerd.io/snapshot/overlaybd/blob-digest']));

    const list = (await getManifest(env.registry, 'ref/app', referrersTag(srcDigest)))!;
    assert.equal(list.json.mediaType, 'application/vnd.oci.image.index.v1+json');
    assert.deepEqual(list.json.manifests, [{ mediaType: OCI_MANIFEST, digest: referrerDigest, size: m.body.length, artifactType: NATIVE }]);
  });

  test('a second referrer (other options) is added to the referrers tag, the first stays', async () => {
    const r = await convert(['--referrer', srcRef, `${env.registry.host}/ref/app:zstd`, '--algorithm', 'zstd']);
    assert.equal(r.code, 0, r.stderr);
    const second = JSON.parse(r.stdout).manifestDigest;
    assert.notEqual(second, referrerDigest);
    const list = (await getManifest(env.registry, 'ref/app', referrersTag(srcDigest)))!.json;
    assert.deepEqual(list.manifests.map((d: { digest: string }) => d.digest), [referrerDigest, second]);
    assert.equal((await getManifest(env.registry, 'ref/app', 'zstd'))!.json.subject.digest, srcDigest, 'a tag of its own when DST names one');
    referrerDigest = second;
  });

  test('a TurboOCI referrer carries the turbo artifactType and joins the list', async () => {
    const r = await convert(['--referrer', '--turbo-oci', srcRef]);
    assert.equal(r.code, 0, r.stderr);
    const turbo = JSON.parse(r.stdout).manifestDigest;
    const m = (await getManifest(env.registry, 'ref/app', turbo))!.json;
    assert.equal(m.artifactType, 'application/vnd.containerd.overlaybd.turbo.v1+json');
    assert.equal(m.subject.digest, srcDigest);
    const list = (await getManifest(env.registry, 'ref/app', referrersTag(srcDigest)))!.json;
    assert.deepEqual(list.manifests.map((d: { artifactType: string }) => d.artifactType), [NATIVE, NATIVE, m.artifactType]);
  });

  test('--referrer refuses another repository and SRC\'s own tag', async () => {
    const other = await convert(['--referrer', srcRef, `${env.registry.host}/ref/elsewhere:v1`]);
    assert.notEqual(other.code, 0);
    assert.match(other.stderr, /must be in SRC's repository/);
    const same = await convert(['--referrer', srcRef, srcRef]);
    assert.notEqual(same.code, 0);
    assert.match(same.stderr, /would move SRC's own tag/);
  });

  test('obd rpull of the plain image finds the overlaybd referrer (native before TurboOCI) and containerd runs it lazily', async () => {
    assert.match(await env.rpull(srcRef), /done/);
    const images = (await env.containerd.ctr(['images', 'ls'])).stdout;
    assert.match(images, new RegExp(`${srcRef.replace(/[.]/g, '\\.')}\\s+\\S+\\s+${referrerDigest}`), images);
    const bb = busyboxTestImage();
    const out = await env.containerd.run(srcRef, 'by-referrer', ['/bin/sh', '-c', bb.script], ['--snapshotter', 'obd']);
    assert.equal(out, bb.expectedOutput);
  });

  test('an index converted with --referrer: platform manifests and the index are referrers of their sources; rpull runs amd64', async () => {
    const src = await pushTwoPlatformIndex(env.registry, 'ref/multi', 'v1', env.tmp.join('multi'));
    const r = await convert(['--referrer', src.ref]);
    assert.equal(r.code, 0, r.stderr);
    const s = JSON.parse(r.stdout);
    const indexList = (await getManifest(env.registry, 'ref/multi', referrersTag(src.index.digest)))!.json;
    assert.deepEqual(indexList.manifests.map((d: { digest: string; artifactType: string }) => [d.digest, d.artifactType]), [[s.manifestDigest, NATIVE]]);
    const index = (await getManifest(env.registry, 'ref/multi', s.manifestDigest))!.json;
    assert.equal(index.subject.digest, src.index.digest);
    assert.equal(index.manifests.length, 3);
    const amdList = (await getManifest(env.registry, 'ref/multi', referrersTag(src.amd64.manifestDigest)))!.json;
    assert.deepEqual(amdList.manifests.map((d: { digest: string }) => d.digest), [s.platforms[0].manifestDigest]);
    assert.equal((await getManifest(env.registry, 'ref/multi', 'v1'))!.json.subject, undefined, 'SRC keeps its tag');

    assert.match(await env.rpull(src.ref), /done/);
    const out = await env.containerd.run(src.ref, 'multi-by-referrer', ['/bin/sh', '-c', src.script], ['--snapshotter', 'obd']);
    assert.equal(out, src.expectedOutput);
  });
});
