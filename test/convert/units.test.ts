// Small pure parts of the converter: the tar wrapper is byte-identical to overlaybd's, chain ids
// follow the OCI image spec, uuids are stable, entry names are normalised or refused.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { tarWrapFile } from '../../src/convert/tar-wrap';
import { uuidFromChainId } from '../../src/convert/manifest';
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
});
