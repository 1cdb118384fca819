// How `obdconv --turbo-oci` reads a source layer: one inflate of a gzip blob, while it downloads,
// gives both the uncompressed tar that the build applies and the gzip index (the same bytes as the
// index built on its own); a blob that a download is still writing (a partial file renamed when
// complete) is read as it grows; what cannot be served as TurboOCI is refused by name. No device
// here: the tar is applied to a directory.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import { convertApplyTar, gzipIndexBuild, turboScanLayer } from '../../src/addon';
import { makeTempDir, type TempDir } from '../helpers/tmp';
import { makeStream } from '../formats/gzindex-support';
import { tarTree } from './images';
import { diffTrees, snapshotTree } from './tree';

describe('TurboOCI layer scan', () => {
  let tmp: TempDir;
  let tar: Buffer;
  let gz: Buffer;
  let tree: string;

  before(() => {
    tmp = makeTempDir('obd-turbo-input-');
    tree = tmp.join('tree');
    fs.mkdirSync(`${tree}/etc`, { recursive: true });
    fs.mkdirSync(`${tree}/usr/lib`, { recursive: true });
    fs.writeFileSync(`${tree}/etc/hosts`, '127.0.0.1 localhost\n');
    for (let i = 0; i < 6; i++) fs.writeFileSync(`${tree}/usr/lib/f${i}.bin`, makeStream((1 << 20) + i * 4099, 20 + i));
    tar = fs.readFileSync(tarTree(tree, tmp.join('layer.tar')));
    gz = zlib.gzipSync(tar);
    fs.writeFileSync(tmp.join('layer.tar.gz'), gz);
  });
  after(() => tmp?.cleanup());

  const scan = (name: string, path: string, more: { partialPath?: string; size?: number } = {}) =>
    turboScanLayer({ path, ...more, gzipIndexOut: tmp.join(`${name}.meta`), tarOut: tmp.join(`${name}.tar`) });

  /** The tree that applying `file` (an uncompressed tar) gives. */
  const applied = (name: string, file: string) => {
    const root = tmp.join(name);
    fs.mkdirSync(root);
    const fd = fs.openSync(file, 'r');
    try {
      convertApplyTar({ inputFd: fd, root, chroot: false, plainTar: true });
    } finally {
      fs.closeSync(fd);
    }
    return diffTrees(snapshotTree(tree), snapshotTree(root)).filter((l) => !l.startsWith('differs: .:'));
  };

  test('one inflate gives the uncompressed tar and the same gzip index as building the index alone', async () => {
    const r = await scan('once', tmp.join('layer.tar.gz'));
    assert.equal(r.gzip, true);
    assert.ok(fs.readFileSync(tmp.join('once.tar')).equals(tar));
    const alone = gzipIndexBuild(tmp.join('layer.tar.gz'), tmp.join('alone.meta'));
    assert.ok(fs.readFileSync(tmp.join('once.meta')).equals(fs.readFileSync(tmp.join('alone.meta'))));
    assert.deepEqual(r.gzipIndex, alone);
    assert.deepEqual(applied('once-root', tmp.join('once.tar')), []);
  });

  test('a blob still being downloaded is read as it grows, up to its size; an abandoned download ends the scan', async () => {
    // the partial file is written in pieces, then renamed, as the download does
    const write = async (part: string, final: string | undefined, upTo: number) => {
      await new Promise((r) => setTimeout(r, 50));
      const fd = fs.openSync(part, 'w');
      for (let off = 0; off < upTo; off += 200_000) {
        fs.writeSync(fd, gz, off, Math.min(200_000, upTo - off), off);
        await new Promise((r) => setTimeout(r, 15));
      }
      fs.closeSync(fd);
      if (final) fs.renameSync(part, final);
      else fs.rmSync(part);
    };
    const [r] = await Promise.all([
      scan('followed', tmp.join('dl.gz'), { partialPath: tmp.join('dl.gz.part'), size: gz.length }),
      write(tmp.join('dl.gz.part'), tmp.join('dl.gz'), gz.length),
    ]);
    assert.ok(r.waitedMs > 0, 'it waited for the download');
    assert.ok(fs.readFileSync(tmp.join('followed.tar')).equals(tar));
    assert.ok(fs.readFileSync(tmp.join('followed.meta')).equals(fs.readFileSync(tmp.join('once.meta'))));
    const [gone] = await Promise.allSettled([
      scan('gone', tmp.join('gone.gz'), { partialPath: tmp.join('gone.gz.part'), size: gz.length }),
      write(tmp.join('gone.gz.part'), undefined, gz.length >> 1),
    ]);
    assert.equal(gone.status, 'rejected');
    assert.match((gone as PromiseRejectedResult).reason.message, /the download stopped at byte \d+ of \d+/);
  });

  test('a plain tar is its own tar; zstd, truncated and multi-member gzip blobs are refused by name', async () => {
    const plain = await scan('plain', tmp.join('layer.tar'));
    assert.equal(plain.gzip, false);
    assert.ok(!fs.existsSync(tmp.join('plain.meta')) && !fs.existsSync(tmp.join('plain.tar')));
    assert.deepEqual(applied('plain-root', tmp.join('layer.tar')), []);
    const refuse = async (name: string, bytes: Buffer, re: RegExp) => {
      fs.writeFileSync(tmp.join(name), bytes);
      await assert.rejects(scan(name, tmp.join(name)), re, name);
    };
    await refuse('z.zst', Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(100)]), /zstd layers cannot be served as TurboOCI/);
    await refuse('cut.gz', gz.subarray(0, gz.length >> 1), /gzip stream ends early/);
    await refuse('two.gz', Buffer.concat([gz, zlib.gzipSync(Buffer.from('more'))]), /more than one gzip member/);
  });
});
