// Fuzz worker for zfile-fuzz.test.ts, run in its own process so that a crash (abort, segfault)
// fails the test instead of killing the runner. Mutates real ZFile fixtures; every mutant must give
// an error or, when per-block checksums protect the data, exactly the original bytes.
// Usage: node zfile-fuzz-child.js <iterations> <seed>. Prints one JSON summary line; exit 1 on a violation.
import fs from 'node:fs';
import path from 'node:path';
import { crc32c, openZFile, zfileInspect } from '../../src/addon';
import { ext4_64, fixture, prng, tempDir } from './zfile-support';

interface Target {
  file: string;
  /** Blocks carry checksums and are read with verify=true: a success must return the original bytes. */
  strict: boolean;
  weight: number;
  /** Read only these ranges (large payloads); undefined = everything. */
  ranges?: Array<[number, number]>;
  /** Only mutate the structural parts (header, trailer, jump table). */
  structuralOnly?: boolean;
}

const iterations = Number(process.argv[2] ?? 2000);
const rnd = prng(Number(process.argv[3] ?? 1));
const dir = tempDir('obd-zfile-fuzz-');

const targets: Target[] = [
  { file: fixture('c_zfile/c.lz4_bs4k.zfile'), strict: true, weight: 4 },
  { file: fixture('c_zfile/c.zstd_bs4k.zfile'), strict: true, weight: 3 },
  { file: fixture('c_zfile/c.lz4_bs64k.zfile'), strict: true, weight: 2 },
  { file: fixture('c_zfile/c.zstd_bs64k.zfile'), strict: true, weight: 2 },
  { file: fixture('c_zfile/c.commit_z_lz4_bs4k.zfile'), strict: true, weight: 3 },
  { file: fixture('c_zfile/c.commit_z_zstd_bs64k.zfile'), strict: true, weight: 2 },
  { file: fixture('c_zfile/c.lz4_bs4k_nocrc.zfile'), strict: false, weight: 2 },
  { file: fixture('c_zfile/c.zstd_bs4k_nocrc.zfile'), strict: false, weight: 2 },
  { file: fixture('a_empty/a3_api_64m.commit.lz4_bs4k.zfile'), strict: true, weight: 1 },
  { file: fixture('e_ext4/e1.commit.lz4_bs4k.zfile'), strict: true, weight: 1 },
  // 541 MB payload: structural damage only, and read the first and last 256 KiB.
  { file: ext4_64(), strict: true, weight: 1, structuralOnly: true, ranges: [[0, 262144], [541937664 - 262144, 262144]] },
];

const pick = (n: number): number => rnd() % n;

function structuralOffsets(buf: Buffer): Array<[number, number]> {
  const t = buf.length - 512;
  const idxOff = Number(buf.readBigUInt64LE(t + 40));
  const idxLen = Math.min(Number(buf.readBigUInt64LE(t + 48)) * 4, Math.max(0, t - idxOff));
  const regions: Array<[number, number]> = [[0, 96], [t, 96]];
  if (idxOff > 0 && idxOff < t && idxLen > 0) regions.push([idxOff, idxLen]);
  return regions;
}

function fixDigest(buf: Buffer, at: number): void {
  if (at < 0 || at + 512 > buf.length) return;
  const block = buf.subarray(at, at + 512);
  block.writeUInt32LE(0, 28);
  block.writeUInt32LE(crc32c(block, 0), 28);
}

