// The only TS file that loads the native addon; everything else imports its typed API from here.
import path from 'node:path';

// eslint-disable-next-line @typescript-eslint/no-var-requires
const native = require(path.join(__dirname, '..', '..', 'build', 'Release', 'obd_addon.node'));

export function addonVersion(): string {
  return native.version();
}

// ---- zfile ----
export type ZFileAlgorithm = 'lz4' | 'zstd';

export interface ZFileCompressOptions {
  algorithm?: ZFileAlgorithm; // default lz4
  blockSize?: number; // 4096..65536, power of two; default 4096
  verify?: boolean; // per-block crc32c; default true (as overlaybd's tools)
  overwriteHeader?: boolean; // `overlaybd-commit -z` style header (flags 0x1B); default false
}

export interface ZFileInfo {
  algorithm: ZFileAlgorithm;
  blockSize: number;
  verify: boolean;
  headerOverwritten: boolean;
  hasDigest: boolean;
  blockCount: number;
  originalSize: number;
  indexOffset: number;
}

/** Errors thrown by the addon: `code` is the errno name (EBADMSG for corrupt input, ENOENT, …). */
export interface AddonError extends Error {
  code: string;
  errno: number;
}

/** Raw CRC-32C register update (Castagnoli, no inversion) as ZFile uses it; `portable` forces the table path. */
export function crc32c(data: Buffer, seed = 0, portable = false): number {
  return native.crc32c(data, seed, portable);
}

/** Compresses a local file into a ZFile (removes the partial output on failure). */
export function zfileCompress(input: string, output: string, opts: ZFileCompressOptions = {}): Promise<void> {
  return native.zfileCompress(input, output, opts);
}

/** Decompresses a local ZFile; with verify, every block's crc32c is checked. */
export function zfileDecompress(input: string, output: string, verify = true): Promise<void> {
  return native.zfileDecompress(input, output, verify);
}

/** Validates a ZFile's header, trailer and jump table and returns what they say. Throws on bad input. */
export function zfileInspect(path: string): ZFileInfo {
  return native.zfileInspect(path);
}

/** True when the first 512 bytes carry both ZFile magics and the HEADER flag. */
export function looksLikeZFile(first: Buffer): boolean {
  return native.zfileLooksLike(first);
}

/** The decompressed bytes of a local ZFile, read by range (reads past the end return zeros). */
export interface ZFileReader {
  readonly size: number;
  read(offset: number, length: number): Promise<Buffer>;
}

export function openZFile(path: string, verifyBlocks = true): ZFileReader {
  return new native.ZFileReader(path, verifyBlocks);
}
// ---- end zfile ----
