// TurboOCI: (1) conversion time of `obdconv --turbo-oci` vs plain `obdconv` of the same gzip image
// (goal ≤ 0.3x), with the size of what each writes; (2) cold start of a many-layer app image run from
// the TurboOCI image (obd rpull + ctr run, data lazily from the original gzip layers) vs
// `ctr image pull` (overlayfs: download + unpack) + run, over a throttled link (default 100 Mbit/s,
// 10 ms; goal ≥ 5x). Sizes: OBD_BENCH_TURBO_MIB (image), OBD_BENCH_TURBO_LAYERS, OBD_BENCH_WS_MIB.
import crypto from 'node:crypto';
import { busyboxTestImage, pushOciLayout, type TarEntry, writeOciLayout } from '../test/helpers/images';
import { execNode, LazyEnv } from '../test/lazy/env';
import { obdconvBin } from '../test/helpers/bin';
import { human } from './coldstart';
import { printTable } from './table';
import { ThrottleProxy } from '../test/helpers/throttle-proxy';

const MiB = 1 << 20;
const WORKLOAD = 'cat /app/data/* > /dev/null && echo READY';

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = process.hrtime.bigint();
  const v = await fn();
  return [Number(process.hrtime.bigint() - t0) / 1e9, v];
}

/** busybox + `layers` app layers of ~compressible files (half text-like), the working set in the last one. */
function spec(imageMiB: number, layers: number, workingSetMiB: number) {
  const base = busyboxTestImage().spec.layers[0] as TarEntry[];
  const words = Array.from({ length: 2000 }, (_, i) => `sym${i}_${(i * 7919) % 10007}`);
  const file = (bytes: number, seed: number) => {
    const b = crypto.randomBytes(bytes);
    for (let i = 0; i < bytes; i += 8192) { // every other 4 KiB text-like: ~2:1 like binaries
      if ((i / 4096) % 2 === 0) b.write(words.slice((seed + i) % 1900, ((seed + i) % 1900) + 100).join(' ').repeat(8).slice(0, Math.min(4096, bytes - i)), i);
    }
    return b;
  };
  const out: TarEntry[][] = [base];
  const perLayer = Math.max(1, Math.floor(imageMiB / layers / 4));
  for (let l = 0; l < layers; l++) {
    const e: TarEntry[] = [{ path: 'app', type: 'dir' }, { path: `app/lib${l}`, type: 'dir' }];
    for (let i = 0; i < perLayer; i++) e.push({ path: `app/lib${l}/part${i}.so`, type: 'file', data: file(4 * MiB, l * 1000 + i) });
    if (l === layers - 1) {
      e.push({ path: 'app/data', type: 'dir' });
      for (let i = 0; i < workingSetMiB; i++) e.push({ path: `app/data/part${i}`, type: 'file', data: file(MiB, 77 + i) });
    }
    out.push(e);
  }
  return { layers: out, cmd: ['/bin/sh', '-c', WORKLOAD], gzip: true };
}

async function layerBytes(url: string, repo: string, tag: string): Promise<number> {
  const r = await fetch(`${url}/v2/${repo}/manifests/${tag}`, {
    headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
  });
  const m = (await r.json()) as { layers: { size: number }[] };
  return m.layers.reduce((n, l) => n + l.size, 0);
}

async function main(): Promise<void> {
  const imageMiB = Number(process.env.OBD_BENCH_TURBO_MIB ?? 300);
  const layers = Number(process.env.OBD_BENCH_TURBO_LAYERS ?? 8);
  const workingSetMiB = Number(process.env.OBD_BENCH_WS_MIB ?? 16);
  const rateMBps = Number(process.env.OBD_BENCH_RATE_MBPS ?? 12.5);
  const latencyMs = Number(process.env.OBD_BENCH_LATENCY_MS ?? 10);
  const log = (l: string) => console.log(`# ${l}`);
  const env = new LazyEnv({ config: { autoRemoveDev: true, cacheConfig: { readAheadSize: 0 } } });
  let proxy: ThrottleProxy | undefined;
  try {
    log('starting a private registry, containerd, obd deviced and obd snapshotter');
    await env.start();
    log(`building busybox + ${layers} app layers (${imageMiB} MiB, gzip), ${workingSetMiB} MiB read at start`);
    const s = spec(imageMiB, layers, workingSetMiB);
    const layout = writeOciLayout(env.tmp.join('oci-app'), 'v1', s);
    await pushOciLayout(layout, env.registry.host, 'bench/app');
    const ociBytes = await layerBytes(env.registry.url, 'bench/app', 'v1');
    const src = `${env.registry.host}/bench/app:v1`;
    const conv = (dst: string, extra: string[]) =>
      execNode([obdconvBin(), src, dst, '--plain-http', '--cache-dir', env.tmp.join(`cache-${dst.replace(/\W/g, '_')}`), '--json', ...extra], 1_800_000);
    log('plain obdconv');
    const [plainSec] = await timed(() => conv(`${env.registry.host}/bench/app:obd`, []));
    log('obdconv --turbo-oci');
    const [turboSec] = await timed(() => conv(`${env.registry.host}/bench/app:turbo`, ['--turbo-oci']));
    const obdBytes = await layerBytes(env.registry.url, 'bench/app', 'obd');
    const metaBytes = await layerBytes(env.registry.url, 'bench/app', 'turbo');
    printTable(`conversion of ${human(ociBytes)} (${layers + 1} gzip layers)`, [
      { name: 'obdconv (overlaybd)', value: plainSec, unit: 's' },
      { name: 'obdconv --turbo-oci', value: turboSec, unit: 's', baseline: plainSec },
    ]);
    printTable('bytes written to the registry', [
      { name: 'overlaybd layers MiB', value: obdBytes / MiB, unit: 'MiB', baseline: ociBytes / MiB },
      { name: 'TurboOCI meta blobs MiB', value: metaBytes / MiB, unit: 'MiB', baseline: ociBytes / MiB },
    ]);

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
    const [lazySec, lazyOut] = await timed(async () => {
      await env.rpull(turboRef);
      return env.containerd.run(turboRef, 'turbo', [], ['--snapshotter', 'obd']);
    });
    for (const [n, o] of [['baseline', baseOut], ['turbo', lazyOut]]) if (!o.includes('READY')) throw new Error(`${n}: no READY: ${JSON.stringify(o)}`);
    const stats = await env.deviceStats();
    const fetched = stats.reduce((n, st) => n + st.fetchedBytes, 0);
    printTable(`cold start, ${layers + 1} layers, ${human(ociBytes)} image, ${workingSetMiB} MiB working set, ${rateMBps} MB/s + ${latencyMs} ms`, [
      { name: 'pull+unpack+run (overlayfs)', value: baseSec, unit: 's' },
      { name: 'rpull+run (TurboOCI, lazy)', value: lazySec, unit: 's', baseline: baseSec },
    ]);
    printTable('bytes', [{ name: 'fetched from original layers MiB', value: fetched / MiB, unit: 'MiB', baseline: ociBytes / MiB }]);
    console.log(`\nconversion ratio ${(turboSec / plainSec).toFixed(2)}x (goal ≤ 0.3x); cold start speedup ${(baseSec / lazySec).toFixed(1)}x (goal ≥ 5x)`);
  } finally {
    await proxy?.stop();
    await env.stop();
  }
}

main().catch((err: Error) => {
  console.error(`turbo bench: ${err.stack}`);
  process.exit(1);
});
