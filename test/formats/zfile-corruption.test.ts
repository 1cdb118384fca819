// ZFile: every kind of damage gives an error that names the file and what is wrong.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { crc32c, openZFile, zfileInspect } from '../../src/addon';
import { fixture, readAll, tempDir, u32 } from './zfile-support';

const dir = tempDir();
const PLAIN = fixture('c_zfile/c.lz4_bs4k.zfile'); // header 0x13, trailer carries the index
const OVERWRITTEN = fixture('c_zfile/c.commit_z_lz4_bs4k.zfile'); // header 0x1B carries the index
const ZSTD = fixture('c_zfile/c.zstd_bs4k.zfile');
const LZ4_NOCRC = fixture('c_zfile/c.lz4_bs4k_nocrc.zfile');
const ZSTD_NOCRC = fixture('c_zfile/c.zstd_bs4k_nocrc.zfile');

// Field offsets in the 512-byte header/trailer block.
const F = { digest: 28, flags: 32, indexOffset: 40, indexSize: 48, originalSize: 56, indexCrc: 64, blockSize: 72, algo: 76, dictSize: 84, verify: 88 };

let counter = 0;
function write(buf: Buffer): string {
  const p = path.join(dir, `bad-${counter++}.zfile`);
  fs.writeFileSync(p, buf);
  return p;
}

function load(file: string): Buffer {
  return Buffer.from(fs.readFileSync(file));
}

/** Rewrites a field of the block at `at` and recomputes its digest, so only the field is wrong. */
function patch(buf: Buffer, at: number, edit: (block: Buffer) => void): Buffer {
  const block = buf.subarray(at, at + 512);
  edit(block);
  block.writeUInt32LE(0, F.digest);
  block.writeUInt32LE(crc32c(block, 0), F.digest);
  return buf;
}
const trailerAt = (buf: Buffer): number => buf.length - 512;

/** Jump-table location of a non-overwritten fixture, from its trailer. */
function table(buf: Buffer): { off: number; n: number } {
  const t = trailerAt(buf);
  return { off: Number(buf.readBigUInt64LE(t + F.indexOffset)), n: Number(buf.readBigUInt64LE(t + F.indexSize)) };
}

/** Rewrites jump-table entries and fixes index_crc in the trailer, so only the entries are wrong. */
function patchTable(buf: Buffer, edit: (entries: Buffer) => void): Buffer {
  const { off, n } = table(buf);
  const entries = buf.subarray(off, off + 4 * n);
  edit(entries);
  return patch(buf, trailerAt(buf), (b) => b.writeUInt32LE(crc32c(entries, 0), F.indexCrc));
}

function blockStart(buf: Buffer, i: number): number {
  const { off } = table(buf);
  let pos = 512;
  for (let j = 0; j < i; j++) pos += u32(buf, off + 4 * j);
  return pos;
}

function openFails(file: string, pattern: RegExp): void {
  assert.throws(
    () => zfileInspect(file),
    (e: Error & { code: string }) => {
      assert.match(e.message, pattern);
      assert.ok(e.message.startsWith(file), `error names the file: ${e.message}`);
      assert.equal(e.code, 'EBADMSG');
      return true;
    },
  );
  assert.throws(() => openZFile(file, true), pattern);
}

async function readFails(file: string, pattern: RegExp, verify = true): Promise<void> {
  const r = openZFile(file, verify);
  await assert.rejects(readAll(r), (e: Error & { code: string }) => {
    assert.match(e.message, pattern);
    assert.ok(e.message.includes(file), `error names the file: ${e.message}`);
    assert.equal(e.code, 'EBADMSG');
    return true;
  });
}

describe('zfile: truncated files', () => {
  const good = load(PLAIN);
  it('empty and shorter than a header', () => {
    openFails(write(good.subarray(0, 0)), /too small to be a ZFile \(0 bytes\)/);
    openFails(write(good.subarray(0, 511)), /too small to be a ZFile \(511 bytes\)/);
  });
  it('header only, no room for a trailer', () => {
    openFails(write(good.subarray(0, 700)), /truncated: 700 bytes, no room for a trailer/);
  });
  it('cut anywhere after the header: the trailer is not where it should be', () => {
    for (const cut of [1, 100, 512, 4000, good.length - 2000]) {
      openFails(write(good.subarray(0, good.length - cut)), /trailer \(file truncated\?\): bad magic/);
    }
  });
  it('overwritten-header variant cut inside the jump table: index does not fit', () => {
    const g = load(OVERWRITTEN);
    openFails(write(g.subarray(0, g.length - 600)), /index size 261 blocks does not fit/);
  });
});

