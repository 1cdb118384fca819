// Packs a TurboOCI meta blob: a gzip'd tar whose members carry only name, mode, size and type
// (so that a re-conversion gives the same bytes), returning the blob's digest and size and the
// sha256 of the uncompressed tar (its diff_id).
import crypto from 'node:crypto';
import fs from 'node:fs';
import { PassThrough, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { tarHeader } from './tar-wrap';

export interface MetaMember {
  name: string;
  file?: string; // absent: empty member
}

export interface MetaBlob {
  digest: string;
  size: number;
  diffId: string;
}

const BLOCK = 512;

export async function writeMetaBlob(members: MetaMember[], out: string): Promise<MetaBlob> {
  const tarHash = crypto.createHash('sha256');
  const blobHash = crypto.createHash('sha256');
  const tar = new PassThrough();
  const hashTar = new Transform({
    transform(chunk: Buffer, _e, cb) {
      tarHash.update(chunk);
      cb(null, chunk);
    },
  });
  const hashBlob = new Transform({
    transform(chunk: Buffer, _e, cb) {
      blobHash.update(chunk);
      cb(null, chunk);
    },
  });
  const done = pipeline(tar, hashTar, zlib.createGzip({ level: 6 }), hashBlob, fs.createWriteStream(out));
  const write = async (b: Buffer) => {
    if (!tar.write(b)) await new Promise<void>((r) => tar.once('drain', () => r()));
  };
  for (const m of members) {
    const size = m.file ? fs.statSync(m.file).size : 0;
    await write(tarHeader({ name: m.name, mode: 0o644, size, type: '0' }));
    if (m.file) {
      for await (const chunk of fs.createReadStream(m.file, { highWaterMark: 1 << 20 })) await write(chunk as Buffer);
      const pad = (BLOCK - (size % BLOCK)) % BLOCK;
      if (pad) await write(Buffer.alloc(pad));
    }
  }
  tar.end(Buffer.alloc(2 * BLOCK));
  await done;
  return { digest: `sha256:${blobHash.digest('hex')}`, size: fs.statSync(out).size, diffId: `sha256:${tarHash.digest('hex')}` };
}
