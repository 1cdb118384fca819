// Snapshotter core benchmarks, each against containerd's built-in overlayfs snapshotter measured in
// the same run on the same private containerd:
//  1. Prepare+Commit per second building a 1000-deep chain through containerd's snapshot service
//     (obd via the proxy plugin vs overlayfs in-process), plus obd spoken to directly.
//  2. `ctr images pull` + unpack of a larger image (OBD_BENCH_IMAGE_MB, default 500) from a private
//     registry with --snapshotter obd vs --snapshotter overlayfs (best of OBD_BENCH_ROUNDS, default 2).
import fs from 'node:fs';
import { TestContainerd } from '../test/helpers/containerd';
import { largeImageSpec, pushOciLayout, writeOciLayout } from '../test/helpers/images';
import { TestRegistry } from '../test/helpers/registry';
import { SnapshotsClient, TestSnapshotter } from '../test/helpers/snapshotter';
import { makeTempDir } from '../test/helpers/tmp';
import { BenchRow, printTable } from './table';

const DEPTH = Number(process.env.OBD_BENCH_CHAIN_DEPTH ?? 1000);
const IMAGE_MB = Number(process.env.OBD_BENCH_IMAGE_MB ?? 500);
const ROUNDS = Number(process.env.OBD_BENCH_ROUNDS ?? 2);

async function chainRate(c: SnapshotsClient, prefix: string): Promise<number> {
  let parent = '';
  const root = { 'containerd.io/gc.root': new Date().toISOString() }; // else containerd's GC collects the chain
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < DEPTH; i++) {
    await c.prepare(`${prefix}-a${i}`, parent, root);
    await c.commit(`${prefix}-c${i}`, `${prefix}-a${i}`, root);
    parent = `${prefix}-c${i}`;
  }
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  // tear the chain down again (children first), outside the measurement
  for (let i = DEPTH - 1; i >= 0; i--) await c.remove(`${prefix}-c${i}`);
  return DEPTH / secs;
}

async function timedPull(ctd: TestContainerd, ref: string, snapshotter: string): Promise<number> {
  await ctd.ctr(['images', 'rm', '--sync', ref]).catch(() => undefined);
  const t0 = process.hrtime.bigint();
  await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', snapshotter, ref], { timeoutMs: 900_000 });
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  await ctd.ctr(['images', 'rm', '--sync', ref]);
  return secs;
}

async function main(): Promise<void> {
  const tmp = makeTempDir('obd-bench-sn-');
  const sn = new TestSnapshotter();
  const reg = new TestRegistry();
  let ctd: TestContainerd | undefined;
  try {
    await sn.start();
    ctd = new TestContainerd({ proxySnapshotters: { obd: sn.address } });
    await ctd.start();

    const viaCtdObd = new SnapshotsClient(ctd.address, 'obd', ctd.namespace);
    const viaCtdOverlay = new SnapshotsClient(ctd.address, 'overlayfs', ctd.namespace);
    const direct = new SnapshotsClient(sn.address);
    const overlayRate = await chainRate(viaCtdOverlay, 'ovl');
    const obdRate = await chainRate(viaCtdObd, 'obd');
    const directRate = await chainRate(direct, 'direct');
    for (const c of [viaCtdObd, viaCtdOverlay, direct]) c.close();
    const chainRows: BenchRow[] = [
      { name: `obd via containerd, ${DEPTH}-deep chain`, value: obdRate, unit: 'Prepare+Commit/s', baseline: overlayRate },
      { name: `obd direct gRPC, ${DEPTH}-deep chain`, value: directRate, unit: 'Prepare+Commit/s', baseline: overlayRate },
      { name: `overlayfs (containerd built-in)`, value: overlayRate, unit: 'Prepare+Commit/s' },
    ];
    printTable('snapshot chain: Prepare+Commit per second (baseline: containerd overlayfs)', chainRows);

    await reg.start();
    process.stdout.write(`building and pushing a ${IMAGE_MB} MiB image...\n`);
    const layout = writeOciLayout(tmp.join('oci'), 'big', largeImageSpec(IMAGE_MB, 5));
    const ref = await pushOciLayout(layout, reg.host, 'obd/bench-big');
    fs.rmSync(tmp.join('oci'), { recursive: true, force: true });
    let obdBest = Infinity;
    let ovlBest = Infinity;
    for (let r = 0; r < ROUNDS; r++) {
      ovlBest = Math.min(ovlBest, await timedPull(ctd, ref, 'overlayfs'));
      obdBest = Math.min(obdBest, await timedPull(ctd, ref, 'obd'));
    }
    printTable(`ctr images pull + unpack, ${IMAGE_MB} MiB in 6 layers (best of ${ROUNDS}; baseline: overlayfs)`, [
      { name: 'pull+unpack --snapshotter obd', value: obdBest, unit: 's', baseline: ovlBest },
      { name: 'pull+unpack --snapshotter overlayfs', value: ovlBest, unit: 's' },
    ]);
  } finally {
    await ctd?.stop();
    await sn.cleanup();
    await reg.stop();
    tmp.cleanup();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