describe('zfile: damaged header and trailer', () => {
  it('bad header magic', () => {
    const b = load(PLAIN);
    b[3] ^= 0x01;
    openFails(write(b), /header: bad magic \(not a ZFile\)/);
  });
  it('HEADER flag cleared in the header', () => {
    openFails(write(patch(load(PLAIN), 0, (h) => (h[F.flags] &= ~1))), /header: HEADER flag not set/);
  });
  it('any flipped header byte breaks the header digest', () => {
    for (const at of [F.blockSize, F.algo, F.verify, 100, 511]) {
      const b = load(PLAIN);
      b[at] ^= 0x10;
      openFails(write(b), /header: digest mismatch \(stored 0xc7a212fc, computed 0x[0-9a-f]{8}\)/);
    }
  });
  it('any flipped trailer byte breaks the trailer digest', () => {
    for (const at of [F.indexOffset, F.indexSize, F.originalSize, F.indexCrc, 300]) {
      const b = load(PLAIN);
      b[trailerAt(b) + at] ^= 0x04;
      openFails(write(b), /trailer: digest mismatch/);
    }
  });
  it('bad trailer magic', () => {
    const b = load(PLAIN);
    b[trailerAt(b) + 10] ^= 0xff;
    openFails(write(b), /trailer \(file truncated\?\): bad magic/);
  });
  it('trailer flags: HEADER set, SEALED missing, TYPE missing', () => {
    openFails(write(patch(load(PLAIN), trailerAt(load(PLAIN)), (t) => (t[F.flags] |= 1))), /trailer: HEADER flag set/);
    openFails(write(patch(load(PLAIN), trailerAt(load(PLAIN)), (t) => (t[F.flags] &= ~4))), /trailer: SEALED flag not set/);
    openFails(write(patch(load(PLAIN), trailerAt(load(PLAIN)), (t) => (t[F.flags] &= ~2))), /trailer: TYPE \(data file\) flag not set/);
  });
  it('compressed jump table flag is refused', () => {
    openFails(write(patch(load(PLAIN), 0, (h) => (h[F.flags] |= 0x20))), /compressed jump tables are not supported/);
  });
  it('header and trailer disagree on block size / algorithm', () => {
    const t = trailerAt(load(PLAIN));
    openFails(write(patch(load(PLAIN), t, (b) => b.writeUInt32LE(65536, F.blockSize))), /header and trailer disagree on block size \(4096 vs 65536\)/);
    openFails(write(patch(load(PLAIN), t, (b) => (b[F.algo] = 2))), /header and trailer disagree on algorithm \(1 vs 2\)/);
    openFails(write(patch(load(PLAIN), t, (b) => (b[F.verify] = 0))), /header and trailer disagree on verify/);
  });
  it('unsupported algorithm, bad block size, dictionary', () => {
    const both = (edit: (b: Buffer) => void) => {
      const b = load(PLAIN);
      patch(b, 0, edit);
      return write(patch(b, trailerAt(b), edit));
    };
    openFails(both((b) => (b[F.algo] = 0)), /unsupported compression algorithm 0 \(mini-lzo\)/);
    openFails(both((b) => (b[F.algo] = 9)), /unsupported compression algorithm 9/);
    openFails(both((b) => b.writeUInt32LE(3000, F.blockSize)), /invalid block size 3000/);
    openFails(both((b) => b.writeUInt32LE(1 << 20, F.blockSize)), /invalid block size 1048576/);
    openFails(both((b) => b.writeUInt32LE(16, F.dictSize)), /dictionaries are not supported/);
  });
  it('absurd index_size and index_offset', () => {
    const t = trailerAt(load(PLAIN));
    openFails(write(patch(load(PLAIN), t, (b) => b.writeBigUInt64LE(1n << 40n, F.indexSize))), /index size 1099511627776 blocks does not fit/);
    openFails(write(patch(load(PLAIN), t, (b) => b.writeBigUInt64LE(0xffffffffffffffffn, F.indexSize))), /does not fit/);
    openFails(write(patch(load(PLAIN), t, (b) => b.writeBigUInt64LE(1n << 62n, F.indexOffset))), /index offset 4611686018427387904 outside the file/);
    openFails(write(patch(load(PLAIN), t, (b) => b.writeBigUInt64LE(100n, F.indexOffset))), /index offset 100 outside the file/);
  });
  it('original size that does not match the block count', () => {
    const t = trailerAt(load(PLAIN));
    openFails(write(patch(load(PLAIN), t, (b) => b.writeBigUInt64LE(1n << 50n, F.originalSize))), /index has 261 blocks but original size 1125899906842624 needs/);
    openFails(write(patch(load(PLAIN), t, (b) => b.writeBigUInt64LE(4096n, F.originalSize))), /index has 261 blocks but original size 4096 needs 1 blocks/);
  });
  it('overwritten header: the header carries the index, a damaged trailer is ignored (as upstream)', async () => {
    const b = load(OVERWRITTEN);
    b[trailerAt(b) + 100] ^= 0xff;
    const r = openZFile(write(b), true);
    assert.equal(r.size, 1065472);
    await readAll(r);
    const h = load(OVERWRITTEN);
    h[F.indexSize] ^= 0x01;
    openFails(write(h), /header: digest mismatch/);
  });
});

