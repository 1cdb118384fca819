// obdconv throughput: conversion of a ~500 MiB image (3 gzip layers: ~20k small files, a few large
// files, a rewrite layer with whiteouts) from the private registry into another repository of it,
// vs "pull + unpack" of the same image measured in the same run, two ways: `ctr images pull` by a
// private containerd with the overlayfs snapshotter, and every layer blob streamed over HTTP,
// gunzipped and extracted by GNU tar into its own directory in parallel (containerd's work without
// its overhead). Prints the ratios and MB/s per conversion stage.
// OBD_BENCH_CONVERT_MIB overrides the image size.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { TestContainerd } from '../test/helpers/containerd';
import { TestRegistry } from '../test/helpers/registry';
import { makeTempDir } from '../test/helpers/tmp';
import { buildImage, tarTree } from '../test/convert/images';
import { obdconv, pushLayout } from '../test/convert/support';
import { BenchRow, printTable } from './table';

const MiB = 1 << 20;
const TOTAL = Number(process.env.OBD_BENCH_CONVERT_MIB ?? 500) * MiB;

function fill(size: number, seed: number, textish: boolean): Buffer {
  const b = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  const words = ['lorem', 'ipsum', 'container', 'layer', 'block', 'overlay', 'ext4', '\n', 'snapshot', 'registry '];
  if (textish) {
    let o = 0;
    while (o < size) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      o += b.write(words[x % words.length] + ' ', o);
    }
    return b;
  }
  for (let i = 0; i + 4 <= size; i += 4) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    b.writeUInt32LE(i % 64 < 32 ? x : 0, i); // half random, half zero: compresses ~2:1 like binaries
  }
  return b;
}

function makeLayers(work: string): string[] {
  const l1 = path.join(work, 'l1');
  const smallBytes = Math.floor(TOTAL * 0.3);
  const n = Math.max(100, Math.floor(smallBytes / 6000));
  for (let i = 0; i < n; i++) {
    const p = path.join(l1, 'usr', 'share', `d${i % 200}`, `f${i}.txt`);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, fill(1000 + ((i * 7919) % 10000), i + 1, true));
  }
  const l2 = path.join(work, 'l2');
  fs.mkdirSync(path.join(l2, 'opt', 'big'), { recursive: true });
  const big = Math.floor(TOTAL * 0.6 / 4);
  for (let i = 0; i < 4; i++) fs.writeFileSync(path.join(l2, 'opt', 'big', `blob${i}.bin`), fill(big, 100 + i, false));
  const l3 = path.join(work, 'l3');
  fs.mkdirSync(path.join(l3, 'usr', 'share', 'd1'), { recursive: true });
  fs.writeFileSync(path.join(l3, 'usr', 'share', '.wh.d2'), '');
  fs.writeFileSync(path.join(l3, 'usr', 'share', 'd1', '.wh..wh..opq'), '');
  fs.mkdirSync(path.join(l3, 'var', 'lib'), { recursive: true });
  fs.writeFileSync(path.join(l3, 'var', 'lib', 'rewrite.bin'), fill(Math.floor(TOTAL * 0.1), 999, false));
  return [l1, l2, l3].map((d, i) => tarTree(d, path.join(work, `layer-${i + 1}.tar`)));
}

