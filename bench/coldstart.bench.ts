// Cold start to the workload's READY line: full pull + unpack + run with containerd's overlayfs
// snapshotter (baseline) vs obd rpull + lazy run, without and with trace prefetch; an image of about
// 500 MiB with a 16 MiB working set, the registry behind a throttling proxy (this kernel has no
// netem): 25 MB/s, 20 ms. Also bytes fetched / bytes read. Sizes: OBD_BENCH_IMAGE_MIB, _WS_MIB.
import { human, runColdStart } from './coldstart';
import { printTable } from './table';

async function main(): Promise<void> {
  const imageMiB = Number(process.env.OBD_BENCH_IMAGE_MIB ?? 500);
  const workingSetMiB = Number(process.env.OBD_BENCH_WS_MIB ?? 16);
  const rateMBps = Number(process.env.OBD_BENCH_RATE_MBPS ?? 25);
  const latencyMs = Number(process.env.OBD_BENCH_LATENCY_MS ?? 20);
  const r = await runColdStart({ imageMiB, workingSetMiB, rateMBps, latencyMs, prefetch: true, log: (l) => console.log(`# ${l}`) });
  for (const [name, out] of [['baseline', r.baseline.output], ['lazy', r.lazy.output], ['prefetch', r.prefetch?.output ?? '']])
    if (!out.includes('READY')) throw new Error(`${name}: the workload did not print READY: ${JSON.stringify(out)}`);
  printTable(`cold start, ${human(r.imageBytes)} image, ${workingSetMiB} MiB working set, ${rateMBps} MB/s + ${latencyMs} ms link`, [
    { name: 'pull+unpack+run (overlayfs)', value: r.baseline.seconds, unit: 's' },
    { name: 'rpull+run (obd, lazy)', value: r.lazy.seconds, unit: 's', baseline: r.baseline.seconds },
    { name: 'rpull+run (obd, prefetch)', value: r.prefetch!.seconds, unit: 's', baseline: r.baseline.seconds },
  ]);
  printTable('bytes', [
    { name: 'fetched (lazy) MiB', value: r.lazy.fetchedBytes / 2 ** 20, unit: 'MiB', baseline: r.imageBytes / 2 ** 20 },
    { name: 'fetched / read by the device', value: r.lazy.fetchedBytes / 2 ** 20, unit: 'MiB', baseline: r.lazy.deviceReadBytes / 2 ** 20 },
    { name: 'fetched (prefetch run) MiB', value: r.prefetch!.fetchedBytes / 2 ** 20, unit: 'MiB', baseline: r.imageBytes / 2 ** 20 },
    { name: 'trace MiB', value: r.prefetch!.traceBytes / 2 ** 20, unit: 'MiB' },
  ]);
  console.log(`\nobdconv: ${r.convertSeconds.toFixed(1)} s; OCI layers ${human(r.ociBytes)}, overlaybd layers ${human(r.imageBytes)}`);
}

main().catch((err: Error) => {
  console.error(`coldstart bench: ${err.message}`);
  process.exit(1);
});
