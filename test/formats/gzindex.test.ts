// The gzip index (TurboOCI gzip.meta, docs/formats.md): layout as overlaybd's reader expects it,
// random-access reads equal the inflated stream, each read inflates at most the spans it touches,
// and damaged input (index or blob) is an error naming what is wrong.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import zlib from 'node:zlib';
import { crc32c, gzipIndexBuild, openGzipFile, type AddonError } from '../../src/addon';
import { makeTempDir, type TempDir } from '../helpers/tmp';
import { makeStream, writeGzip } from './gzindex-support';
import { prng } from './zfile-support';

/** Checks every entry of a gzip.meta against the stream it indexes; returns the number of points. */
function checkWindows(b: Buffer, raw: Buffer): number {
  const start = Number(b.readBigInt64LE(313));
  const points = Number(b.readBigInt64LE(25));
  const table = zlib.inflateSync(b.subarray(start));
  assert.equal(table.length, 29 * points);
  let prevDe = -1;
  for (let i = 0; i < points; i++) {
    const e = table.subarray(i * 29, i * 29 + 29);
    const de = Number(e.readBigInt64LE(0));
    const en = Number(e.readBigInt64LE(8));
    const win = Number(e.readBigInt64LE(16));
    const winLen = e.readUInt32LE(25);
    assert.ok(de > prevDe && en > 0 && e[24] <= 7);
    prevDe = de;
    const w = zlib.inflateSync(b.subarray(win, win + winLen));
    const want = Buffer.alloc(32768);
    raw.copy(want, 32768 - Math.min(de, 32768), Math.max(0, de - 32768), de);
    assert.ok(w.equals(want), `window ${i} = the 32 KiB before uncompressed offset ${de}`);
  }
  return points;
}

/** Alternating MiB of random bytes and of text from a small vocabulary (long matches right after a point). */
function randomAndText(seed: number): Buffer {
  const rnd = prng(seed);
  const words = 'the of and to in is was that for on with as by at from'.split(' ');
  const parts: Buffer[] = [];
  for (let i = 0; i < 8; i++) {
    if (i % 2 === 0) {
      parts.push(Buffer.from(Array.from({ length: 1 << 20 }, () => rnd() & 0xff)));
    } else {
      let t = '';
      while (t.length < 1.5 * (1 << 20)) t += words[rnd() % words.length] + (rnd() % 13 ? ' ' : '\n');
      parts.push(Buffer.from(t));
    }
  }
  return Buffer.concat(parts);
}

