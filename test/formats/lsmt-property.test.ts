// Property tests: random writes and discards through writable layers and stacks, checked against
// a flat reference buffer; the index log replays to the same disk; commits read back identically.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { commitLayer, createWritableLayer, LayerStack, openStack } from '../../src/addon';
import { makeTempDir, MiB, prng, withStack } from './lsmt-support';

const tmp = makeTempDir('obd-lsmt-prop-');
after(() => tmp.cleanup());

const VSIZE = 8 * MiB;
const SECTOR = 512;

/** One random op applied to both the stack and the reference. */
function randomOp(rnd: () => number, s: LayerStack, ref: Buffer): string {
  const sectors = ref.length / SECTOR;
  const start = rnd() % sectors;
  const kind = rnd() % 10;
  // mostly small ops, sometimes large ones that cross the 4 MiB split and the 16383-sector limit
  const maxLen = kind === 0 ? sectors - start : Math.min(sectors - start, 1 + (rnd() % 64));
  const len = 1 + (rnd() % maxLen);
  const off = start * SECTOR;
  const bytes = len * SECTOR;
  if (kind < 7) {
    const data = crypto.randomBytes(bytes);
    s.write(off, data);
    data.copy(ref, off);
    return `write ${off}+${bytes}`;
  }
  s.discard(off, bytes);
  ref.fill(0, off, off + bytes);
  return `discard ${off}+${bytes}`;
}

function assertSame(s: LayerStack, ref: Buffer, what: string): void {
  const got = s.read(0, ref.length);
  if (!got.equals(ref)) {
    let i = 0;
    while (got[i] === ref[i]) i++;
    assert.fail(`${what}: first difference at byte ${i} (sector ${Math.floor(i / SECTOR)})`);
  }
}

function assertRandomReads(rnd: () => number, s: LayerStack, ref: Buffer, n: number): void {
  const sectors = ref.length / SECTOR;
  for (let k = 0; k < n; k++) {
    const start = rnd() % sectors;
    const len = 1 + (rnd() % Math.min(sectors - start, 300));
    const got = s.read(start * SECTOR, len * SECTOR);
    assert.ok(got.equals(ref.subarray(start * SECTOR, (start + len) * SECTOR)), `read ${start}+${len} sectors`);
  }
}

function newLayer(name: string, parentUuid?: string): { data: string; index: string } {
  const data = tmp.join(`${name}.data`);
  const index = tmp.join(`${name}.index`);
  createWritableLayer(data, index, { vsize: VSIZE, parentUuid });
  return { data, index };
}

describe('writable layer vs a reference buffer', () => {
  for (const seed of [11, 22, 33]) {
    it(`seed ${seed}: 300 random writes/discards; reads, index replay after reopen, and commit all match`, () => {
      const rnd = prng(seed);
      const ref = Buffer.alloc(VSIZE);
      const upper = newLayer(`w${seed}`);
      const log: string[] = [];
      withStack({ lowers: [], upper }, (s) => {
        assert.equal(s.size(), VSIZE);
        for (let i = 0; i < 300; i++) {
          log.push(randomOp(rnd, s, ref));
          if (i % 50 === 49) assertRandomReads(rnd, s, ref, 20);
        }
        s.flush();
        assertSame(s, ref, 'live layer');
      });
      withStack({ lowers: [], upper }, (s) => assertSame(s, ref, 'reopened (index log replayed)'));
      const sealed = tmp.join(`w${seed}.lsmt`);
      const r = commitLayer(upper.data, upper.index, sealed, { userTag: `seed ${seed}` });
      assert.ok(r.extents > 0);
      assert.equal(r.indexEntries % 256, 0);
      withStack({ lowers: [sealed] }, (s) => {
        assertSame(s, ref, 'committed layer');
        assertRandomReads(rnd, s, ref, 50);
      });
      const zf = tmp.join(`w${seed}.zfile`);
      commitLayer(upper.data, upper.index, zf, { zfile: { algorithm: seed % 2 ? 'lz4' : 'zstd', blockSize: 16384 } });
      withStack({ lowers: [zf] }, (s) => assertSame(s, ref, 'committed ZFile layer'));
    });
  }

  it('unaligned and out-of-range I/O is refused with EINVAL', () => {
    const upper = newLayer('align');
    withStack({ lowers: [], upper }, (s) => {
      assert.throws(() => s.write(100, Buffer.alloc(512)), { code: 'EINVAL' });
      assert.throws(() => s.write(0, Buffer.alloc(100)), { code: 'EINVAL' });
      assert.throws(() => s.discard(512, 1000), { code: 'EINVAL' });
      assert.throws(() => s.write(VSIZE, Buffer.alloc(512)), { code: 'EINVAL', message: /beyond the end/ });
    });
  });
});

