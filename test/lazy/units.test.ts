// The small pure parts of the lazy path: overlaybd header detection, repoBlobUrl, trace files.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { looksLikeOverlaybd } from '../../src/snapshotter/overlaybd/detect';
import { repoBlobUrl } from '../../src/snapshotter/overlaybd/repo-url';
import { chainIds } from '../../src/digest';
import { layerLabels } from '../../src/rpull/rpull';
import { parseTrace, traceMode, TraceWriter, TRACE_HEADER } from '../../src/trace/trace';
import { makeTempDir } from '../helpers/tmp';

const FIXTURES = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'overlaybd');
const head = (f: string) => fs.readFileSync(path.join(FIXTURES, f)).subarray(0, 2048);

describe('overlaybd header detection', () => {
  it('recognises LSMT, ZFile and tar-wrapped ZFile blobs by their first bytes', () => {
    assert.ok(looksLikeOverlaybd(head('e_ext4/e1.commit.lsmt')));
    assert.ok(looksLikeOverlaybd(head('e_ext4/e1.commit.lz4_bs4k.zfile')));
    assert.ok(looksLikeOverlaybd(head('c_zfile/c.lz4_bs4k.zfile.tar')));
  });
  it('rejects plain tars, gzip and short input', () => {
    assert.ok(!looksLikeOverlaybd(Buffer.from('{"name": "not a layer"}')));
    assert.ok(!looksLikeOverlaybd(Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3])));
    assert.ok(!looksLikeOverlaybd(Buffer.alloc(4)));
    const tarHeader = Buffer.alloc(1024);
    tarHeader.write('file.txt', 0);
    tarHeader.write('ustar\0', 257);
    assert.ok(!looksLikeOverlaybd(tarHeader), 'a tar whose member is not a layer');
  });
});

describe('repoBlobUrl', () => {
  it('https by default, docker.io canonicalised, http for insecure mirrors and loopback', () => {
    assert.equal(repoBlobUrl('registry.example.com/app/web:v1', null), 'https://registry.example.com/v2/app/web/blobs');
    assert.equal(repoBlobUrl('busybox', null), 'https://registry-1.docker.io/v2/library/busybox/blobs');
    assert.equal(repoBlobUrl('reg.lan:5000/x:1', [{ host: 'reg.lan:5000', insecure: true }]), 'http://reg.lan:5000/v2/x/blobs');
    assert.equal(repoBlobUrl('reg.lan:5000/x:1', [{ host: 'reg.lan:5000', insecure: false }]), 'https://reg.lan:5000/v2/x/blobs');
    assert.equal(repoBlobUrl('127.0.0.1:5000/x@sha256:' + 'a'.repeat(64), null), 'http://127.0.0.1:5000/v2/x/blobs');
  });
});

describe('rpull helpers', () => {
  it('chain ids follow the OCI rule', () => {
    const a = 'sha256:' + '1'.repeat(64);
    const b = 'sha256:' + '2'.repeat(64);
    const [c0, c1] = chainIds([a, b]);
    assert.equal(c0, a);
    assert.match(c1, /^sha256:[0-9a-f]{64}$/);
    assert.notEqual(c1, b);
  });
  it('layer labels keep only containerd.io/snapshot/* annotations and add the ref labels', () => {
    const l = layerLabels(
      {
        mediaType: 'x', digest: 'sha256:' + 'f'.repeat(64), size: 1,
        annotations: { 'containerd.io/snapshot/overlaybd/blob-size': '1', 'org.other': 'no', 'containerd.io/snapshot/cri.image-ref': 'evil.example/x:y' },
      },
      'sha256:' + 'c'.repeat(64),
      'reg/app:v1',
    );
    assert.deepEqual(Object.keys(l).sort(), [
      'containerd.io/snapshot.ref', 'containerd.io/snapshot/cri.image-ref', 'containerd.io/snapshot/cri.layer-digest', 'containerd.io/snapshot/image-ref',
      'containerd.io/snapshot/overlaybd/blob-size',
    ]);
    // The location comes from the reference pulled, not from an annotation.
    assert.equal(l['containerd.io/snapshot/cri.image-ref'], 'reg/app:v1');
  });
});

describe('trace files', () => {
  it('empty file records, non-empty replays; a written trace parses back in order, without duplicates', () => {
    const tmp = makeTempDir();
    try {
      const f = tmp.join('t.trace');
      assert.equal(traceMode(f), 'none');
      fs.writeFileSync(f, '');
      assert.equal(traceMode(f), 'record');
      const w = new TraceWriter(f);
      const d = 'sha256:' + 'a'.repeat(64);
      w.add({ digest: d, offset: 262144, length: 262144 });
      w.add({ digest: d, offset: 0, length: 524288 });
      w.add({ digest: d, offset: 262144, length: 262144 });
      w.close();
      assert.equal(traceMode(f), 'replay');
      assert.ok(fs.readFileSync(f, 'utf8').startsWith(TRACE_HEADER));
      assert.deepEqual(parseTrace(fs.readFileSync(f, 'utf8')), [
        { digest: d, offset: 262144, length: 262144 },
        { digest: d, offset: 0, length: 524288 },
      ]);
    } finally {
      tmp.cleanup();
    }
  });
  it('a malformed line is an error naming the line', () => {
    assert.throws(() => parseTrace('# obd-trace v1\nsha256:abc 1 2\n', 'x.trace'), /x\.trace:2:/);
    assert.throws(() => parseTrace(`sha256:${'a'.repeat(64)} 0 0\n`, 'y'), /y:1: bad range/);
  });
});