describe('zfile: damaged jump table', () => {
  it('a flipped entry breaks index_crc', () => {
    const b = load(PLAIN);
    b[table(b).off + 9] ^= 0x01;
    openFails(write(b), /jump table: crc mismatch \(stored 0x81542f7f, computed 0x[0-9a-f]{8}\)/);
  });
  it('zero, tiny and oversized block lengths', () => {
    openFails(write(patchTable(load(PLAIN), (e) => e.writeUInt32LE(0, 12))), /jump table: block 3 has stored length 0 \(must be 5\.\.4132\)/);
    openFails(write(patchTable(load(PLAIN), (e) => e.writeUInt32LE(4, 0))), /jump table: block 0 has stored length 4/);
    openFails(write(patchTable(load(PLAIN), (e) => e.writeUInt32LE(0xffffffff, 4 * 260))), /jump table: block 260 has stored length 4294967295/);
  });
  it('lengths that do not add up to the data section', () => {
    openFails(write(patchTable(load(PLAIN), (e) => e.writeUInt32LE(e.readUInt32LE(8) + 1, 8))), /jump table: block lengths add up to 72125 bytes but the data section is 72124/);
  });
  it('shifted block boundaries (sum unchanged) are caught by the block checksums', async () => {
    const file = write(
      patchTable(load(PLAIN), (e) => {
        e.writeUInt32LE(e.readUInt32LE(8) + 3, 8);
        e.writeUInt32LE(e.readUInt32LE(12) - 3, 12);
      }),
    );
    zfileInspect(file); // structurally valid
    await readFails(file, /block 2 \(stored at offset \d+, \d+ bytes\): checksum mismatch/);
  });
});

describe('zfile: damaged blocks', () => {
  it('a flipped compressed byte fails the block checksum (lz4 and zstd)', async () => {
    for (const file of [PLAIN, ZSTD, OVERWRITTEN]) {
      const b = load(file);
      b[blockStart(b, 5) + 7] ^= 0x40;
      await readFails(write(b), /block 5 \(stored at offset \d+, \d+ bytes\): checksum mismatch \(stored 0x[0-9a-f]{8}, computed 0x[0-9a-f]{8}\)/);
    }
  });
  it('a flipped checksum byte is a checksum mismatch too', async () => {
    const b = load(PLAIN);
    b[blockStart(b, 1) - 1] ^= 0x01;
    await readFails(write(b), /block 0 .*checksum mismatch/);
  });
  it('a read of other blocks still succeeds', async () => {
    const b = load(PLAIN);
    b[blockStart(b, 5) + 7] ^= 0x40;
    const r = openZFile(write(b), true);
    assert.equal((await r.read(0, 5 * 4096)).length, 5 * 4096);
    await assert.rejects(r.read(5 * 4096, 1), /block 5/);
  });
  it('garbage blocks without checksums fail to decompress', async () => {
    for (const [file, pattern] of [
      [LZ4_NOCRC, /block 5 .*: lz4 data is corrupt/],
      [ZSTD_NOCRC, /block 5 .*: zstd data is corrupt: /],
    ] as const) {
      const b = load(file);
      const s = blockStart(b, 5);
      b.fill(0xff, s, blockStart(b, 6));
      await readFails(write(b), pattern);
    }
  });
  it('blocks that decompress to the wrong size', async () => {
    // original_size shortened by 100 bytes: same block count, last block now 100 bytes too long.
    for (const file of [LZ4_NOCRC, ZSTD_NOCRC]) {
      const b = load(file);
      const t = trailerAt(b);
      const orig = b.readBigUInt64LE(t + F.originalSize);
      const f = write(patch(b, t, (x) => x.writeBigUInt64LE(orig - 100n, F.originalSize)));
      await readFails(f, /block 260 .*(lz4 data is corrupt|zstd data is corrupt: Destination buffer is too small)/);
    }
    // original_size grown to a whole last block: the 512-byte last block comes out short.
    for (const [file, algo] of [[LZ4_NOCRC, 'lz4'], [ZSTD_NOCRC, 'zstd']] as const) {
      const b = load(file);
      const f = write(patch(b, trailerAt(b), (x) => x.writeBigUInt64LE(261n * 4096n, F.originalSize)));
      await readFails(f, new RegExp(`block 260 .*: ${algo} data decompressed to 512 bytes, expected 4096`));
    }
  });
  it('checksums can be skipped on open (verify=false) as overlaybd does for local files', async () => {
    const b = load(PLAIN);
    b[blockStart(b, 1) - 1] ^= 0x01; // only the stored crc of block 0 is wrong
    const r = openZFile(write(b), false);
    assert.equal((await readAll(r)).length, 1065472);
  });
});

describe('zfile: missing input', () => {
  it('names the path and says ENOENT', () => {
    assert.throws(() => zfileInspect(path.join(dir, 'nope.zfile')), (e: Error & { code: string }) => {
      assert.equal(e.code, 'ENOENT');
      assert.match(e.message, /nope\.zfile: open: No such file or directory/);
      return true;
    });
  });
});
