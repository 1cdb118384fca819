// Test data for the gzip index (TurboOCI gzip.meta): a deterministic tar-like stream of text and
// random runs, gzip'd, so spans differ in ratio and deflate block sizes.
import fs from 'node:fs';
import zlib from 'node:zlib';
import { prng } from './zfile-support';

export function makeStream(bytes: number, seed: number): Buffer {
  const rnd = prng(seed);
  const out = Buffer.alloc(bytes);
  let pos = 0;
  while (pos < bytes) {
    const run = Math.min(bytes - pos, 1 + (rnd() % 200_000));
    if (rnd() % 3 === 0) {
      for (let i = 0; i < run; i++) out[pos + i] = rnd() & 0xff;
    } else {
      const word = `word${rnd() % 5000} `;
      for (let i = 0; i < run; i++) out[pos + i] = word.charCodeAt(i % word.length);
    }
    pos += run;
  }
  return out;
}

/** Writes raw gzip'd to `gzPath` and returns raw. */
export function writeGzip(gzPath: string, raw: Buffer, level = 6): Buffer {
  fs.writeFileSync(gzPath, zlib.gzipSync(raw, { level }));
  return raw;
}