/** Applies 1..3 random mutations; returns a description for failure reports. */
function mutate(orig: Buffer, t: Target): { buf: Buffer; what: string[] } {
  let buf = Buffer.from(orig);
  const what: string[] = [];
  const count = 1 + pick(3);
  for (let k = 0; k < count; k++) {
    const regions = structuralOffsets(orig);
    const [rs, rl] = regions[pick(regions.length)];
    const anywhere = () => pick(Math.max(1, buf.length));
    const structural = () => rs + pick(rl);
    const pos = Math.min(t.structuralOnly || pick(2) === 0 ? structural() : anywhere(), Math.max(0, buf.length - 1));
    switch (pick(t.structuralOnly ? 3 : 7)) {
      case 0: {
        const bit = 1 << pick(8);
        buf[pos] ^= bit;
        what.push(`flip ${pos}^${bit}`);
        break;
      }
      case 1: {
        const v = [0, 0xff, pick(256)][pick(3)];
        buf[pos] = v;
        what.push(`set ${pos}=${v}`);
        break;
      }
      case 2: {
        // Rewrite a header/trailer field with an extreme value and re-seal the digest, so the
        // field validation (not just the digest) is exercised.
        const at = pick(2) === 0 ? 0 : buf.length - 512;
        const field = [40, 48, 56, 64, 72, 76, 84, 88, 32][pick(9)];
        const values = [0n, 1n, 0xffffffffn, 0xffffffffffffffffn, BigInt(pick(1 << 30)), 1n << 62n];
        const v = values[pick(values.length)];
        if (at >= 0 && at + field + 8 <= buf.length) {
          if (field === 76 || field === 88) buf[at + field] = Number(v & 0xffn);
          else if (field === 64 || field === 72 || field === 84) buf.writeUInt32LE(Number(v & 0xffffffffn), at + field);
          else buf.writeBigUInt64LE(v, at + field);
          fixDigest(buf, at);
        }
        what.push(`field ${at}+${field}=${v} (digest resealed)`);
        break;
      }
      case 3: {
        const len = pick(buf.length + 1);
        buf = buf.subarray(0, len);
        what.push(`truncate ${len}`);
        break;
      }
      case 4: {
        const extra = Buffer.alloc(1 + pick(1000));
        for (let i = 0; i < extra.length; i++) extra[i] = pick(256);
        buf = Buffer.concat([buf, extra]);
        what.push(`append ${extra.length}`);
        break;
      }
      case 5: {
        const len = 1 + pick(64);
        const start = anywhere();
        buf.fill(pick(256), start, Math.min(buf.length, start + len));
        what.push(`fill ${start}+${len}`);
        break;
      }
      default: {
        const a = anywhere();
        const b = anywhere();
        const len = Math.min(1 + pick(256), buf.length - Math.max(a, b));
        if (len > 0) buf.copy(buf, a, b, b + len);
        what.push(`copy ${b}->${a}+${len}`);
      }
    }
  }
  return { buf, what };
}

async function main(): Promise<void> {
  const expected = new Map<string, Buffer[]>();
  const totalWeight = targets.reduce((s, t) => s + t.weight, 0);
  const stats = { iterations: 0, errors: 0, correct: 0, unverifiedOk: 0, errorKinds: {} as Record<string, number> };
  const mutant = path.join(dir, 'mutant.zfile');

  const readRanges = async (file: string, t: Target, verify: boolean): Promise<Buffer[]> => {
    const r = openZFile(file, verify);
    try {
      const ranges = t.ranges ?? [[0, r.size]];
      const out: Buffer[] = [];
      for (const [off, len] of ranges) out.push(await r.read(off, len));
      return out;
    } finally {
      r.close();
    }
  };

  for (const t of targets) expected.set(t.file, await readRanges(t.file, t, true));

  for (let i = 0; i < iterations; i++) {
    let w = pick(totalWeight);
    const t = targets.find((x) => (w -= x.weight) < 0)!;
    const orig = fs.readFileSync(t.file);
    const { buf, what } = mutate(orig, t);
    fs.writeFileSync(mutant, buf);
    stats.iterations++;
    try {
      zfileInspect(mutant);
      const got = await readRanges(mutant, t, true);
      const want = expected.get(t.file)!;
      const same = got.length === want.length && got.every((g, k) => g.equals(want[k]));
      if (same) stats.correct++;
      else if (!t.strict && got.every((g, k) => g.length === want[k].length)) stats.unverifiedOk++;
      else {
        console.log(JSON.stringify({ violation: 'wrong data without an error', file: t.file, mutations: what }));
        process.exit(1);
      }
    } catch (e) {
      const err = e as Error & { code?: string };
      if (!(err instanceof Error) || !err.code || !err.message) {
        console.log(JSON.stringify({ violation: 'error without code/message', file: t.file, mutations: what, err: String(e) }));
        process.exit(1);
      }
      stats.errors++;
      const kind = err.message.replace(/^.*?\.zfile: /, '').replace(/0x[0-9a-f]+/g, 'X').replace(/[0-9]+/g, 'N').slice(0, 60);
      stats.errorKinds[kind] = (stats.errorKinds[kind] ?? 0) + 1;
    }
  }
  console.log(JSON.stringify(stats));
}

main().catch((e) => {
  console.log(JSON.stringify({ violation: 'fuzz driver failed', err: String(e) }));
  process.exit(1);
});
