// fuse-loop device vs a plain loop device on a local raw file holding the same bytes (baseline),
// measured in the same run with fio (direct I/O on the block device, page cache of the files warm):
// 4 KiB random read at QD1 and QD32, 1 MiB sequential read, 4 KiB random write into a writable
// stack; and the RSS of deviced with 1 and with 20 devices attached.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { Cleanup } from '../test/helpers/loop';
import { makeTempDir } from '../test/helpers/tmp';
import { startDeviced, writeImageConfig } from '../test/device/harness';
import { BenchRow, printTable } from './table';

const MiB = 1 << 20;
const IMAGE_MB = 256;
const RUNTIME_S = Number(process.env.OBD_BENCH_SECONDS ?? 5);

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
      `--runtime=${RUNTIME_S}`,
      '--time_based',
      '--randrepeat=0',
      '--norandommap',
      '--output-format=json',
    ],
    { encoding: 'utf8', maxBuffer: 64 * MiB },
  );
  const j = JSON.parse(out.slice(out.indexOf('{'))).jobs[0];
  const side = job.rw === 'randwrite' ? j.write : j.read;
  return { iops: side.iops, mibs: side.bw / 1024 };
}

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', maxBuffer: 16 * MiB }).trim();
}

async function main(): Promise<void> {
  const tmp = makeTempDir('obd-bench-device-');
  const cleanup = new Cleanup();
  try {
    const d = await startDeviced(tmp, cleanup);
    const obd = (...a: string[]) => {
      const r = d.obd(...a);
      if (r.status !== 0) throw new Error(`obd ${a.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };

    // The same bytes two ways: a raw file, and a committed LSMT layer written through the device.
    const raw = tmp.join('disk.raw');
    sh('dd', ['if=/dev/urandom', `of=${raw}`, 'bs=1M', `count=${IMAGE_MB}`, 'status=none']);
    obd('layer', 'create', '--vsize', `${IMAGE_MB}M`, tmp.join('w.data'), tmp.join('w.index'));
    const wcfg = writeImageConfig(tmp, 'w.json', { upper: { data: tmp.join('w.data'), index: tmp.join('w.index') } });
    const wdev = d.attach(wcfg, 'fill');
    sh('dd', [`if=${raw}`, `of=${wdev}`, 'bs=1M', 'oflag=direct', 'conv=fsync', 'status=none']);
    obd('device', 'detach', 'fill');
    obd('layer', 'commit', tmp.join('w.data'), tmp.join('w.index'), tmp.join('layer.lsmt'));

    const base = sh('losetup', ['-f', '--show', '-r', raw]);
    cleanup.add(`detach ${base}`, () => void spawnSync('losetup', ['-d', base]));
    const ro = d.attach(writeImageConfig(tmp, 'ro.json', { lowers: [{ file: tmp.join('layer.lsmt') }] }), 'ro');
    for (const dev of [base, ro]) sh('dd', [`if=${dev}`, 'of=/dev/null', 'bs=1M', 'iflag=direct', 'status=none']); // warm
    const same = sh('cmp', [base, ro]) === '';
    if (!same) throw new Error('device and baseline differ');

    const rows: BenchRow[] = [];
    const reads: Array<[string, FioJob, 'iops' | 'mibs']> = [
      ['4k randread QD1', { rw: 'randread', bs: '4k', iodepth: 1 }, 'iops'],
      ['4k randread QD32', { rw: 'randread', bs: '4k', iodepth: 32 }, 'iops'],
      ['1M seq read QD8', { rw: 'read', bs: '1M', iodepth: 8 }, 'mibs'],
    ];
    for (const [name, job, unit] of reads) {
      const b = fio(base, job)[unit];
      const v = fio(ro, job)[unit];
      rows.push({ name, value: v, baseline: b, unit: unit === 'iops' ? 'IOPS' : 'MiB/s' });
    }

    // Writes: a writable stack over the layer vs a loop device on a copy of the raw file.
    const rawCopy = tmp.join('disk-copy.raw');
    sh('cp', ['--sparse=never', raw, rawCopy]);
    const baseRw = sh('losetup', ['-f', '--show', rawCopy]);
    cleanup.add(`detach ${baseRw}`, () => void spawnSync('losetup', ['-d', baseRw]));
    obd('layer', 'create', '--vsize', `${IMAGE_MB}M`, tmp.join('u.data'), tmp.join('u.index'));
    const rw = d.attach(
      writeImageConfig(tmp, 'rw.json', { lowers: [{ file: tmp.join('layer.lsmt') }], upper: { data: tmp.join('u.data'), index: tmp.join('u.index') } }),
      'rw',
    );
    for (const qd of [1, 32]) {
      const job: FioJob = { rw: 'randwrite', bs: '4k', iodepth: qd };
      const b = fio(baseRw, job).iops;
      const v = fio(rw, job).iops;
      rows.push({ name: `4k randwrite QD${qd}`, value: v, baseline: b, unit: 'IOPS' });
    }
    obd('device', 'detach', 'rw');

    // Memory: one device, then twenty (the same layer, attached under different ids).
    const pid = d.pid();
    const rss1 = rssMiB(pid);
    for (let i = 1; i < 20; i++) {
      const dev = d.attach(writeImageConfig(tmp, `m${i}.json`, { lowers: [{ file: tmp.join('layer.lsmt') }] }), `m${i}`);
      sh('dd', [`if=${dev}`, 'of=/dev/null', 'bs=1M', 'count=16', 'iflag=direct', 'status=none']);
    }
    const rss20 = rssMiB(pid);
    rows.push({ name: 'deviced RSS, 1 device', value: rss1, unit: 'MiB' });
    rows.push({ name: 'deviced RSS, 20 devices', value: rss20, baseline: rss1, unit: 'MiB' });
    const stats = JSON.parse(obd('device', 'stats', '--json', 'ro'))[0];
    printTable(`device: fuse-loop (${IMAGE_MB} MiB LSMT layer) vs loop on a raw file; ratio = fuse-loop / baseline`, rows);
    console.log(`ro device: ${stats.readOps} reads, ${stats.coalescedReads} coalesced, ${stats.errors} errors; loop direct I/O ${JSON.parse(obd('device', 'ls', '--json'))[0].directIo}`);
    for (let i = 1; i < 20; i++) obd('device', 'detach', `m${i}`);
    obd('device', 'detach', 'ro');
    await d.stop();
  } finally {
    cleanup.run();
    tmp.cleanup();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
