// The main job, end to end (run by scripts/demo.sh after it installed what was missing): a private
// registry, containerd and obd (deviced + snapshotter) on this machine, a sample image converted to
// overlaybd, run lazily with `ctr run --snapshotter obd`, compared with a normal pull + run.
// Everything started here is stopped before exit, also on Ctrl-C (SIGINT) and SIGTERM.
import { human, runColdStart } from './coldstart';
import { LazyEnv } from '../test/lazy/env';

async function main(): Promise<void> {
  const imageMiB = Number(process.env.DEMO_IMAGE_MIB ?? 256);
  const workingSetMiB = Number(process.env.DEMO_WORKING_SET_MIB ?? 8);
  const rateMBps = Number(process.env.DEMO_RATE_MBPS ?? 50);
  const latencyMs = Number(process.env.DEMO_LATENCY_MS ?? 5);
  const env = new LazyEnv({ config: { autoRemoveDev: true, cacheConfig: { readAheadSize: 16 << 20 } } });
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`\ndemo: ${sig}: stopping everything it started\n`);
    env.stop().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const log = (l: string) => process.stderr.write(`demo: ${l}\n`);
  const r = await runColdStart({ imageMiB, workingSetMiB, rateMBps, latencyMs, log }, env);
  const ok = r.lazy.output.includes('READY') && r.baseline.output.includes('READY');
  const line = (k: string, v: string) => process.stdout.write(`${k.padEnd(34)} ${v}\n`);
  process.stdout.write('\n');
  line('image (overlaybd blobs)', `${human(r.imageBytes)} (OCI layers: ${human(r.ociBytes)})`);
  line('link to the registry', rateMBps > 0 ? `${rateMBps} MB/s, ${latencyMs} ms` : 'unthrottled (127.0.0.1)');
  line('obdconv', `${r.convertSeconds.toFixed(1)} s`);
  line('cold start, pull + run (overlayfs)', `${r.baseline.seconds.toFixed(2)} s`);
  line('cold start, rpull + run (obd)', `${r.lazy.seconds.toFixed(2)} s  (${(r.baseline.seconds / r.lazy.seconds).toFixed(1)}x faster)`);
  // deviced-wide totals: true after `ctr run --rm` detached the device
  line('bytes fetched / image size', `${human(r.lazy.fetchedBytes)} / ${human(r.imageBytes)} (${((100 * r.lazy.fetchedBytes) / r.imageBytes).toFixed(1)}%, on the wire ${human(r.lazy.wireBytes)})`);
  line('bytes fetched / bytes read', `${human(r.lazy.fetchedBytes)} / ${human(r.lazy.deviceReadBytes)} (${(r.lazy.fetchedBytes / Math.max(1, r.lazy.deviceReadBytes)).toFixed(2)}x; working set ${human(r.workingSetBytes)})`);
  line('workload output', ok ? 'READY (both)' : `lazy: ${JSON.stringify(r.lazy.output)} baseline: ${JSON.stringify(r.baseline.output)}`);
  if (!ok) process.exitCode = 1;
}

main().catch((err: Error) => {
  process.stderr.write(`demo: ${err.message}\n`);
  process.exit(1);
});
