// Fuzz worker for gzindex-fuzz.test.ts, in its own process so that a crash fails the test instead of
// the runner. Mutates and truncates real gzip indexes (fixing the header checksum half of the time,
// so the field checks behind it are reached too); every mutant must be refused on open, fail the
// read, or read back exactly the original bytes.
// Usage: node gzindex-fuzz-child.js <iterations> <seed>. Prints one JSON summary line; exit 1 on a violation.
import fs from 'node:fs';
import path from 'node:path';
import { crc32c, gzipIndexBuild, openGzipFile } from '../../src/addon';
import { makeStream, writeGzip } from './gzindex-support';
import { prng, tempDir } from './zfile-support';

const iterations = Number(process.argv[2] ?? 1000);
const rnd = prng(Number(process.argv[3] ?? 1));
const dir = tempDir('obd-gzindex-fuzz-');

async function main(): Promise<void> {
  const gz = path.join(dir, 'layer.gz');
  const raw = writeGzip(gz, makeStream(3 << 20, 7));
  const ixPath = path.join(dir, 'gzip.meta');
  gzipIndexBuild(gz, ixPath, { span: 65536 });
  const original = fs.readFileSync(ixPath);
  const stats = { iterations: 0, openErrors: 0, readErrors: 0, correct: 0 };
  const mutant = path.join(dir, 'mutant.meta');
  for (let it = 0; it < iterations; it++) {
    const m = Buffer.from(original);
    let data = m;
    const kind = rnd() % 4;
    if (kind === 0) {
      data = m.subarray(0, rnd() % m.length); // truncated
    } else {
      const hits = 1 + (rnd() % 4);
      for (let h = 0; h < hits; h++) {
        // header (fields behind the checksum), entry table at the end, or anywhere
        const where = kind === 1 ? rnd() % 333 : kind === 2 ? m.length - 1 - (rnd() % Math.min(m.length, 600)) : rnd() % m.length;
        m[where] = rnd() % 3 === 0 ? m[where] ^ (1 << (rnd() % 8)) : rnd() & 0xff;
      }
      if (rnd() % 2 === 0) m.writeUInt32LE(crc32c(m.subarray(0, 329), 0) >>> 0, 329);
    }
    fs.writeFileSync(mutant, data);
    stats.iterations++;
    let f;
    try {
      f = openGzipFile({ blob: gz, index: mutant, cacheBytes: 1 << 20 });
    } catch {
      stats.openErrors++;
      continue;
    }
    try {
      const off = rnd() % raw.length;
      const len = Math.min(raw.length - off, 1 + (rnd() % 400_000));
      const got = await f.read(off, len);
      if (!got.equals(raw.subarray(off, off + len))) {
        console.log(`VIOLATION: iteration ${it}: read ${off}+${len} returned wrong bytes`);
        fs.copyFileSync(mutant, path.join(dir, `violation-${it}.meta`));
        process.exitCode = 1;
        return;
      }
      // a mutant that opens must also get the full stream right (or fail)
      const all = await f.read(0, raw.length);
      if (!all.equals(raw)) {
        console.log(`VIOLATION: iteration ${it}: whole stream differs`);
        process.exitCode = 1;
        return;
      }
      stats.correct++;
    } catch {
      stats.readErrors++;
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
  console.log(JSON.stringify(stats));
}

main().catch((err) => {
  console.log(`VIOLATION: ${(err as Error).stack}`);
  process.exitCode = 1;
});
