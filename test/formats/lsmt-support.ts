// Shared setup for the LSMT / layer-stack tests: fixtures, whole-disk hashing, zstd-wrapped fixtures.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { LayerStack, openStack, StackSpec } from '../../src/addon';
import { makeTempDir, TempDir } from '../helpers/tmp';

export { ext4_64, fixture, prng, sha256 } from './zfile-support';
import { fixture } from './zfile-support';

export const MiB = 1 << 20;
export const GiB = 1 << 30;

/** sha256 of the stack's virtual bytes [off, off+len), read in 16 MiB pieces. */
export function stackSha256(stack: LayerStack, off = 0, len = stack.size()): string {
  const h = crypto.createHash('sha256');
  const chunk = 16 * MiB;
  for (let pos = off; pos < off + len; pos += chunk) h.update(stack.read(pos, Math.min(chunk, off + len - pos)));
  return h.digest('hex');
}

/** Opens a stack, runs fn, closes it (also on failure). */
export function withStack<T>(spec: StackSpec, fn: (s: LayerStack) => T): T {
  const s = openStack(spec);
  try {
    return fn(s);
  } finally {
    s.close();
  }
}

export function fileSha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Decompresses a `*.zst` fixture into dir (fixtures keep mostly-zero files zstd-wrapped). */
export function unzstd(rel: string, dir: TempDir): string {
  const out = dir.join(path.basename(rel).replace(/\.zst$/, ''));
  if (!fs.existsSync(out)) execFileSync('zstd', ['-q', '-d', '-f', fixture(rel), '-o', out]);
  return out;
}

/** Copies fixture files into dir (writable layers are opened read-write). */
export function copyFixture(rel: string, dir: TempDir, name = path.basename(rel)): string {
  const out = dir.join(name);
  fs.copyFileSync(fixture(rel), out);
  fs.chmodSync(out, 0o644);
  return out;
}

export { makeTempDir };
