// Damaged layers: every kind of bad input gives an error (EBADMSG for corrupt bytes) whose message
// names the file and what is wrong — never a crash, never a huge allocation, never wrong bytes.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, describe, it } from 'node:test';
import { layerInfo, openStack } from '../../src/addon';
import { copyFixture, fixture, makeTempDir } from './lsmt-support';

const tmp = makeTempDir('obd-lsmt-bad-');
after(() => tmp.cleanup());

const B = fs.readFileSync(fixture('b_patterns/b.commit.lsmt'));
const TRAILER = B.length - 4096; // 1061376
const INDEX = 1057280;
let n = 0;

/** Writes a mutated copy of b.commit.lsmt and returns its path. */
function mutant(mutate: (b: Buffer) => Buffer | void): string {
  const copy = Buffer.from(B);
  const out = mutate(copy) ?? copy;
  const file = tmp.join(`mutant-${n++}.lsmt`);
  fs.writeFileSync(file, out);
  return file;
}

/** `info` says 'unknown' for a file without LSMT magic instead of failing; the stack refuses it. */
function rejectsUnknown(file: string, what: RegExp): void {
  assert.throws(() => openStack({ lowers: [file] }), (e: { code: string; message: string }) => e.code === 'EBADMSG' && e.message.includes(file) && what.test(e.message));
  assert.deepEqual(layerInfo(file).formats, ['unknown']);
}

function rejects(file: string, what: RegExp, code = 'EBADMSG'): void {
  const check = (err: unknown) => {
    const e = err as { code: string; message: string };
    assert.equal(e.code, code, e.message);
    assert.ok(e.message.includes(file), `message names the file: ${e.message}`);
    assert.match(e.message, what);
    return true;
  };
  assert.throws(() => openStack({ lowers: [file] }), check);
  assert.throws(() => layerInfo(file), check);
}

function putEntry(b: Buffer, i: number, offset: bigint, length: bigint, moffset: bigint, zeroed = 0n): void {
  const at = INDEX + 16 * i;
  b.writeBigUInt64LE(offset | (length << 50n), at);
  b.writeBigUInt64LE(moffset | (zeroed << 55n), at + 8);
}

describe('sealed layer validation', () => {
  it('truncated files', () => {
    rejects(mutant((b) => b.subarray(0, 5000)), /too short/);
    rejects(mutant((b) => b.subarray(0, B.length - 100)), /trailer: bad LSMT magic/);
    rejects(mutant((b) => b.subarray(0, 4096 * 3)), /trailer: bad LSMT magic/);
  });

  it('header: bad magic, HEADER flag clear', () => {
    rejectsUnknown(mutant((b) => void (b[3] ^= 0x20)), /header: bad LSMT magic/);
    rejectsUnknown(mutant((b) => void (b[12] ^= 1)), /header: bad LSMT magic/);
    rejects(mutant((b) => void b.writeUInt32LE(6, 28)), /header: HEADER flag is clear/);
  });

  it('trailer: flags must say trailer, data, sealed', () => {
    rejects(mutant((b) => void b.writeUInt32LE(7, TRAILER + 28)), /trailer: HEADER flag is set/);
    rejects(mutant((b) => void b.writeUInt32LE(4, TRAILER + 28)), /trailer: not a data file/);
    rejects(mutant((b) => void b.writeUInt32LE(2, TRAILER + 28)), /trailer: not sealed/);
  });

  it('trailer: absurd index counts and offsets', () => {
    rejects(mutant((b) => void b.writeBigUInt64LE(1n << 40n, TRAILER + 40)), /index_size 1099511627776 exceeds the limit of 1000000/);
    rejects(mutant((b) => void b.writeBigUInt64LE(1000000n, TRAILER + 40)), /runs past the trailer/);
    rejects(mutant((b) => void b.writeBigUInt64LE(257n, TRAILER + 40)), /runs past the trailer/);
    rejects(mutant((b) => void b.writeBigUInt64LE(1n << 60n, TRAILER + 32)), /index_offset \d+ outside/);
    rejects(mutant((b) => void b.writeBigUInt64LE(100n, TRAILER + 32)), /index_offset 100 outside/);
    rejects(mutant((b) => void b.writeBigUInt64LE(1n << 62n, TRAILER + 48)), /virtual_size/);
  });

  it('index entries: data outside the data section, length 0, unsorted or overlapping', () => {
    rejects(mutant((b) => putEntry(b, 0, 0n, 8n, 4n)), /index entry 0 .*inside the header/);
    rejects(mutant((b) => putEntry(b, 2, 122880n, 1n, 2065n)), /index entry 2 .*beyond the index offset/);
    rejects(mutant((b) => putEntry(b, 1, 16384n, 16383n, 16n)), /index entry 1 .*beyond the index offset/);
    rejects(mutant((b) => putEntry(b, 1, 16384n, 0n, 16n)), /index entry 1 .*length 0/);
    rejects(mutant((b) => putEntry(b, 1, 0n, 8n, 8n)), /out of order or overlap/);
    rejects(mutant((b) => putEntry(b, 1, 4n, 8n, 8n)), /out of order or overlap/);
    rejects(mutant((b) => putEntry(b, 1, 1n << 49n, 8n, 16n)), /out of order or overlap/);
  });

  it('a zeroed entry may point at the data cursor, but not past the index', () => {
    const ok = mutant((b) => putEntry(b, 3, 125000n, 8n, 2065n, 1n));
    const s = openStack({ lowers: [ok] });
    assert.ok(s.read(125000 * 512, 4096).equals(Buffer.alloc(4096)));
    s.close();
    rejects(mutant((b) => putEntry(b, 3, 125000n, 8n, 2066n, 1n)), /beyond the index offset/);
  });

  it('a file that is no layer at all is refused, not guessed at', () => {
    const f = tmp.join('text.bin');
    fs.writeFileSync(f, Buffer.alloc(20000, 'hello '));
    assert.throws(() => openStack({ lowers: [f] }), (e: { code: string; message: string }) => e.code === 'EBADMSG' && e.message.includes(f) && /bad LSMT magic/.test(e.message));
    assert.deepEqual(layerInfo(f).formats, ['unknown']);
  });

  it('more than 255 lowers is refused', () => {
    const lowers = Array(256).fill(fixture('a_empty/a3_api_64m.commit.lsmt'));
    assert.throws(() => openStack({ lowers }), { code: 'EINVAL', message: /limit of 255/ });
  });
});

