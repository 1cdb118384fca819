// The read-ahead policy alone (addon/src/remote/read_ahead.h): read-ahead is earned by a stream
// that keeps reading sequentially, doubles on hits of its async marker, is bounded by the caller's
// window, collapses on a random read, and never happens for one small file read.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createReadAheadPolicy } from '../../src/addon';

const KiB = 1024;
const MiB = 1024 * KiB;
const UNIT = 256 * KiB;

/** Reads [from, to) in `chunk` pieces; returns every window the policy asked for. */
function readSequentially(p: ReturnType<typeof createReadAheadPolicy>, from: number, to: number, chunk: number, maxUnits = 1024) {
  const windows: { at: number; firstUnit: number; count: number }[] = [];
  for (let off = from; off < to; off += chunk) {
    const w = p.onRead(off, Math.min(chunk, to - off), maxUnits);
    if (w.count > 0) windows.push({ at: off, ...w });
  }
  return windows;
}

describe('read-ahead policy', () => {
  it('starts with no read-ahead: one small file read (256 KiB in pieces) never reads ahead', () => {
    const p = createReadAheadPolicy({ unitSize: UNIT, size: 1024 * MiB });
    assert.deepEqual(readSequentially(p, 10 * MiB, 10 * MiB + 256 * KiB, 64 * KiB), []);
    assert.deepEqual(readSequentially(p, 50 * MiB, 50 * MiB + 256 * KiB, 128 * KiB), []);
    assert.equal(p.onRead(70 * MiB, 256 * KiB, 1024).count, 0);
  });

  it('a sequential stream earns a window, which doubles each time the reader reaches its marker', () => {
    const p = createReadAheadPolicy({ unitSize: UNIT, size: 1024 * MiB });
    const w = readSequentially(p, 0, 64 * MiB, 128 * KiB);
    assert.ok(w.length >= 4, `windows: ${JSON.stringify(w)}`);
    assert.ok(w[0].at >= 1 * MiB - 128 * KiB, `first window only after 1 MiB read: at ${w[0].at}`);
    for (let i = 1; i < w.length; i++) {
      assert.equal(w[i].count, Math.min(2 * w[i - 1].count, 1024), `window ${i} doubles`);
      assert.equal(w[i].firstUnit, w[i - 1].firstUnit + w[i - 1].count, `window ${i} follows the previous one`);
      // the next window is issued when the reader reaches the first unit of the previous one
      assert.ok(Math.floor(w[i].at / UNIT) <= w[i - 1].firstUnit + 1, `window ${i} asked at ${w[i].at}`);
    }
  });

  it('keeps the window within the given maximum (the link-derived bound)', () => {
    const p = createReadAheadPolicy({ unitSize: UNIT, size: 1024 * MiB });
    const w = readSequentially(p, 0, 200 * MiB, MiB, 8);
    assert.ok(w.length > 5);
    assert.ok(w.every((x) => x.count <= 8), JSON.stringify(w.map((x) => x.count)));
    assert.equal(w[w.length - 1].count, 8);
    const none = createReadAheadPolicy({ unitSize: UNIT, size: 1024 * MiB });
    assert.deepEqual(readSequentially(none, 0, 32 * MiB, MiB, 0), [], 'maximum 0: no read-ahead');
  });

  it('a random read inside a stream collapses its window to nothing; it has to be earned again', () => {
    const p = createReadAheadPolicy({ unitSize: UNIT, size: 1024 * MiB });
    readSequentially(p, 0, 16 * MiB, 128 * KiB);
    const grown = p.streams()[0];
    assert.ok(grown.window >= 4, `window ${grown.window}`);
    assert.equal(p.onRead(5 * MiB, 4 * KiB, 1024).count, 0); // backwards jump inside the stream's area
    const s = p.streams()[0];
    assert.equal(s.window, 0);
    assert.equal(s.run, 4 * KiB);
    assert.equal(s.next, 5 * MiB + 4 * KiB);
    assert.deepEqual(readSequentially(p, 5 * MiB + 4 * KiB, 5 * MiB + 512 * KiB, 64 * KiB), [], 'no read-ahead right after the collapse');
  });

  it('tracks several sequential readers of one blob as separate streams', () => {
    const p = createReadAheadPolicy({ unitSize: UNIT, size: 1024 * MiB });
    const a: number[] = [];
    const b: number[] = [];
    for (let i = 0; i < 64; i++) {
      const wa = p.onRead(i * 256 * KiB, 256 * KiB, 1024);
      const wb = p.onRead(500 * MiB + i * 256 * KiB, 256 * KiB, 1024);
      if (wa.count) a.push(wa.firstUnit);
      if (wb.count) b.push(wb.firstUnit);
    }
    assert.equal(p.streams().length, 2);
    assert.ok(a.length >= 3 && b.length >= 3, `a ${a} b ${b}`);
    assert.ok(a.every((u) => u < 500 * 4) && b.every((u) => u >= 500 * 4));
  });

  it('scattered small reads create no read-ahead at all', () => {
    const p = createReadAheadPolicy({ unitSize: UNIT, size: 1024 * MiB });
    let ahead = 0;
    for (let i = 0; i < 2000; i++) ahead += p.onRead(((i * 7919) % 4096) * 256 * KiB + 4096 * (i % 7), 4096, 1024).count;
    assert.equal(ahead, 0);
    assert.ok(p.streams().length <= 8);
  });

  it('rejects bad arguments with a message', () => {
    assert.throws(() => createReadAheadPolicy({ unitSize: 0, size: 1 }), /unitSize/);
    const p = createReadAheadPolicy({ unitSize: UNIT, size: MiB });
    assert.throws(() => p.onRead(-1, 1, 1), /non-negative/);
  });
});
