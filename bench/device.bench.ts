// fuse-loop devices vs a buffered loop device on a local raw file holding the same bytes (baseline),
// measured in the same run with fio (direct I/O on the block devices, page cache of the files warm):
// 4 KiB random read at QD1 and QD32, 1 MiB sequential read at QD8, and 4 KiB random write at QD32
// into a writable upper over the stack (baseline: the loop device on a copy of the raw file).
// Stacks: 1 layer and 10 layers, each as plain LSMT and as lz4 ZFile. Also the deviced CPU time
// (all threads) per 100k 4 KiB reads at QD32 and per 100k 4 KiB writes, and deviced's RSS with 1
// and 20 devices attached.
//
// Every stack runs once per FUSE path: /dev/fuse read/write and FUSE over io_uring (the fuse
// module's enable_uring is switched on for that part and restored afterwards).
//
// OBD_BENCH_SECONDS sets the fio runtime per case and side (default 4), split over OBD_BENCH_ROUNDS
// rounds (default 15); OBD_BENCH_STACKS picks stacks by name ("1-lsmt,10-lz4", default all);
// OBD_BENCH_FUSE_PATHS picks paths ("/dev/fuse,io_uring"); OBD_BENCH_DEVICE_CACHE sets deviced's
// deviceCache ("page", "direct"; default: the config's default). Each table names the cache mode its
// devices ran in.
//
// Comparable across runs:
// - Each round runs the baseline and obd back to back (which goes first alternates), and the ratio
//   printed is the median of the per-round ratios, with their lowest and highest: a shared machine's
//   load comes and goes within seconds, and a pair sees the same moment of it.
// - Both sides are warmed the same way: the baseline's files are written back and dropped from the
//   page cache; then obd's devices and the baseline's read-only one are read once through their loop
//   devices. How a file's page cache was filled decides its folio sizes (a file written in small
//   extents keeps small folios, a sequential read leaves large ones), and folio size alone moves warm
//   reads by 20%. The baseline's writable copy is left cold (see baselineFor).
// - fio runs with the same options on both sides and drops nothing between rounds (--invalidate=0).
import crypto from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { commitLayer, createWritableLayer, openStack } from '../src/addon';
import { Cleanup } from '../test/helpers/loop';
import { makeTempDir, TempDir } from '../test/helpers/tmp';
import { Deviced, enableFuseIoUring, startDeviced, writeImageConfig } from '../test/device/harness';
import { prng } from '../test/formats/zfile-support';
import { BenchRow, printTable } from './table';

const MiB = 1 << 20;
const VSIZE = 256 * MiB;
const RUNTIME_S = Number(process.env.OBD_BENCH_SECONDS ?? 4);
// Rounds per case (RUNTIME_S split between them); each is one baseline run and one obd run. Many
// short pairs beat a few long ones: the median of 15 pairs of 1/3 s moved by 0.09 between repeats
// (QD1, the noisiest case), that of 5 pairs of 1 s by 0.18. Each fio run costs ~0.1 s to start, so
// the default runtime is 4 s: the whole bench takes as long as with 5 pairs of 1 s.
const ROUNDS = Math.max(1, Number(process.env.OBD_BENCH_ROUNDS ?? 15));
const ROUND_MS = Math.max(250, Math.round((RUNTIME_S * 1000) / ROUNDS));
const UPPER_LAYERS = 9; // on top of the full base layer: a 10-layer stack
const EXTENTS_PER_LAYER = 1500;

interface FioJob {
  rw: 'randread' | 'read' | 'randwrite';
  bs: string;
  iodepth: number;
}

