// How `obdconv --turbo-oci` reads a source layer: the apply inflates a gzip blob once and writes
// its gzip index from that same pass (the same bytes as the index built on its own), it can read
// a blob that a download is still writing (a partial file renamed when complete), and it refuses
// what cannot be served as TurboOCI by name. No device here: the tar is applied to a directory.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import { convertApplyTar, gzipIndexBuild, type AddonError } from '../../src/addon';
import { makeTempDir, type TempDir } from '../helpers/tmp';
import { makeStream } from '../formats/gzindex-support';
import { tarTree } from './images';
import { snapshotTree, diffTrees } from './tree';

describe('TurboOCI layer input', () => {
  let tmp: TempDir;
  let gz: Buffer;
  let tree: string;

  before(() => {
    tmp = makeTempDir('obd-turbo-input-');
    tree = tmp.join('tree');
    fs.mkdirSync(`${tree}/etc`, { recursive: true });
    fs.mkdirSync(`${tree}/usr/lib`, { recursive: true });
    fs.writeFileSync(`${tree}/etc/hosts`, '127.0.0.1 localhost\n');
    for (let i = 0; i < 6; i++) fs.writeFileSync(`${tree}/usr/lib/f${i}.bin`, makeStream((1 << 20) + i * 4099, 20 + i));
    gz = zlib.gzipSync(fs.readFileSync(tarTree(tree, tmp.join('layer.tar'))));
    fs.writeFileSync(tmp.join('layer.tar.gz'), gz);
  });
  after(() => tmp?.cleanup());

  const apply = (name: string, input: Parameters<typeof convertApplyTar>[0]['input']) => {
    const root = tmp.join(name);
    fs.mkdirSync(root);
    return { root, stats: convertApplyTar({ input, root, chroot: false }) };
  };

  test('one inflate gives the tree and the same gzip index as building the index alone', () => {
    const { root, stats } = apply('once', { path: tmp.join('layer.tar.gz'), gzipIndexOut: tmp.join('once.meta') });
    assert.equal(stats.gzip, true);
    assert.equal(stats.inputBytes, gz.length);
    const alone = gzipIndexBuild(tmp.join('layer.tar.gz'), tmp.join('alone.meta'));
    assert.ok(fs.readFileSync(tmp.join('once.meta')).equals(fs.readFileSync(tmp.join('alone.meta'))));
    assert.deepEqual(stats.gzipIndex, alone);
    assert.deepEqual(diffTrees(snapshotTree(tree), snapshotTree(root)).filter((l) => !l.startsWith('differs: .:')), []);
  });

  test('a blob still being downloaded is read as it grows, up to its size', async () => {
    // another process writes the partial file in pieces, then renames it (as the download does)
    const part = tmp.join('dl.gz.part');
    const writer = spawn(process.execPath, ['-e', `
      const fs = require('fs'); const src = fs.readFileSync(${JSON.stringify(tmp.join('layer.tar.gz'))});
      const fd = fs.openSync(${JSON.stringify(part)}, 'w'); let off = 0;
      const step = () => { if (off >= src.length) { fs.closeSync(fd); fs.renameSync(${JSON.stringify(part)}, ${JSON.stringify(tmp.join('dl.gz'))}); return; }
        const n = Math.min(200000, src.length - off); fs.writeSync(fd, src, off, n, off); off += n; setTimeout(step, 20); };
      setTimeout(step, 100);`], { stdio: 'inherit' });
    const exited = new Promise((r) => writer.on('exit', r));
    const { root, stats } = apply('followed', { path: tmp.join('dl.gz'), partialPath: part, size: gz.length, gzipIndexOut: tmp.join('followed.meta') });
    assert.equal(await exited, 0);
    assert.equal(stats.inputBytes, gz.length);
    assert.ok(fs.readFileSync(tmp.join('followed.meta')).equals(fs.readFileSync(tmp.join('once.meta'))));
    assert.deepEqual(diffTrees(snapshotTree(tree), snapshotTree(root)).filter((l) => !l.startsWith('differs: .:')), []);
  });

  test('a plain tar needs no index; zstd, truncated and multi-member gzip blobs are refused by name', () => {
    const plain = apply('plain', { path: tmp.join('layer.tar'), gzipIndexOut: tmp.join('plain.meta') });
    assert.equal(plain.stats.gzip, false);
    assert.ok(!fs.existsSync(tmp.join('plain.meta')));
    const refuse = (name: string, bytes: Buffer, re: RegExp) => {
      fs.writeFileSync(tmp.join(name), bytes);
      assert.throws(() => apply(`${name}-root`, { path: tmp.join(name), gzipIndexOut: tmp.join(`${name}.meta`) }),
        (e: AddonError) => re.test(e.message), name);
    };
    refuse('z.zst', Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(100)]), /zstd layers cannot be served as TurboOCI/);
    refuse('cut.gz', gz.subarray(0, gz.length >> 1), /gzip stream ends early/);
    refuse('two.gz', Buffer.concat([gz, zlib.gzipSync(Buffer.from('more'))]), /more than one gzip member/);
  });
});