describe('writable layer validation', () => {
  function rw(name: string, mutateIndex?: (b: Buffer) => Buffer | void, mutateData?: (b: Buffer) => Buffer | void) {
    const data = copyFixture('b_patterns/b.rw.data', tmp, `${name}.data`);
    const index = copyFixture('b_patterns/b.rw.index', tmp, `${name}.index`);
    if (mutateIndex) {
      const b = fs.readFileSync(index);
      fs.writeFileSync(index, mutateIndex(b) ?? b);
    }
    if (mutateData) {
      const b = fs.readFileSync(data);
      fs.writeFileSync(data, mutateData(b) ?? b);
    }
    return { data, index };
  }
  const fails = (upper: { data: string; index: string }, file: string, what: RegExp, code = 'EBADMSG') =>
    assert.throws(
      () => openStack({ lowers: [], upper }),
      (e: { code: string; message: string }) => {
        assert.equal(e.code, code, e.message);
        assert.ok(e.message.includes(file), e.message);
        assert.match(e.message, what);
        return true;
      },
    );

  it('index file header: wrong type, sealed, wrong index_offset, too short', () => {
    let u = rw('t1', (b) => void b.writeUInt32LE(3, 28));
    fails(u, u.index, /not an index file/);
    u = rw('t2', (b) => void b.writeUInt32LE(5, 28));
    fails(u, u.index, /SEALED flag set/);
    u = rw('t3', (b) => void b.writeBigUInt64LE(8192n, 32));
    fails(u, u.index, /index_offset 8192, expected 4096/);
    u = rw('t4', (b) => b.subarray(0, 100));
    fails(u, u.index, /too short/);
  });

  it('data file header: bad magic, sparse, truncated data behind a record', () => {
    let u = rw('d1', undefined, (b) => void (b[0] = 0));
    fails(u, u.data, /bad LSMT magic/);
    u = rw('d2', undefined, (b) => void b.writeUInt32LE(0x13, 28));
    fails(u, u.data, /sparse writable layers are not supported/, 'EOPNOTSUPP'); // ENOTSUP and EOPNOTSUPP are one value on Linux
    u = rw('d3', undefined, (b) => b.subarray(0, 8192));
    fails(u, u.index, /record 1 .*beyond the end of/);
  });

  it('a torn last index record (crash mid-append) is ignored; later appends stay record-aligned', () => {
    const u = rw('torn', (b) => Buffer.concat([b, Buffer.alloc(7, 0xff)]));
    const s = openStack({ lowers: [], upper: u });
    // Both append a record: the discard unmaps the data at 0, so the write cannot overwrite it in place.
    s.discard(0, 512);
    s.write(0, Buffer.alloc(512, 0x33));
    s.close();
    assert.equal((fs.statSync(u.index).size - 4096) % 16, 0);
    const again = openStack({ lowers: [], upper: u });
    assert.equal(again.read(0, 512)[0], 0x33);
    assert.equal(again.read(8 * 1024 * 1024, 512)[1], 7);
    again.close();
  });
});

describe('tar wrapper', () => {
  const tarred = fs.readFileSync(fixture('c_zfile/c.lz4_bs4k.zfile.tar'));
  it('a tar whose member runs past the end of the file is refused by name', () => {
    const f = tmp.join('short.tar');
    fs.writeFileSync(f, tarred.subarray(0, 40000));
    assert.throws(() => openStack({ lowers: [f] }), (e: { code: string; message: string }) => e.code === 'EBADMSG' && e.message.includes(f) && /runs past the end/.test(e.message));
  });
  it('a PAX header with a bad size record is refused', () => {
    const b = Buffer.from(tarred);
    const at = b.indexOf('size=', 512);
    b.write('sizX=', at);
    const f = tmp.join('badpax.tar');
    fs.writeFileSync(f, b);
    // the real header's size field is 0, so the member is empty and no layer is found
    assert.throws(() => openStack({ lowers: [f] }), (e: { code: string; message: string }) => e.code === 'EBADMSG' && e.message.includes(f));
  });
  it('a tar header with a bad checksum is not a tar: the blob is used as is (and is no layer)', () => {
    const b = Buffer.from(tarred);
    b[0] ^= 1;
    const f = tmp.join('badsum.tar');
    fs.writeFileSync(f, b);
    assert.deepEqual(layerInfo(f).formats, ['unknown']);
  });
});
