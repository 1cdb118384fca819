// `obd layer zfile` / `obd layer unzfile`: ZFile compression of single files (what overlaybd-zfile
// does), with the same defaults as the upstream tool: lz4, 4 KiB blocks, per-block checksums.
import fs from 'node:fs';
import path from 'node:path';
import { Command, InvalidArgumentError, Option } from 'commander';
import { zfileCompress, zfileDecompress, ZFileAlgorithm } from '../addon';

/** Parses `--bs`: `4k`..`64k` (also `4K`, `4KiB`), a bare number of KiB as upstream (`--bs 64`), or bytes (`65536`). */
export function parseBlockSize(text: string): number {
  const m = /^(\d+)\s*(k|kb|kib)?$/i.exec(text.trim());
  if (!m) throw new InvalidArgumentError(`expected 4k..64k, got '${text}'`);
  const n = Number(m[1]);
  const bytes = m[2] || n <= 64 ? n * 1024 : n;
  if (bytes < 4096 || bytes > 65536 || (bytes & (bytes - 1)) !== 0) {
    throw new InvalidArgumentError(`block size must be a power of two from 4k to 64k, got '${text}'`);
  }
  return bytes;
}

function refuseSameFile(input: string, output: string): void {
  const same =
    path.resolve(input) === path.resolve(output) ||
    (fs.existsSync(output) && fs.realpathSync(input) === fs.realpathSync(output));
  if (same) throw new Error(`${output}: output must not be the input file`);
}

function requireFile(input: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(input);
  } catch {
    throw new Error(`${input}: no such file`);
  }
  if (!st.isFile() && !st.isBlockDevice()) throw new Error(`${input}: not a regular file`);
}

export function registerZFileCommands(layer: Command): void {
  layer
    .command('zfile')
    .description('compress a file (usually a committed layer) into a ZFile')
    .argument('<in>', 'input file')
    .argument('<out>', 'output ZFile (overwritten)')
    .addOption(new Option('--algorithm <alg>', 'compression algorithm').choices(['lz4', 'zstd']).default('lz4'))
    .option('--bs <size>', 'uncompressed block size, 4k..64k', parseBlockSize, 4096)
    .option('--no-verify', 'do not store a crc32c after each block')
    .option('--overwrite-header', 'rewrite the header with the index fields, as `overlaybd-commit -z` does')
    .action(async (input: string, output: string, o: { algorithm: ZFileAlgorithm; bs: number; verify: boolean; overwriteHeader?: boolean }) => {
      requireFile(input);
      refuseSameFile(input, output);
      await zfileCompress(input, output, {
        algorithm: o.algorithm,
        blockSize: o.bs,
        verify: o.verify,
        overwriteHeader: o.overwriteHeader === true,
      });
    });

  layer
    .command('unzfile')
    .description('decompress a ZFile back into the original file')
    .argument('<in>', 'input ZFile')
    .argument('<out>', 'output file (overwritten)')
    .option('--no-verify', 'skip the per-block crc32c checks')
    .action(async (input: string, output: string, o: { verify: boolean }) => {
      requireFile(input);
      refuseSameFile(input, output);
      await zfileDecompress(input, output, o.verify);
    });
}