describe('multi-layer stacks vs a reference buffer', () => {
  it('5 committed layers, each written over the previous ones, then a writable upper: every level matches', () => {
    const rnd = prng(4242);
    const ref = Buffer.alloc(VSIZE);
    const lowers: string[] = [];
    for (let level = 0; level < 5; level++) {
      const upper = newLayer(`m${level}`);
      withStack({ lowers, upper }, (s) => {
        for (let i = 0; i < 80; i++) randomOp(rnd, s, ref);
        assertSame(s, ref, `level ${level} live`);
      });
      const sealed = tmp.join(`m${level}.lsmt`);
      commitLayer(upper.data, upper.index, sealed, { uuid: crypto.randomUUID() });
      lowers.push(sealed);
      withStack({ lowers }, (s) => {
        assertSame(s, ref, `stack of ${lowers.length} committed layers`);
        assertRandomReads(rnd, s, ref, 30);
      });
    }
    const top = newLayer('mtop');
    withStack({ lowers, upper: top }, (s) => {
      for (let i = 0; i < 100; i++) randomOp(rnd, s, ref);
      assertSame(s, ref, 'writable upper over 5 lowers');
    });
    withStack({ lowers, upper: top }, (s) => assertSame(s, ref, 'reopened upper over 5 lowers'));
  });

  it('an overwrite of data the upper holds goes in place (no record, no data growth); partly unmapped ranges append', () => {
    const upper = newLayer('inplace');
    const ref = Buffer.alloc(VSIZE);
    const put = (s: LayerStack, off: number, len: number, byte: number) => {
      const b = Buffer.alloc(len, byte);
      s.write(off, b);
      b.copy(ref, off);
    };
    withStack({ lowers: [], upper }, (s) => {
      put(s, 0, 64 * 1024, 1);
      put(s, 64 * 1024, 64 * 1024, 2); // a second extent right after the first
      const dataSize = fs.statSync(upper.data).size;
      const indexSize = fs.statSync(upper.index).size;
      put(s, 4096, 4096, 3); // inside the first extent
      put(s, 60 * 1024, 8192, 4); // across both extents
      assert.equal(fs.statSync(upper.data).size, dataSize, 'in-place overwrites do not grow the data file');
      assert.equal(fs.statSync(upper.index).size, indexSize, 'in-place overwrites add no record');
      put(s, 120 * 1024, 16 * 1024, 5); // half over data, half over a hole: appended
      s.discard(0, 4096);
      ref.fill(0, 0, 4096);
      put(s, 0, 8192, 6); // over a zeroed extent: appended
      assert.ok(fs.statSync(upper.index).size > indexSize, 'partly unmapped writes append records');
      assertSame(s, ref, 'after overwrites');
    });
    withStack({ lowers: [], upper }, (s) => assertSame(s, ref, 'index replay after overwrites'));
    const sealed = tmp.join('inplace.lsmt');
    commitLayer(upper.data, upper.index, sealed);
    withStack({ lowers: [sealed] }, (s) => assertSame(s, ref, 'commit after overwrites'));
  });

  it('a writable layer created with vsize 0 takes the lower stack\'s size', () => {
    const lower = newLayer('v0lower');
    withStack({ lowers: [], upper: lower }, (s) => s.write(0, Buffer.alloc(4096, 7)));
    const sealed = tmp.join('v0lower.lsmt');
    commitLayer(lower.data, lower.index, sealed);
    const data = tmp.join('v0.data');
    const index = tmp.join('v0.index');
    createWritableLayer(data, index, { vsize: 0 });
    withStack({ lowers: [sealed], upper: { data, index } }, (s) => {
      assert.equal(s.size(), VSIZE);
      assert.equal(s.read(0, 512)[0], 7);
    });
    withStack({ lowers: [], upper: { data, index } }, (s) => assert.equal(s.size(), VSIZE, 'size persisted in the header'));
  });

  it('the same stack opened twice reads the same bytes (lowers are shared read-only)', () => {
    const rnd = prng(7);
    const ref = Buffer.alloc(VSIZE);
    const upper = newLayer('shared');
    withStack({ lowers: [], upper }, (s) => {
      for (let i = 0; i < 50; i++) randomOp(rnd, s, ref);
    });
    const sealed = tmp.join('shared.lsmt');
    commitLayer(upper.data, upper.index, sealed);
    const a = openStack({ lowers: [sealed, sealed] });
    const b = openStack({ lowers: [sealed] });
    try {
      assertSame(a, ref, 'a');
      assertSame(b, ref, 'b');
    } finally {
      a.close();
      b.close();
    }
  });
});