describe('gzip index', () => {
  let tmp: TempDir;
  let raw: Buffer;
  let gz: string;
  let ix: string;

  before(() => {
    tmp = makeTempDir('obd-gzindex-');
    gz = tmp.join('layer.gz');
    raw = writeGzip(gz, makeStream(12 << 20, 11));
    ix = tmp.join('gzip.meta');
  });
  after(() => tmp?.cleanup());

  test('header, entries and windows follow the gzip.meta layout', () => {
    const st = gzipIndexBuild(gz, ix, { span: 1 << 20 });
    const b = fs.readFileSync(ix);
    assert.equal(st.indexSize, b.length);
    assert.equal(b.subarray(0, 8).toString('latin1'), 'ddgzidx\0');
    assert.equal(b[8], 1);
    assert.equal(b[10], 1); // zlib-compressed windows
    assert.equal(b.readInt32LE(13), 1 << 20);
    assert.equal(b.readInt32LE(17), 32768);
    assert.equal(b.readInt32LE(21), 29);
    assert.equal(Number(b.readBigInt64LE(25)), st.points);
    assert.equal(Number(b.readBigInt64LE(33)), fs.statSync(gz).size);
    assert.equal(Number(b.readBigInt64LE(41)), b.length);
    assert.equal(Number(b.readBigInt64LE(49)), raw.length);
    const start = Number(b.readBigInt64LE(313));
    assert.equal(start + Number(b.readBigInt64LE(321)), b.length);
    assert.equal(b.readUInt32LE(329), crc32c(b.subarray(0, 329), 0) >>> 0);
    assert.equal(checkWindows(b, raw), st.points);
    // access points every ~1 MiB of compressed input
    assert.ok(st.points >= Math.floor(st.gzipSize / (1 << 20)) && st.points <= Math.ceil(st.gzipSize / (1 << 20)) + 1);
  });

  test('every window is exactly the 32 KiB before its point, whatever the data and level', () => {
    // The inflate that builds the index may write past the bytes it returns (node's zlib does,
    // within the output space it is given): that space must never be the window being kept.
    const data = randomAndText(9);
    for (const level of [1, 6, 9]) {
      const g = tmp.join(`rt${level}.gz`);
      writeGzip(g, data, level);
      const st = gzipIndexBuild(g, tmp.join(`rt${level}.meta`), { span: 64 << 10 });
      assert.ok(st.points > 20);
      assert.equal(checkWindows(fs.readFileSync(tmp.join(`rt${level}.meta`)), data), st.points, `level ${level}`);
    }
  });

  test('random reads equal the inflated stream and touch only their spans', async () => {
    gzipIndexBuild(gz, ix, { span: 256 << 10 });
    const f = openGzipFile({ blob: gz, index: ix, cacheBytes: 0 });
    assert.equal(f.size(), raw.length);
    const rnd = prng(5);
    for (let i = 0; i < 150; i++) {
      const off = rnd() % (raw.length + 4096);
      const len = rnd() % 70_000;
      const before = f.stats().spanFetches;
      const got = await f.read(off, len);
      const want = Buffer.alloc(len);
      if (off < raw.length) raw.copy(want, 0, off, Math.min(raw.length, off + len));
      assert.ok(got.equals(want), `read ${off}+${len}`);
      assert.ok(f.stats().spanFetches - before <= 2, 'a read of < 1 span inflates at most the 2 spans it straddles');
    }
    const all = await f.read(0, raw.length);
    assert.ok(all.equals(raw));
  });

  test('a damaged or mismatched index or blob is an error, not wrong data', async () => {
    gzipIndexBuild(gz, ix);
    const good = fs.readFileSync(ix);
    const expectErr = (fn: () => unknown, re: RegExp) => assert.throws(fn, (e: AddonError) => e.code === 'EBADMSG' && re.test(e.message));
    const bad = tmp.join('bad.meta');
    fs.writeFileSync(bad, good.subarray(0, good.length - 7));
    expectErr(() => openGzipFile({ blob: gz, index: bad }), /records a file size/);
    fs.writeFileSync(bad, good.subarray(0, 100));
    expectErr(() => openGzipFile({ blob: gz, index: bad }), /shorter than its header/);
    const m = Buffer.from(good);
    m[0] = 0x41;
    fs.writeFileSync(bad, m);
    expectErr(() => openGzipFile({ blob: gz, index: bad }), /bad magic/);
    const c = Buffer.from(good);
    c[c.length - 3] ^= 0x10; // entry table
    fs.writeFileSync(bad, c);
    expectErr(() => openGzipFile({ blob: gz, index: bad }), /entry table/);
    // the index of another blob
    const gz2 = tmp.join('other.gz');
    writeGzip(gz2, makeStream(1 << 20, 3));
    expectErr(() => openGzipFile({ blob: gz2, index: ix }), /indexes a blob of/);
    // a truncated blob
    const cut = tmp.join('cut.gz');
    fs.writeFileSync(cut, fs.readFileSync(gz).subarray(0, 1000));
    expectErr(() => openGzipFile({ blob: cut, index: ix }), /indexes a blob of/);
    // a window damaged inside (its zlib checksum catches it when the span is read)
    const w = Buffer.from(good);
    w[333 + 40] ^= 0xff;
    fs.writeFileSync(bad, w);
    const f = openGzipFile({ blob: gz, index: bad });
    await assert.rejects(f.read(0, 4096), (e: AddonError) => e.code === 'EBADMSG' && /window of access point 0/.test(e.message));
    // index creation refuses what it cannot index
    fs.writeFileSync(tmp.join('two.gz'), Buffer.concat([zlib.gzipSync(Buffer.from('a')), zlib.gzipSync(Buffer.from('b'))]));
    assert.throws(() => gzipIndexBuild(tmp.join('two.gz'), tmp.join('two.meta')), /more than one gzip member/);
    fs.writeFileSync(tmp.join('trunc.gz'), fs.readFileSync(gz).subarray(0, 50_000));
    assert.throws(() => gzipIndexBuild(tmp.join('trunc.gz'), tmp.join('trunc.meta')), /ends early/);
    assert.ok(!fs.existsSync(tmp.join('trunc.meta')), 'no partial index is left behind');
    fs.rmSync(path.join(tmp.path, 'bad.meta'));
  });
});
