// Small pure parts of the converter: the tar wrapper is byte-identical to overlaybd's, chain ids
// follow the OCI image spec, uuids are stable, entry names are normalised or refused.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { tarWrapFile } from '../../src/convert/tar-wrap';
import { platformWanted } from '../../src/convert/image-index';
import { buildManifest, uuidFromChainId } from '../../src/convert/manifest';
import { chainIds, sha256 } from '../../src/digest';
import { makeTempDir } from '../helpers/tmp';

const fixtures = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'overlaybd', 'c_zfile');

describe('converter units', () => {
  test('tar wrapper is byte-identical to `overlaybd-zfile -t` output (fixture c.lz4_bs4k.zfile.tar)', async () => {
    const tmp = makeTempDir('obd-conv-unit-');
    try {
      const out = tmp.join('w.tar');
      const r = await tarWrapFile(path.join(fixtures, 'c.lz4_bs4k.zfile'), out);
      const want = fs.readFileSync(path.join(fixtures, 'c.lz4_bs4k.zfile.tar'));
      assert.ok(fs.readFileSync(out).equals(want));
      assert.equal(r.size, want.length);
      assert.equal(r.digest, sha256(want));
    } finally {
      tmp.cleanup();
    }
  });

  test('chain ids: first = diff id, then sha256("<parent> <diff>")', () => {
    const a = 'sha256:' + 'a'.repeat(64);
    const b = 'sha256:' + 'b'.repeat(64);
    assert.deepEqual(chainIds([a, b]), [a, sha256(`${a} ${b}`)]);
  });

  test('layer uuids are stable v4-shaped uppercase strings', () => {
    const u = uuidFromChainId('sha256:' + 'c'.repeat(64));
    assert.match(u, /^[0-9A-F]{8}-[0-9A-F]{4}-4[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}$/);
    assert.equal(u, uuidFromChainId('sha256:' + 'c'.repeat(64)));
  });

  test('platforms chosen from an index: OS and architecture must match; a wanted platform without variant takes any variant', () => {
    const arm64v8 = { os: 'linux', architecture: 'arm64', variant: 'v8' };
    assert.equal(platformWanted(arm64v8, []), true, 'no --platform: every platform');
    assert.equal(platformWanted(undefined, []), true);
    assert.equal(platformWanted(arm64v8, [{ os: 'linux', architecture: 'arm64' }]), true);
    assert.equal(platformWanted(arm64v8, [{ os: 'linux', architecture: 'arm64', variant: 'v8' }]), true);
    assert.equal(platformWanted(arm64v8, [{ os: 'linux', architecture: 'arm64', variant: 'v9' }]), false);
    assert.equal(platformWanted({ os: 'linux', architecture: 'amd64' }, [{ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'amd64' }]), true);
    assert.equal(platformWanted({ os: 'windows', architecture: 'amd64' }, [{ os: 'linux', architecture: 'amd64' }]), false);
    assert.equal(platformWanted(undefined, [{ os: 'linux', architecture: 'amd64' }]), false, 'no platform cannot be chosen');
  });

  test('a referrer manifest is OCI with artifactType and subject; a Docker manifest cannot be one', () => {
    const config = Buffer.from('{}');
    const subject = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256('src'), size: 3, annotations: { a: 'b' } };
    const m = JSON.parse(buildManifest('oci', config, [], undefined, { subject, artifactType: 'application/vnd.containerd.overlaybd.native.v1+json' }).toString());
    assert.equal(m.artifactType, 'application/vnd.containerd.overlaybd.native.v1+json');
    assert.deepEqual(m.subject, { mediaType: subject.mediaType, digest: subject.digest, size: 3 });
    assert.equal(JSON.parse(buildManifest('oci', config, []).toString()).subject, undefined);
    assert.throws(() => buildManifest('docker', config, [], undefined, { subject, artifactType: 'x' }), /needs an OCI manifest/);
  });
});
