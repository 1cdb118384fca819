// Random 4 KiB reads through a 10-layer stack vs a flat file holding the same bytes.
// Ten 256 MiB-virtual layers, each written with 2000 random extents of 4..256 KiB (newer layers
// overwrite parts of older ones; some discards), committed as plain LSMT and as lz4 ZFile.
// Every read is a synchronous call from JS on a warm page cache, so the ratio shows what the
// stack lookup costs on top of a pread: flat file pread (baseline) vs the stacks.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { commitLayer, createWritableLayer, LayerStack, openStack } from '../src/addon';
import { makeTempDir } from '../test/helpers/tmp';
import { prng } from '../test/formats/zfile-support';
import { BenchRow, printTable } from './table';

const MiB = 1 << 20;
const VSIZE = 256 * MiB;
const LAYERS = 10;
const EXTENTS = 2000;
const READS = 100_000;
const RUNS = 3;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Builds the layers once and commits each both as plain LSMT and as lz4 ZFile. */
function buildLayers(dir: ReturnType<typeof makeTempDir>, seed: number): { plain: string[]; zipped: string[] } {
  const rnd = prng(seed);
  const plain: string[] = [];
  const zipped: string[] = [];
  for (let l = 0; l < LAYERS; l++) {
    const data = dir.join(`l${l}.data`);
    const index = dir.join(`l${l}.index`);
    createWritableLayer(data, index, { vsize: VSIZE });
    const s = openStack({ lowers: [], upper: { data, index } });
    for (let e = 0; e < EXTENTS; e++) {
      const len = (1 + (rnd() % 64)) * 4096;
      const off = (rnd() % ((VSIZE - len) / 4096)) * 4096;
      if (rnd() % 10 === 0) s.discard(off, len);
      else s.write(off, crypto.randomBytes(len));
    }
    s.close();
    plain.push(dir.join(`l${l}.lsmt`));
    zipped.push(dir.join(`l${l}.zfile`));
    commitLayer(data, index, plain[l]);
    commitLayer(data, index, zipped[l], { zfile: { algorithm: 'lz4', blockSize: 4096 } });
    fs.rmSync(data);
    fs.rmSync(index);
  }
  return { plain, zipped };
}

function offsets(seed: number): number[] {
  const rnd = prng(seed);
  return Array.from({ length: READS }, () => (rnd() % (VSIZE / 4096)) * 4096);
}

function kiops(fn: (off: number) => void, offs: number[]): number {
  for (let i = 0; i < 2000; i++) fn(offs[i]); // warm up
  const t = process.hrtime.bigint();
  for (const o of offs) fn(o);
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  return offs.length / s / 1000;
}

function main(): void {
  const dir = makeTempDir('obd-bench-stack-');
  try {
    const { plain, zipped } = buildLayers(dir, 1);
    const flatPath = dir.join('flat.raw');
    const stack = openStack({ lowers: plain });
    stack.exportRaw(flatPath);
    const zstack: LayerStack = openStack({ lowers: zipped, verify: false });
    const fd = fs.openSync(flatPath, 'r');
    const buf = Buffer.alloc(4096);
    const offs = offsets(7);
    // content check: the stacks and the flat file agree on the offsets we read
    for (const o of offs.slice(0, 500)) {
      fs.readSync(fd, buf, 0, 4096, o);
      if (!stack.read(o, 4096).equals(buf) || !zstack.read(o, 4096).equals(buf)) throw new Error(`content differs at ${o}`);
    }
    const flat: number[] = [];
    const lsmt: number[] = [];
    const zf: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      flat.push(kiops((o) => fs.readSync(fd, buf, 0, 4096, o), offs));
      lsmt.push(kiops((o) => stack.readInto(o, buf), offs));
      zf.push(kiops((o) => zstack.readInto(o, buf), offs));
    }
    fs.closeSync(fd);
    const extents = stack.extents().length;
    stack.close();
    zstack.close();
    const base = median(flat);
    const rows: BenchRow[] = [
      { name: 'flat file pread 4K (baseline)', value: base, unit: 'kIOPS', baseline: base },
      { name: `10-layer LSMT stack (${extents} merged extents)`, value: median(lsmt), unit: 'kIOPS', baseline: base },
      { name: '10-layer lz4 ZFile stack (4K blocks, no crc)', value: median(zf), unit: 'kIOPS', baseline: base },
    ];
    printTable(`random 4 KiB reads, ${READS} per run, median of ${RUNS}, warm cache`, rows);
  } finally {
    dir.cleanup();
  }
}

main();
