// Child process for the crash-safety test: fills a block cache from a local source file as fast
// as it can (many concurrent reads in random order) until it is killed with SIGKILL.
// argv: cacheDir sourcePath digest unitSize
import fs from 'node:fs';
import { createRemoteFetcher, openBlockCache, openRemoteFile } from '../../src/addon';

const [cacheDir, sourcePath, digest, unitSize] = process.argv.slice(2);
const source = fs.readFileSync(sourcePath);
const cache = openBlockCache({ dir: cacheDir, capacityBytes: source.length * 2, unitSize: Number(unitSize) });
const fetcher = createRemoteFetcher(async (_d, off, len) => source.subarray(off, off + len));
const file = openRemoteFile({ digest, size: source.length, cache, fetcher, readAheadUnits: 0, maxFetchUnits: 4 });

async function worker(seed: number): Promise<void> {
  let x = seed;
  for (;;) {
    x = (x * 1103515245 + 12345) % 2147483648;
    const off = x % source.length;
    await file.read(off, 100_000);
  }
}
process.stdout.write('filling\n');
for (let i = 0; i < 8; i++) void worker(i + 1);
