// Cold start to the workload's READY line on the many-layer image: busybox + 5 app layers of about
// 100 MiB each (half random, half text) whose entrypoint reads 20 files of 256 KiB spread over
// them; the registry behind a throttling proxy (this kernel has no netem): 100 Mbit/s (12.5 MB/s),
// 10 ms. Full pull + unpack + run with containerd's overlayfs snapshotter (baseline) vs obd rpull +
// lazy run, without and with trace prefetch, and without prefetch with background download on (config
// `download`, no delay: it must not slow the start); bytes on the wire (the proxy's count) ÷ bytes the
// device read; with a cold cache, the bytes of a container start alone (mount + busybox, no reads:
// the proxy's count and obd's) and then of reading one 256 KiB file (one cache miss).
// Sizes: OBD_BENCH_LAYERS, OBD_BENCH_LAYER_MIB; link: OBD_BENCH_RATE_MBPS, _LATENCY_MS.
import { human, runColdStart } from './coldstart';
import { printTable } from './table';
import { workloadImageSpec } from '../test/helpers/workload-image';

async function main(): Promise<void> {
  const appLayers = Number(process.env.OBD_BENCH_LAYERS ?? 5);
  const layerMiB = Number(process.env.OBD_BENCH_LAYER_MIB ?? 100);
  const rateMBps = Number(process.env.OBD_BENCH_RATE_MBPS ?? 12.5);
  const latencyMs = Number(process.env.OBD_BENCH_LATENCY_MS ?? 10);
  const image = workloadImageSpec({ appLayers, fillerMiBPerLayer: layerMiB, dataFilesPerLayer: 4, dataFileKiB: 256 });
  const oneFile = `/app/l${Math.floor(appLayers / 2)}/data/f1`;
  const r = await runColdStart({ imageMiB: appLayers * layerMiB, workingSetMiB: 0, rateMBps, latencyMs, prefetch: true, download: true, image,
    startAndOneFile: oneFile, log: (l) => console.log(`# ${l}`) });
  for (const [name, out] of [['baseline', r.baseline.output], ['lazy', r.lazy.output], ['prefetch', r.prefetch?.output ?? ''], ['download', r.download?.output ?? ''],
    ['start alone', r.startAlone?.output ?? ''], ['one file', r.oneFile?.output ?? '']])
    if (!out.includes('READY')) throw new Error(`${name}: the workload did not print READY: ${JSON.stringify(out)}`);
  const p = r.prefetch!;
  const d = r.download!;
  printTable(`cold start, ${human(r.imageBytes)} image (${appLayers + 1} layers), ${human(r.workingSetBytes)} of files read, ${rateMBps} MB/s + ${latencyMs} ms link`, [
    { name: 'pull+unpack+run (overlayfs)', value: r.baseline.seconds, unit: 's' },
    { name: 'rpull+run (obd, lazy): overlayfs time ÷ this', value: r.baseline.seconds / r.lazy.seconds, unit: 'x faster' },
    { name: 'rpull+run (obd, lazy)', value: r.lazy.seconds, unit: 's', baseline: r.baseline.seconds },
    { name: 'rpull+run (obd, prefetch): overlayfs time ÷ this', value: r.baseline.seconds / p.seconds, unit: 'x faster' },
    { name: 'rpull+run (obd, prefetch)', value: p.seconds, unit: 's', baseline: r.baseline.seconds },
    { name: 'rpull+run (obd, lazy, background download on): vs lazy', value: d.seconds, unit: 's', baseline: r.lazy.seconds },
  ]);
  printTable('bytes', [
    { name: 'lazy: wire ÷ read by the device', value: r.lazy.wireBytes / r.lazy.deviceReadBytes, unit: 'x' },
    { name: 'lazy: wire MiB (proxy)', value: r.lazy.wireBytes / 2 ** 20, unit: 'MiB', baseline: r.imageBytes / 2 ** 20 },
    { name: 'lazy: obd received MiB vs wire', value: r.lazy.fetchedBytes / 2 ** 20, unit: 'MiB', baseline: r.lazy.wireBytes / 2 ** 20 },
    { name: 'lazy: read by the device MiB', value: r.lazy.deviceReadBytes / 2 ** 20, unit: 'MiB' },
    { name: 'prefetch: wire ÷ read by the device', value: p.wireBytes / p.deviceReadBytes, unit: 'x' },
    { name: 'prefetch: wire MiB (proxy)', value: p.wireBytes / 2 ** 20, unit: 'MiB', baseline: r.imageBytes / 2 ** 20 },
    { name: 'trace MiB', value: p.traceBytes / 2 ** 20, unit: 'MiB' },
    { name: 'background download on: wire MiB during the start (of which download)', value: d.wireBytes / 2 ** 20, unit: 'MiB', baseline: d.backgroundBytes / 2 ** 20 },
    { name: 'container start alone (mount + busybox, cold cache): obd fetched MiB vs wire', value: r.startAlone!.fetchedBytes / 2 ** 20, unit: 'MiB',
      baseline: r.startAlone!.wireBytes / 2 ** 20 },
    { name: `reading one ${human(r.oneFile!.fileBytes)} file (${oneFile}, one cache miss): wire KiB`, value: r.oneFile!.wireBytes / 1024, unit: 'KiB' },
    { name: 'reading one file: obd fetched KiB vs wire', value: r.oneFile!.fetchedBytes / 1024, unit: 'KiB', baseline: r.oneFile!.wireBytes / 1024 },
  ]);
  console.log(`\nobdconv: ${r.convertSeconds.toFixed(1)} s; OCI layers ${human(r.ociBytes)}, overlaybd layers ${human(r.imageBytes)}`);
}

main().catch((err: Error) => {
  console.error(`coldstart bench: ${err.message}`);
  process.exit(1);
});
