// The tar wrapper of overlaybd layer blobs (docs/formats.md, `overlaybd-commit -t` /
// `overlaybd-zfile -t`): a PAX header `overlaybd.pax` carrying `size=<n>`, a ustar header
// `overlaybd.commit` (mode 0644, root, mtime 0, size field 0), the payload, zero padding to 512 and
// two zero blocks. Byte-identical to the upstream tools' output, so plain OCI tools accept the blob
// and its digest is also its diff_id.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';

const BLOCK = 512;

function octal(n: number, width: number): string {
  return n.toString(8).padStart(width, ' ');
}

/** One ustar header block (fields not given stay empty). */
export function tarHeader(fields: { name: string; mode?: number; ids?: boolean; size: number; mtime?: number; type: string; owner?: string }): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(fields.name, 0, 100, 'utf8');
  if (fields.mode !== undefined) h.write(`${octal(fields.mode, 6)} \0`, 100, 'latin1');
  if (fields.ids) {
    h.write(`${octal(0, 6)} \0`, 108, 'latin1');
    h.write(`${octal(0, 6)} \0`, 116, 'latin1');
  }
  h.write(`${octal(fields.size, 11)} `, 124, 'latin1');
  if (fields.mtime !== undefined) h.write(`${octal(fields.mtime, 11)} `, 136, 'latin1');
  h.write(fields.type, 156, 'latin1');
  h.write('ustar\0' + '00', 257, 'latin1');
  if (fields.owner) {
    h.write(fields.owner, 265, 'latin1');
    h.write(fields.owner, 297, 'latin1');
  }
  h.fill(' ', 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${octal(sum, 6)} \0`, 148, 'latin1');
  return h;
}

/** The bytes that precede the payload (PAX header, PAX record block, member header). */
export function tarWrapPrefix(payloadSize: number): Buffer {
  // A PAX record is "<len> size=<n>\n" where <len> counts its own digits too.
  const body = ` size=${payloadSize}\n`;
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len++;
  const rec = `${len}${body}`;
  const data = Buffer.alloc(BLOCK);
  data.write(rec, 0, 'latin1');
  const pax = tarHeader({ name: 'overlaybd.pax', size: rec.length, type: 'x' });
  const member = tarHeader({ name: 'overlaybd.commit', mode: 0o100644, ids: true, size: 0, mtime: 0, type: '0', owner: 'root' });
  return Buffer.concat([pax, data, member]);
}

/** Bytes after the payload: padding to a 512 boundary and the two zero end blocks. */
export function tarWrapSuffix(payloadSize: number): Buffer {
  const pad = (BLOCK - (payloadSize % BLOCK)) % BLOCK;
  return Buffer.alloc(pad + 2 * BLOCK);
}

/** Writes `output` = tar wrapper around the file `input`; returns its size and sha256 digest (one pass). */
export async function tarWrapFile(input: string, output: string): Promise<{ size: number; digest: string }> {
  const size = fs.statSync(input).size;
  const hash = crypto.createHash('sha256');
  const out = fs.createWriteStream(output);
  const put = (b: Buffer) => {
    hash.update(b);
    return out.write(b);
  };
  put(tarWrapPrefix(size));
  await pipeline(fs.createReadStream(input, { highWaterMark: 1 << 20 }), new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      cb(null, chunk);
    },
  }), out, { end: false });
  const suffix = tarWrapSuffix(size);
  hash.update(suffix);
  await new Promise<void>((resolve, reject) => out.end(suffix, (err?: Error | null) => (err ? reject(err) : resolve())));
  return { size: fs.statSync(output).size, digest: `sha256:${hash.digest('hex')}` };
}