async function pullAndUnpack(reg: TestRegistry, repo: string, digests: string[], out: string): Promise<number> {
  const t = process.hrtime.bigint();
  await Promise.all(digests.map(async (d, i) => {
    const dir = path.join(out, `snap-${i}`);
    fs.mkdirSync(dir, { recursive: true });
    const url = `${reg.url}/v2/${repo}/blobs/${d}`;
    const sh = spawn('sh', ['-c', 'curl -sf "$1" | gzip -dc | tar -x --numeric-owner -p -C "$2"', 'sh', url, dir], { stdio: 'inherit' });
    await new Promise<void>((resolve, reject) => sh.on('close', (c) => (c === 0 ? resolve() : reject(new Error(`pull+unpack ${d}: ${c}`)))));
  }));
  execFileSync('sync');
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function main(): Promise<void> {
  const tmp = makeTempDir('obd-bench-conv-');
  const reg = new TestRegistry();
  try {
    await reg.start();
    const tars = makeLayers(tmp.join('stage'));
    const tarBytes = tars.reduce((s, t) => s + fs.statSync(t).size, 0);
    const img = buildImage(tmp.join('src'), tars, 'gzip');
    await pushLayout(reg, 'bench/app', 'v1', img);
    const blobBytes = img.layers.reduce((s, l) => s + l.size, 0);
    console.log(`image: ${tars.length} layers, ${(tarBytes / MiB).toFixed(0)} MiB of tar, ${(blobBytes / MiB).toFixed(0)} MiB gzip`);

    const base = await pullAndUnpack(reg, 'bench/app', img.layers.map((l) => l.digest), tmp.join('unpack'));
    fs.rmSync(tmp.join('unpack'), { recursive: true, force: true });
    let ctrPull: number | undefined;
    const ctd = new TestContainerd();
    try {
      await ctd.start();
      const tc = process.hrtime.bigint();
      await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'overlayfs', `${reg.host}/bench/app:v1`], { timeoutMs: 1_800_000 });
      execFileSync('sync');
      ctrPull = Number(process.hrtime.bigint() - tc) / 1e9;
    } catch (err) {
      console.log(`containerd baseline skipped: ${(err as Error).message.split('\n')[0]}`);
    } finally {
      await ctd.stop();
    }

    const t = process.hrtime.bigint();
    const r = await obdconv([`${reg.host}/bench/app:v1`, `${reg.host}/bench/app-obd:v1`, '--json', '--cache-dir', tmp.join('cache')], 1_800_000);
    const conv = Number(process.hrtime.bigint() - t) / 1e9;
    if (r.code !== 0) throw new Error(`obdconv failed: ${r.stderr}`);
    const s = JSON.parse(r.stdout) as { layers: { sourceBytes: number; lsmtBytes: number; size: number; ms: Record<string, number>;
      apply?: { bytes: number; entries: number } }[] };

    const rows: BenchRow[] = [{ name: 'obdconv vs curl|gzip|tar x3', value: conv, unit: 's', baseline: base }];
    if (ctrPull !== undefined) rows.unshift({ name: 'obdconv vs ctr images pull (overlayfs)', value: conv, unit: 's', baseline: ctrPull });
    const sum = (k: string) => s.layers.reduce((a, l) => a + (l.ms[k] ?? 0), 0) / 1000;
    const applied = s.layers.reduce((a, l) => a + (l.apply?.bytes ?? 0), 0);
    const lsmt = s.layers.reduce((a, l) => a + l.lsmtBytes, 0);
    const out = s.layers.reduce((a, l) => a + l.size, 0);
    printTable(`obdconv of a ${(tarBytes / MiB).toFixed(0)} MiB image (registry → registry) vs pull + unpack in the same run`, rows);
    const stage = (name: string, bytes: number, secs: number) =>
      console.log(`  ${name.padEnd(28)} ${secs.toFixed(2).padStart(7)} s  ${(bytes / MiB / Math.max(secs, 1e-9)).toFixed(1).padStart(8)} MB/s`);
    console.log('\nstages (summed over layers; download overlaps apply, compress+upload overlap the next apply):');
    stage('download (gzip blobs)', blobBytes, sum('download'));
    stage('apply (mkfs+mount+tar, file data)', applied, sum('apply'));
    stage('commit (sealed LSMT)', lsmt, sum('commit'));
    stage('compress+wrap (LSMT in)', lsmt, sum('compress'));
    stage('upload (overlaybd blobs)', out, sum('upload'));
    console.log(`  overlaybd blobs: ${(out / MiB).toFixed(1)} MiB (sealed LSMT ${(lsmt / MiB).toFixed(1)} MiB)`);
  } finally {
    await reg.stop();
    tmp.cleanup();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
