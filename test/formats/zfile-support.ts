// Shared setup for the zfile tests: fixture paths, temp dirs, hashing, the ext4_64 base layer.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import path from 'node:path';
import { ZFileReader } from '../../src/addon';
import { makeTempDir } from '../helpers/tmp';

export const repoRoot = path.resolve(__dirname, '..', '..', '..');
export const fixtureDir = path.join(repoRoot, 'test', 'fixtures', 'overlaybd');
export const fixture = (rel: string): string => path.join(fixtureDir, rel);

/** A temp dir (shared helper) removed when the test process exits. */
export function tempDir(prefix = 'obd-zfile-'): string {
  return makeTempDir(prefix).path;
}

export function sha256(data: Buffer): string {
  return crypto.createHash('sha256').update(data).digest('hex');
}

/** sha256 of the whole decompressed view, read in 8 MiB ranges. */
export async function readerSha256(r: ZFileReader): Promise<string> {
  const h = crypto.createHash('sha256');
  const chunk = 8 << 20;
  for (let off = 0; off < r.size; off += chunk) h.update(await r.read(off, Math.min(chunk, r.size - off)));
  return h.digest('hex');
}

export async function readAll(r: ZFileReader): Promise<Buffer> {
  return r.read(0, r.size);
}

let ext4Path: string | undefined;
/** Extracts `ext4_64` (upstream's base layer, a 2021-format ZFile) from its tar.gz once per process. */
export function ext4_64(): string {
  if (!ext4Path) {
    const dir = tempDir('obd-ext4_64-');
    execFileSync('tar', ['-xzf', fixture('ext4_64.tar.gz'), '-C', dir, 'ext4_64']);
    ext4Path = path.join(dir, 'ext4_64');
  }
  return ext4Path;
}

/** Deterministic pseudo-random bytes (xorshift), so failures reproduce. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

/** Mixed content: runs of text, zeros, random bytes and repeated patterns. */
export function mixedData(size: number, seed: number): Buffer {
  const rnd = prng(seed);
  const buf = Buffer.alloc(size);
  const words = ['overlaybd ', 'layer ', 'block ', 'zfile ', 'containerd ', 'snapshot ', 'ext4 ', '\n'];
  let off = 0;
  while (off < size) {
    const len = Math.min(size - off, 1 + (rnd() % 20000));
    const kind = rnd() % 4;
    if (kind === 0) {
      for (let i = 0; i < len; ) {
        const w = words[rnd() % words.length];
        i += buf.write(w.slice(0, len - i), off + i, 'latin1');
      }
    } else if (kind === 1) {
      // zeros: already zero
    } else if (kind === 2) {
      for (let i = 0; i < len; i++) buf[off + i] = rnd() & 0xff;
    } else {
      const b = rnd() & 0xff;
      for (let i = 0; i < len; i++) buf[off + i] = (b + (i % 7)) & 0xff;
    }
    off += len;
  }
  return buf;
}

export const u32 = (b: Buffer, off: number): number => b.readUInt32LE(off);
export const u64 = (b: Buffer, off: number): number => Number(b.readBigUInt64LE(off));
