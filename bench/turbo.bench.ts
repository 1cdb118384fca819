// TurboOCI: (1) conversion time of `obdconv --turbo-oci` vs plain `obdconv` of the same gzip image
// (goal ≤ 0.3x), with the size of what each writes; (2) cold start of the many-layer cold-start
// workload (busybox + app layers of filler files, the entrypoint reads small data files spread over
// them) run from the TurboOCI image (obd rpull + ctr run, data lazily from the original gzip
// layers) vs `ctr image pull` (overlayfs: download + unpack) + run, over a throttled link (default
// 100 Mbit/s, 10 ms; goal ≥ 5x); bytes: deviced-wide totals and the proxy's count.
// Sizes: OBD_BENCH_LAYERS, OBD_BENCH_LAYER_MIB; link: OBD_BENCH_RATE_MBPS, OBD_BENCH_LATENCY_MS.
// OBD_BENCH_REPEAT=n converts n times each way (alternating, fresh caches) and compares medians (the
// machine is shared: single runs are noisy); OBD_BENCH_COLDSTART=0 measures the conversion only.
import { pushOciLayout, writeOciLayout } from '../test/helpers/images';
import { execNode, LazyEnv } from '../test/lazy/env';
import { obdconvBin } from '../test/helpers/bin';
import { workloadImageSpec } from '../test/helpers/workload-image';
import { human } from './coldstart';
import { printTable } from './table';
import { ThrottleProxy } from '../test/helpers/throttle-proxy';

const MiB = 1 << 20;

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = process.hrtime.bigint();
  const v = await fn();
  return [Number(process.hrtime.bigint() - t0) / 1e9, v];
}

const seconds = (ms: Record<string, number>) => Object.entries(ms).map(([k, v]) => `${k} ${(v / 1000).toFixed(2)}`).join(', ');

/** Where conversion time goes: obdconv --json's per-layer stage times, summed (stages overlap). */
function stageSeconds(json: string): string {
  const r = JSON.parse(json) as { layers: { ms: Record<string, number> }[] };
  const sum: Record<string, number> = {};
  for (const l of r.layers) for (const [k, v] of Object.entries(l.ms)) sum[k] = (sum[k] ?? 0) + v;
  return seconds(sum);
}

