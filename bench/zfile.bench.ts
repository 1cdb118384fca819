// ZFile decompression throughput: our reader (through the ReadableFile interface, 4 MiB reads,
// output to /dev/null) vs the `lz4 -d` / `zstd -d` command-line tools decompressing the same data
// compressed with the same settings (lz4 default acceleration, zstd level 3). Both single-threaded.
// Input: ~200 MiB of mixed text / zeros / random / patterned runs. Median of 3 runs each.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { zfileCompress, zfileDecompress, ZFileAlgorithm } from '../src/addon';
import { mixedData } from '../test/formats/zfile-support';
import { BenchRow, printTable } from './table';

const SIZE = 200 << 20;
const RUNS = 3;
const MiB = 1 << 20;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function timeAsync(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e9;
}

function runTool(cmd: string, args: string[]): number {
  const devnull = fs.openSync('/dev/null', 'w');
  try {
    const t = process.hrtime.bigint();
    const r = spawnSync(cmd, args, { stdio: ['ignore', devnull, 'pipe'] });
    const secs = Number(process.hrtime.bigint() - t) / 1e9;
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
    return secs;
  } finally {
    fs.closeSync(devnull);
  }
}

function hasTool(cmd: string): boolean {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'obd-zfile-bench-'));
  try {
    const input = path.join(dir, 'input');
    fs.writeFileSync(input, mixedData(SIZE, 12345));
    const mbps = (secs: number) => SIZE / MiB / secs;

    const speed: BenchRow[] = [];
    const sizes: BenchRow[] = [];
    const tools: Record<ZFileAlgorithm, { cmd: string; compress: (i: string, o: string) => string[]; ext: string }> = {
      lz4: { cmd: 'lz4', compress: (i, o) => ['-q', '-f', '-1', i, o], ext: 'lz4' },
      zstd: { cmd: 'zstd', compress: (i, o) => ['-q', '-f', '-3', '--single-thread', i, '-o', o], ext: 'zst' },
    };
    for (const algorithm of ['lz4', 'zstd'] as const) {
      const tool = tools[algorithm];
      if (!hasTool(tool.cmd)) {
        console.log(`(${tool.cmd} not installed: skipping the ${algorithm} baseline)`);
        continue;
      }
      const toolFile = path.join(dir, `input.${tool.ext}`);
      runTool(tool.cmd, tool.compress(input, toolFile));
      const toolSecs = median(Array.from({ length: RUNS }, () => runTool(tool.cmd, ['-d', '-q', '-c', toolFile])));
      const toolSize = fs.statSync(toolFile).size;
      sizes.push({ name: `${tool.cmd} CLI (frame format)`, value: (100 * toolSize) / SIZE, unit: '% of input' });

      for (const blockSize of [4096, 65536]) {
        const z = path.join(dir, `input.${algorithm}.${blockSize}.zfile`);
        const compressSecs = await timeAsync(() => zfileCompress(input, z, { algorithm, blockSize }));
        sizes.push({
          name: `zfile ${algorithm} ${blockSize / 1024}k (compress ${mbps(compressSecs).toFixed(0)} MiB/s)`,
          value: (100 * fs.statSync(z).size) / SIZE,
          unit: '% of input',
          baseline: (100 * toolSize) / SIZE,
        });
        for (const verify of [true, false]) {
          const secs: number[] = [];
          for (let i = 0; i < RUNS; i++) secs.push(await timeAsync(() => zfileDecompress(z, '/dev/null', verify)));
          speed.push({
            name: `zfile ${algorithm} ${blockSize / 1024}k ${verify ? 'crc on ' : 'crc off'} vs ${tool.cmd} -d`,
            value: mbps(median(secs)),
            unit: 'MiB/s',
            baseline: mbps(toolSecs),
          });
        }
        fs.rmSync(z);
      }
      fs.rmSync(toolFile);
    }
    printTable(`ZFile decompression throughput (${SIZE / MiB} MiB mixed data, median of ${RUNS}; ratio > 1 = faster than the CLI)`, speed);
    printTable('Compressed size (ratio = zfile size / CLI size)', sizes);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
