// A layer's diff_id is the sha256 of its decompressed tar. The config's diff_ids are what a pulled
// image is checked against, so obdconv checks them too: a layer whose tar does not match is refused
// rather than converted into an image that says something else than its source.
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { DigestMismatchError } from './errors';

const GZIP = Buffer.from([0x1f, 0x8b]);
const ZSTD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

function head(file: string): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    return b.subarray(0, fs.readSync(fd, b, 0, 4, 0));
  } finally {
    fs.closeSync(fd);
  }
}

/** zstd through the zstd tool (Node 20's zlib has no zstd); its stderr names a corrupt frame. */
function zstdDecompressed(file: string, hash: crypto.Hash): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn('zstd', ['-dcq', '--', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stdout.on('data', (b: Buffer) => hash.update(b));
    p.stderr.on('data', (b: Buffer) => (err += b.toString()));
    p.once('error', (e) => reject(new Error(`zstd: ${e.message}`)));
    p.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`zstd -d: ${err.trim() || `exit ${code}`}`))));
  });
}

/** sha256 of the decompressed content of a layer blob (gzip, zstd or plain tar, told by its magic). */
export async function diffIdOf(file: string): Promise<string> {
  const hash = crypto.createHash('sha256');
  const magic = head(file);
  const sink = async function* (src: AsyncIterable<Buffer>) {
    for await (const chunk of src) hash.update(chunk);
  };
  if (magic.subarray(0, 2).equals(GZIP)) await pipeline(fs.createReadStream(file), zlib.createGunzip(), sink);
  else if (magic.equals(ZSTD)) await zstdDecompressed(file, hash);
  else await pipeline(fs.createReadStream(file), sink);
  return `sha256:${hash.digest('hex')}`;
}

/** Refuses a layer whose decompressed tar is not the diff_id the image config names. */
export async function verifyDiffId(file: string, expected: string, what: string): Promise<void> {
  const got = await diffIdOf(file);
  if (got !== expected) throw new DigestMismatchError(`${what}: the decompressed tar is ${got}, but the image config's diff_id is ${expected}`);
}