/** Runs one fio job against a block device; returns IOPS and MiB/s. */
function fio(dev: string, job: FioJob): { iops: number; mibs: number } {
  const out = execFileSync(
    'fio',
    [
      '--name=bench',
      `--filename=${dev}`,
      '--direct=1',
      '--ioengine=libaio',
      `--rw=${job.rw}`,
      `--bs=${job.bs}`,
      `--iodepth=${job.iodepth}`,
      `--runtime=${ROUND_MS}ms`,
      '--time_based',
      '--randrepeat=0',
      '--norandommap',
      '--invalidate=0',
      '--output-format=json',
    ],
    { encoding: 'utf8', maxBuffer: 64 * MiB },
  );
  const j = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const side = job.rw === 'randwrite' ? j.write : j.read;
  return { iops: side.iops, mibs: side.bw / 1024 };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** CPU time of every thread of a process so far, in ns (schedstat: precise, unlike clock ticks). */
function cpuNs(pid: number): number {
  let sum = 0;
  for (const t of fs.readdirSync(`/proc/${pid}/task`)) {
    try {
      sum += Number(fs.readFileSync(`/proc/${pid}/task/${t}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // the thread ended meanwhile
    }
  }
  return sum;
}

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 16 * MiB }).trim();
}

/** Half random, half constant per 4 KiB: compresses like real data, so lz4 has work to do. */
function blockData(len: number): Buffer {
  const b = Buffer.alloc(len, 0x5a);
  for (let o = 0; o < len; o += 4096) crypto.randomFillSync(b, o, 2048);
  return b;
}

interface Layers {
  plain: string[];
  lz4: string[];
}

/** A full base layer plus UPPER_LAYERS layers of scattered 4..128 KiB extents (some discards). */
function buildLayers(dir: TempDir): Layers {
  const rnd = prng(11);
  const out: Layers = { plain: [], lz4: [] };
  for (let l = 0; l <= UPPER_LAYERS; l++) {
    const data = dir.join(`l${l}.data`);
    const index = dir.join(`l${l}.index`);
    createWritableLayer(data, index, { vsize: VSIZE });
    const s = openStack({ lowers: [], upper: { data, index } });
    if (l === 0) {
      for (let off = 0; off < VSIZE; off += MiB) s.write(off, blockData(MiB));
    } else {
      for (let e = 0; e < EXTENTS_PER_LAYER; e++) {
        const len = (1 + (rnd() % 32)) * 4096;
        const off = (rnd() % ((VSIZE - len) / 4096)) * 4096;
        if (rnd() % 10 === 0) s.discard(off, len);
        else s.write(off, blockData(len));
      }
    }
    s.close();
    out.plain.push(dir.join(`l${l}.lsmt`));
    out.lz4.push(dir.join(`l${l}.zfile`));
    commitLayer(data, index, out.plain[l]);
    commitLayer(data, index, out.lz4[l], { zfile: { algorithm: 'lz4' } });
    fs.rmSync(data);
    fs.rmSync(index);
  }
  return out;
}

interface Baseline {
  ro: string; // loop device, read-only, on the raw export
  rw: string; // loop device on a copy of it
}

/** Writes a file's dirty pages back and drops its page cache. */
function dropPageCache(file: string): void {
  sh('sync', [file]);
  sh('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none']);
}

/** Reads a whole block device once with direct I/O: its loop device fills the backing file's page cache. */
function warm(dev: string): void {
  sh('dd', [`if=${dev}`, 'of=/dev/null', 'bs=1M', 'iflag=direct', 'status=none']);
}

function baselineFor(dir: TempDir, name: string, lowers: string[], cleanup: Cleanup): Baseline {
  const raw = dir.join(`${name}.raw`);
  const st = openStack({ lowers });
  st.exportRaw(raw);
  st.close();
  const copy = dir.join(`${name}-copy.raw`);
  sh('cp', ['--sparse=never', raw, copy]);
  const ro = sh('losetup', ['-f', '--show', '-r', raw]);
  cleanup.add(`detach ${ro}`, () => void spawnSync('losetup', ['-d', ro]));
  const rw = sh('losetup', ['-f', '--show', copy]);
  cleanup.add(`detach ${rw}`, () => void spawnSync('losetup', ['-d', rw]));
  // The export and the copy were written in extents of every size; their folios would be those sizes.
  for (const f of [raw, copy]) dropPageCache(f);
  warm(ro);
  // The copy stays out of the page cache: the 4 KiB writes then make 4 KiB folios, as they do in obd's
  // FUSE file. Read first, it would hold 2 MiB folios, and the kernel counts a folio dirty as a
  // whole: every 4 KiB write would count as 2 MiB, and the dirty limits would throttle the baseline
  // (5x slower, measured).
  return { ro, rw };
}

const CASES: Array<[string, FioJob, 'iops' | 'mibs']> = [
  ['4k randread QD1', { rw: 'randread', bs: '4k', iodepth: 1 }, 'iops'],
  ['4k randread QD32', { rw: 'randread', bs: '4k', iodepth: 32 }, 'iops'],
  ['1M seq read QD8', { rw: 'read', bs: '1M', iodepth: 8 }, 'mibs'],
  ['4k randwrite QD32', { rw: 'randwrite', bs: '4k', iodepth: 32 }, 'iops'],
];

interface Stack {
  name: string;
  lowers: string[];
  content: string;
}

/** The four cases on every stack, on one deviced (one FUSE path). */
async function runStacks(d: Deviced, tmp: TempDir, stacks: Stack[], baselines: Map<string, Baseline>, pathTag: string): Promise<void> {
  const pid = d.pid();
  const obd = (...a: string[]) => {
    const r = d.obd(...a);
    if (r.status !== 0) throw new Error(`obd ${a.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  for (const s of stacks) {
    const base = baselines.get(s.content)!;
    const lowers = s.lowers.map((file) => ({ file }));
    const ro = d.attach(writeImageConfig(tmp, `${s.name}-ro.json`, { lowers }), `${s.name}-ro`);
    const info = JSON.parse(obd('device', 'ls', '--json')).find((x: { id: string }) => x.id === `${s.name}-ro`) ?? {};
    const fusePath: string = info.fusePath ?? '?';
    const cache: string = info.cache ?? '?';
    // Warm: the layer files, and a page-cached device's own cache (as the baseline's raw files are).
    warm(ro);
    if (sh('cmp', [base.ro, ro]) !== '') throw new Error(`${s.name}: device and baseline differ`);
    // One fresh upper per stack and FUSE path: the random writes of an earlier run stay out of it.
    const upperData = tmp.join(`${s.name}-${pathTag}-u.data`);
    const upperIndex = tmp.join(`${s.name}-${pathTag}-u.index`);
    obd('layer', 'create', '--vsize', `${VSIZE / MiB}M`, upperData, upperIndex);
    const rw = d.attach(writeImageConfig(tmp, `${s.name}-rw.json`, { lowers, upper: { data: upperData, index: upperIndex } }), `${s.name}-rw`);
    warm(rw);

    const rows: BenchRow[] = [];
    for (const [name, job, unit] of CASES) {
      const write = job.rw === 'randwrite';
      const baselines: number[] = [];
      const values: number[] = [];
      const ratios: number[] = [];
      let cpu = 0;
      let ops = 0;
      for (let i = 0; i < ROUNDS; i++) {
        const runBaseline = () => fio(write ? base.rw : base.ro, job)[unit];
        const runObd = () => {
          const cpu0 = cpuNs(pid);
          const r = fio(write ? rw : ro, job);
          cpu += cpuNs(pid) - cpu0;
          ops += (r.iops * ROUND_MS) / 1000;
          return r[unit];
        };
        // Whoever runs second meets a machine the first has just warmed (CPU caches, frequency):
        // alternating the order cancels that out over the rounds.
        let b: number;
        let v: number;
        if (i % 2 === 0) {
          b = runBaseline();
          v = runObd();
        } else {
          v = runObd();
          b = runBaseline();
        }
        baselines.push(b);
        values.push(v);
        ratios.push(v / b);
      }
      rows.push({
        name,
        value: median(values),
        baseline: median(baselines),
        unit: unit === 'iops' ? 'IOPS' : 'MiB/s',
        ratio: median(ratios),
        spread: [Math.min(...ratios), Math.max(...ratios)],
      });
      // CPU time per request is what a lever changes most directly, and a shared machine's noise
      // moves it far less than it moves throughput.
      if (name === '4k randread QD32' || write)
        rows.push({ name: `deviced CPU per 100k 4k ${write ? 'writes' : 'reads'}`, value: (cpu / 1e6) * (100_000 / ops), unit: 'ms' });
    }
    printTable(`${s.name}: ${s.lowers.length}-layer ${s.name.endsWith('lz4') ? 'lz4 ZFile' : 'LSMT'} stack, fuse path ${fusePath}, cache ${cache}; ratio = obd / loop on a raw file`, rows);
    obd('device', 'detach', `${s.name}-rw`);
    obd('device', 'detach', `${s.name}-ro`);
  }

}

async function main(): Promise<void> {
  const tmp = makeTempDir('obd-bench-device-');
  const cleanup = new Cleanup();
  try {
    const layers = buildLayers(tmp);
    const stacks = [
      { name: '1-lsmt', lowers: layers.plain.slice(0, 1), content: '1' },
      { name: '10-lsmt', lowers: layers.plain, content: '10' },
      { name: '1-lz4', lowers: layers.lz4.slice(0, 1), content: '1' },
      { name: '10-lz4', lowers: layers.lz4, content: '10' },
    ].filter((s) => !process.env.OBD_BENCH_STACKS || process.env.OBD_BENCH_STACKS.split(',').includes(s.name));
    const baselines = new Map<string, Baseline>();
    for (const s of stacks) {
      if (!baselines.has(s.content)) baselines.set(s.content, baselineFor(tmp, `c${s.content}`, s.lowers, cleanup));
    }
    const paths = (process.env.OBD_BENCH_FUSE_PATHS ?? '/dev/fuse,io_uring').split(',');
    let d: Deviced | undefined;
    for (const wanted of paths) {
      if (wanted === 'io_uring') enableFuseIoUring(cleanup);
      const cache = process.env.OBD_BENCH_DEVICE_CACHE ? { deviceCache: process.env.OBD_BENCH_DEVICE_CACHE } : {};
      d = await startDeviced(tmp, cleanup, { fuseIoUring: wanted === 'io_uring', ...cache });
      await runStacks(d, tmp, stacks, baselines, wanted === 'io_uring' ? 'uring' : 'dev');
      if (wanted !== paths[paths.length - 1]) await d.stop();
    }
    const last = d!;
    const obd = (...a: string[]) => {
      const r = last.obd(...a);
      if (r.status !== 0) throw new Error(`obd ${a.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const pid = last.pid();
    // Memory (on the last FUSE path): one device, then twenty (the same layer, attached under different ids).
    const first = layers.plain.slice(0, 1).map((file) => ({ file }));
    last.attach(writeImageConfig(tmp, 'm0.json', { lowers: first }), 'm0');
    const rss1 = rssMiB(pid);
    for (let i = 1; i < 20; i++) {
      const dev = last.attach(writeImageConfig(tmp, `m${i}.json`, { lowers: first }), `m${i}`);
      sh('dd', [`if=${dev}`, 'of=/dev/null', 'bs=1M', 'count=16', 'iflag=direct', 'status=none']);
    }
    const rss20 = rssMiB(pid);
    printTable('deviced memory', [
      { name: 'deviced RSS, 1 device', value: rss1, unit: 'MiB' },
      { name: 'deviced RSS, 20 devices', value: rss20, baseline: rss1, unit: 'MiB' },
    ]);
    const stats = JSON.parse(obd('device', 'stats', '--json', 'm0'))[0];
    console.log(`m0: ${stats.readOps} reads, ${stats.coalescedReads} coalesced, ${stats.errors} errors; loop direct I/O ${JSON.parse(obd('device', 'ls', '--json'))[0].directIo}, cache ${JSON.parse(obd('device', 'ls', '--json'))[0].cache}`);
    for (let i = 0; i < 20; i++) obd('device', 'detach', `m${i}`);
    await last.stop();
  } finally {
    cleanup.run();
    tmp.cleanup();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
