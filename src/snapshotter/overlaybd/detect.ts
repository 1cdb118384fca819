// Is a blob an overlaybd layer? By its first bytes, as overlaybd's own open path decides
// (docs/formats.md): an optional ustar wrapper (payload at 512, or 1536 after a PAX header),
// then ZFile or LSMT magic. For a remote blob this costs one range read of 2 KiB.
const LSMT_MAGIC0 = Buffer.from([0x4c, 0x53, 0x4d, 0x54, 0x00, 0x01, 0x02, 0x00]);
const ZFILE_MAGIC0 = Buffer.from([0x5a, 0x46, 0x69, 0x6c, 0x65, 0x00, 0x01, 0x00]);

/** Bytes a caller must read from the start of a blob for looksLikeOverlaybd to decide. */
export const DETECT_BYTES = 2048;

function magicAt(b: Buffer, off: number): boolean {
  if (b.length < off + 8) return false;
  const m = b.subarray(off, off + 8);
  return m.equals(LSMT_MAGIC0) || m.equals(ZFILE_MAGIC0);
}

function isUstar(b: Buffer, off: number): boolean {
  return b.length >= off + 512 && b.toString('latin1', off + 257, off + 263) === 'ustar\0';
}

export function looksLikeOverlaybd(head: Buffer): boolean {
  if (magicAt(head, 0)) return true;
  if (!isUstar(head, 0)) return false;
  if (head[156] === 0x78 /* 'x': PAX header, one data block, then the real header */) return magicAt(head, 1536);
  return magicAt(head, 512);
}
