// obdconv refuses malicious layer tars (test/fixtures/tars/make_corpus.py generates them): each
// conversion fails with one error line naming the entry, nothing outside the layer filesystem is
// written or deleted, and nothing is left behind — no mounts, no loop devices, no temp dirs, no
// manifest at the destination.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { makeTempDir, type TempDir } from '../helpers/tmp';
import { buildImage, buildRawImage } from './images';
import { loopsBackedBy, mountsUnder } from '../helpers/loop';
import { obdconv } from './support';

interface Case {
  name: string;
  file: string;
  expect: string;
  args: string[];
}

const corpusScript = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'tars', 'make_corpus.py');

function hashFile(p: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
}

describe('obdconv refuses malicious layer tars', () => {
  let tmp: TempDir;
  let host: string;
  let cases: Case[];
  let benign: string;
  const passwd = hashFile('/etc/passwd');

  before(() => {
    tmp = makeTempDir('obd-conv-evil-');
    host = tmp.join('host-dir');
    fs.mkdirSync(host);
    fs.writeFileSync(path.join(host, 'victim'), 'must survive\n');
    execFileSync('python3', [corpusScript, tmp.join('corpus'), host]);
    cases = JSON.parse(fs.readFileSync(tmp.join('corpus', 'cases.json'), 'utf8')) as Case[];
    const stage = tmp.join('benign');
    fs.mkdirSync(path.join(stage, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(stage, 'etc', 'os-release'), 'ID=test\n');
    benign = tmp.join('benign.tar');
    execFileSync('tar', ['-C', stage, '-cf', benign, '.']);
  });

  after(() => tmp?.cleanup());

  test('the corpus has every kind of attack', () => {
    assert.ok(cases.length >= 15, `${cases.length} cases`);
  });

  test('each malicious tar is refused with an error naming the entry, and nothing escapes', async (t) => {
    for (const c of cases) {
      await t.test(c.name, async () => {
        const srcDir = tmp.join(`src-${c.name}`);
        const dst = tmp.join(`dst-${c.name}`);
        const cache = tmp.join(`cache-${c.name}`);
        // a benign first layer, then the attack: the attack runs on a filesystem with content
        const data = fs.readFileSync(c.file);
        const gz = data[0] === 0x1f && data[1] === 0x8b;
        const img = buildImage(srcDir, [benign], 'gzip');
        const mediaType = gz ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.oci.image.layer.v1.tar';
        const evil = buildRawImage(tmp.join(`raw-${c.name}`), [{ data: fs.readFileSync(img.layers[0].file), mediaType: img.layers[0].mediaType },
          { data, mediaType }]);
        const r = await obdconv([`oci:${evil.dir}`, `oci:${dst}`, '--json', '--vsize', '4', '--cache-dir', cache, ...c.args]);
        assert.equal(r.code, 1, `${c.name} was accepted: ${r.stderr}`);
        // a line about a FUSE session ending as its device is detached ("fuse: …") is not the error
        const lines = r.stderr.trim().split('\n').filter((l) => !l.startsWith('fuse: '));
        assert.equal(lines.length, 1, r.stderr);
        assert.match(lines[0], /^obdconv: layer 2\/2 \(sha256:[0-9a-f]{64}\): /);
        assert.match(lines[0], new RegExp(c.expect, 'i'));
        assert.deepEqual(fs.readdirSync(host).sort(), ['victim']);
        assert.equal(fs.readFileSync(path.join(host, 'victim'), 'utf8'), 'must survive\n');
        assert.equal(hashFile('/etc/passwd'), passwd);
        assert.ok(!fs.existsSync('/obd-evil-absolute') && !fs.existsSync('/obd-evil-dotdot'));
        assert.ok(!fs.existsSync(path.join(dst, 'index.json')), 'a manifest was written');
        assert.deepEqual(mountsUnder(cache), []);
        assert.deepEqual(loopsBackedBy(cache), []);
        assert.deepEqual(fs.readdirSync(path.join(cache, 'tmp')), []);
      });
    }
  });

  test('a source blob whose content does not match its digest is refused before anything is applied', async () => {
    const img = buildImage(tmp.join('src-tampered'), [benign], 'gzip');
    const f = img.layers[0].file;
    const buf = fs.readFileSync(f);
    buf[buf.length - 9] ^= 0xff; // inside the gzip trailer: still the same size
    fs.writeFileSync(f, buf);
    const r = await obdconv([`oci:${img.dir}`, `oci:${tmp.join('dst-tampered')}`, '--json', '--vsize', '4', '--cache-dir', tmp.join('cache-t')]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /content is sha256:[0-9a-f]{64}, expected sha256:/);
    assert.ok(!fs.existsSync(tmp.join('dst-tampered', 'index.json')));
  });
});