/** --turbo-oci's wall-clock phases (critical path) and its build phases summed over layers. */
function turboPhases(json: string): string[] {
  const r = JSON.parse(json) as { phases?: Record<string, number>; buildPhases?: Record<string, number> };
  if (!r.phases || !r.buildPhases) return [];
  return [`wall seconds: ${seconds(r.phases)}`, `build seconds by phase (sum over layers): ${seconds(r.buildPhases)}`];
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function layerBytes(url: string, repo: string, tag: string): Promise<number> {
  const r = await fetch(`${url}/v2/${repo}/manifests/${tag}`, {
    headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
  });
  const m = (await r.json()) as { layers: { size: number }[] };
  return m.layers.reduce((n, l) => n + l.size, 0);
}

async function main(): Promise<void> {
  const appLayers = Number(process.env.OBD_BENCH_LAYERS ?? 5);
  const layerMiB = Number(process.env.OBD_BENCH_LAYER_MIB ?? 100);
  const rateMBps = Number(process.env.OBD_BENCH_RATE_MBPS ?? 12.5);
  const latencyMs = Number(process.env.OBD_BENCH_LATENCY_MS ?? 10);
  const log = (l: string) => console.log(`# ${l}`);
  const env = new LazyEnv({ config: { autoRemoveDev: true, cacheConfig: { readAheadSize: 0 } } });
  let proxy: ThrottleProxy | undefined;
  try {
    log('starting a private registry, containerd, obd deviced and obd snapshotter');
    await env.start();
    const image = workloadImageSpec({ appLayers, fillerMiBPerLayer: layerMiB, dataFilesPerLayer: 4, dataFileKiB: 256 });
    log(`building the many-layer workload: busybox + ${appLayers} app layers of ${layerMiB} MiB (gzip), ${human(image.readBytes)} read at start`);
    const layers = appLayers;
    const layout = writeOciLayout(env.tmp.join('oci-app'), 'v1', image.spec);
    await pushOciLayout(layout, env.registry.host, 'bench/app');
    const ociBytes = await layerBytes(env.registry.url, 'bench/app', 'v1');
    const src = `${env.registry.host}/bench/app:v1`;
    const repeat = Math.max(1, Number(process.env.OBD_BENCH_REPEAT ?? 1));
    let run = 0;
    const conv = (dst: string, extra: string[]) =>
      execNode([obdconvBin(), src, dst, '--plain-http', '--cache-dir', env.tmp.join(`cache-${++run}`), '--json', ...extra], 1_800_000);
    const plainTimes: number[] = [];
    const turboTimes: number[] = [];
    for (let r = 0; r < repeat; r++) {
      log(`plain obdconv${repeat > 1 ? ` (${r + 1}/${repeat})` : ''}`);
      const [plainSec, plainOut] = await timed(() => conv(`${env.registry.host}/bench/app:obd`, []));
      plainTimes.push(plainSec);
      log(`  ${plainSec.toFixed(2)} s; stage seconds (sum over layers): ${stageSeconds(plainOut)}`);
      log(`obdconv --turbo-oci${repeat > 1 ? ` (${r + 1}/${repeat})` : ''}`);
      const [turboSec, turboOut] = await timed(() => conv(`${env.registry.host}/bench/app:turbo`, ['--turbo-oci']));
      turboTimes.push(turboSec);
      log(`  ${turboSec.toFixed(2)} s; stage seconds (sum over layers): ${stageSeconds(turboOut)}`);
      for (const line of turboPhases(turboOut)) log(`  ${line}`);
    }
    const plainSec = median(plainTimes);
    const turboSec = median(turboTimes);
    if (repeat > 1) log(`ratios per run: ${plainTimes.map((p, i) => (turboTimes[i] / p).toFixed(2)).join(' ')}`);
    const obdBytes = await layerBytes(env.registry.url, 'bench/app', 'obd');
    const metaBytes = await layerBytes(env.registry.url, 'bench/app', 'turbo');
    printTable(`conversion of ${human(ociBytes)} (${layers + 1} gzip layers)${repeat > 1 ? `, median of ${repeat}` : ''}`, [
      { name: 'obdconv (overlaybd)', value: plainSec, unit: 's' },
      { name: 'obdconv --turbo-oci', value: turboSec, unit: 's', baseline: plainSec },
    ]);
    printTable('bytes written to the registry', [
      { name: 'overlaybd layers MiB', value: obdBytes / MiB, unit: 'MiB', baseline: ociBytes / MiB },
      { name: 'TurboOCI meta blobs MiB', value: metaBytes / MiB, unit: 'MiB', baseline: ociBytes / MiB },
    ]);
    if (process.env.OBD_BENCH_COLDSTART === '0') {
      console.log(`\nconversion ratio ${(turboSec / plainSec).toFixed(2)}x (goal ≤ 0.3x); meta ${(100 * metaBytes / ociBytes).toFixed(2)}% of the source`);
      return;
    }

    const [h, p] = env.registry.host.split(':');
    proxy = new ThrottleProxy({ host: h, port: Number(p) }, rateMBps * MiB, latencyMs);
    await proxy.start();
    log(`registry link throttled to ${rateMBps} MB/s, ${latencyMs} ms (proxy ${proxy.host})`);
    log('baseline: ctr image pull (overlayfs) + ctr run');
    const ociRef = `${proxy.host}/bench/app:v1`;
    const [baseSec, baseOut] = await timed(async () => {
      await env.containerd.ctr(['image', 'pull', '--plain-http', '--snapshotter', 'overlayfs', ociRef], { timeoutMs: 1_800_000 });
      return env.containerd.run(ociRef, 'baseline', [], ['--snapshotter', 'overlayfs']);
    });
    log('TurboOCI: obd rpull + ctr run --snapshotter obd');
    const turboRef = `${proxy.host}/bench/app:turbo`;
    const wire0 = proxy.bytes;
    const [lazySec, lazyOut] = await timed(async () => {
      await env.rpull(turboRef);
      return env.containerd.run(turboRef, 'turbo', [], ['--snapshotter', 'obd']);
    });
    const wireBytes = proxy.bytes - wire0;
    for (const [n, o] of [['baseline', baseOut], ['turbo', lazyOut]]) if (!o.includes('READY')) throw new Error(`${n}: no READY: ${JSON.stringify(o)}`);
    const totals = await env.deviceTotals();
    printTable(`cold start, ${layers + 1} layers, ${human(ociBytes)} image, ${human(image.readBytes)} read, ${rateMBps} MB/s + ${latencyMs} ms`, [
      { name: 'pull+unpack+run (overlayfs)', value: baseSec, unit: 's' },
      { name: 'rpull+run (TurboOCI, lazy)', value: lazySec, unit: 's', baseline: baseSec },
    ]);
    printTable('bytes', [
      { name: 'wire MiB (proxy), TurboOCI', value: wireBytes / MiB, unit: 'MiB', baseline: ociBytes / MiB },
      { name: 'received by deviced MiB', value: totals.receivedBytes / MiB, unit: 'MiB', baseline: ociBytes / MiB },
      { name: 'read by the devices MiB', value: totals.deviceReadBytes / MiB, unit: 'MiB' },
    ]);
    console.log(`\nconversion ratio ${(turboSec / plainSec).toFixed(2)}x (goal ≤ 0.3x); meta ${(100 * metaBytes / ociBytes).toFixed(2)}% of the source; ` +
      `cold start speedup ${(baseSec / lazySec).toFixed(1)}x (goal ≥ 5x)`);
  } finally {
    await proxy?.stop();
    await env.stop();
  }
}

main().catch((err: Error) => {
  console.error(`turbo bench: ${err.stack}`);
  process.exit(1);
});
