// The cold-start scenario shared by `scripts/demo.sh` (bench/demo.ts) and the cold-start benchmark:
// an app image (busybox + `imageMiB` of files the workload never reads + a small working set it
// reads before printing READY) is pushed as an OCI image and, converted by obdconv, as an overlaybd
// image. Then, each with an empty cache/content store, through the same (optionally throttled) link:
//   baseline: ctr image pull (overlayfs snapshotter: download + unpack) + ctr run
//   lazy:     obd rpull (manifest + config) + ctr run --snapshotter obd (blocks on first touch)
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pushOciLayout, busyboxTestImage, type ImageSpec, TarEntry, writeOciLayout } from '../test/helpers/images';
import { execNode, LazyEnv } from '../test/lazy/env';
import { obdBin } from '../test/helpers/bin';
import { parseTrace } from '../src/trace/trace';
import { loadConfig, traceDirOf } from '../src/config';
import { ThrottleProxy } from '../test/helpers/throttle-proxy';

export interface ColdStartOptions {
  imageMiB: number;
  workingSetMiB: number;
  /** link rate through the throttling proxy; 0 = no proxy */
  rateMBps: number;
  latencyMs: number;
  /** also: record a trace, empty the block cache, and start again with the trace prefetched */
  prefetch?: boolean;
  /** also: a cold cache and a fresh deviced with background download enabled (config `download`, no delay), to show it does not slow the start */
  download?: boolean;
  /**
   * also: with a cold cache, a container that only starts (`echo READY`), then one that reads this one
   * file (a path in the image): the bytes of the start alone and of one cache miss
   */
  startAndOneFile?: string;
  /** the image to build instead of appImageSpec(imageMiB, workingSetMiB), and the bytes its workload reads */
  image?: { spec: ImageSpec; readBytes: number };
  log: (line: string) => void;
}

export interface RunTiming {
  seconds: number;
  output: string;
}

export interface ColdStartResult {
  imageBytes: number; // sum of the overlaybd layer blobs
  ociBytes: number; // sum of the OCI layer blobs
  workingSetBytes: number;
  baseline: RunTiming;
  // fetchedBytes: what deviced received (deviced-wide totals, still there after `ctr run --rm`);
  // wireBytes: what crossed the link (the proxy's count) during the run
  lazy: RunTiming & { fetchedBytes: number; wireBytes: number; deviceReadBytes: number };
  prefetch?: RunTiming & { fetchedBytes: number; wireBytes: number; deviceReadBytes: number; prefetchedBytes: number; traceBytes: number };
  download?: RunTiming & { wireBytes: number; backgroundBytes: number };
  // wire: the proxy's count; fetched: what deviced received (its totals), for each run alone
  startAlone?: { wireBytes: number; fetchedBytes: number; output: string };
  oneFile?: { wireBytes: number; fetchedBytes: number; fileBytes: number; output: string };
  convertSeconds: number;
}

const MiB = 1 << 20;
export const WORKLOAD = 'cat /app/data/* > /dev/null && echo READY';

export function appImageSpec(imageMiB: number, workingSetMiB: number) {
  const base = busyboxTestImage().spec.layers[0] as TarEntry[];
  const app: TarEntry[] = [{ path: 'app', type: 'dir' }, { path: 'app/lib', type: 'dir' }, { path: 'app/data', type: 'dir' }];
  for (let i = 0; i < Math.ceil(imageMiB / 4); i++) app.push({ path: `app/lib/lib${i}.so`, type: 'file', data: crypto.randomBytes(4 * MiB) });
  for (let i = 0; i < workingSetMiB; i++) app.push({ path: `app/data/part${i}`, type: 'file', data: crypto.randomBytes(MiB) });
  return { layers: [base, app], cmd: ['/bin/sh', '-c', WORKLOAD], gzip: false };
}

async function timed<T>(fn: () => Promise<T>): Promise<[number, T]> {
  const t0 = process.hrtime.bigint();
  const v = await fn();
  return [Number(process.hrtime.bigint() - t0) / 1e9, v];
}

async function manifestLayerBytes(registryUrl: string, repo: string, tag: string): Promise<number> {
  const r = await fetch(`${registryUrl}/v2/${repo}/manifests/${tag}`, {
    headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
  });
  const m = (await r.json()) as { layers: { size: number }[] };
  return m.layers.reduce((n, l) => n + l.size, 0);
}

/** Starts everything, measures both contenders, stops everything (also on failure). */
export async function runColdStart(
  o: ColdStartOptions,
  env = new LazyEnv({ config: { autoRemoveDev: true, nativeFetch: process.env.OBD_BENCH_NATIVE_FETCH !== '0', cacheConfig: { readAheadSize: 16 * MiB } } }),
): Promise<ColdStartResult> {
  let proxy: ThrottleProxy | undefined;
  try {
    o.log('starting a private registry, containerd, obd deviced and obd snapshotter');
    await env.start();
    const [regHost, regPort] = env.registry.host.split(':');
    // Always through the proxy: it counts the bytes on the wire (rate 0: no throttling).
    proxy = new ThrottleProxy({ host: regHost, port: Number(regPort) }, o.rateMBps * MiB, o.latencyMs);
    await proxy.start();
    const linkHost = proxy.host;
    if (o.rateMBps > 0) o.log(`registry link throttled to ${o.rateMBps} MB/s, ${o.latencyMs} ms latency (proxy ${linkHost})`);

    o.log(`building a sample image: busybox + ${o.imageMiB} MiB of app files, ${o.workingSetMiB} MiB read at start`);
    const spec = o.image?.spec ?? appImageSpec(o.imageMiB, o.workingSetMiB);
    const layout = writeOciLayout(env.tmp.join('oci-app'), 'v1', spec);
    await pushOciLayout(layout, env.registry.host, 'demo/app-oci');
    const ociBytes = await manifestLayerBytes(env.registry.url, 'demo/app-oci', 'v1');

    o.log('converting it to overlaybd with obdconv');
    const [convertSeconds] = await timed(() => env.convertImage(spec, 'demo/app-obd', 'v1'));
    const imageBytes = await manifestLayerBytes(env.registry.url, 'demo/app-obd', 'v1');
    fs.rmSync(env.tmp.join('oci'), { recursive: true, force: true });
    fs.rmSync(env.tmp.join('oci-app'), { recursive: true, force: true });

    o.log('baseline: ctr image pull (overlayfs snapshotter) + ctr run');
    const ociRef = `${linkHost}/demo/app-oci:v1`;
    const [baseSeconds, baseOut] = await timed(async () => {
      await env.containerd.ctr(['image', 'pull', '--plain-http', '--snapshotter', 'overlayfs', ociRef], { timeoutMs: 1_800_000 });
      return env.containerd.run(ociRef, 'baseline', [], ['--snapshotter', 'overlayfs']);
    });

    o.log('lazy: obd rpull + ctr run --snapshotter obd');
    const obdRef = `${linkHost}/demo/app-obd:v1`;
    let wire0 = 0;
    const [lazySeconds, lazyOut] = await timed(async () => {
      await env.rpull(obdRef);
      wire0 = proxy!.bytes;
      return env.containerd.run(obdRef, 'lazy', [], ['--snapshotter', 'obd']);
    });
    const wireBytes = proxy.bytes - wire0;
    const totals = await env.deviceTotals();
    const alone = o.startAndOneFile ? await startAloneThenOneFile(env, obdRef, o.startAndOneFile, o, proxy) : undefined;
    const download = o.download ? await withDownload(env, obdRef, o, proxy) : undefined;
    const prefetch = o.prefetch ? await withPrefetch(env, obdRef, o, proxy) : undefined;
    return {
      imageBytes,
      ociBytes,
      workingSetBytes: o.image?.readBytes ?? o.workingSetMiB * MiB,
      baseline: { seconds: baseSeconds, output: baseOut },
      lazy: {
        seconds: lazySeconds,
        output: lazyOut,
        fetchedBytes: totals.receivedBytes,
        wireBytes,
        deviceReadBytes: totals.deviceReadBytes,
      },
      prefetch,
      download,
      startAlone: alone?.startAlone,
      oneFile: alone?.oneFile,
      convertSeconds,
    };
  } catch (err) {
    // What deviced said last is usually why (its log lives only in this process).
    o.log(`failed; deviced's log ends with:\n${env.devicedLogs.slice(-6000)}`);
    throw err;
  } finally {
    o.log('stopping everything');
    await proxy?.stop();
    await env.stop();
  }
}

/** An empty cache and a fresh deviced (nothing fetched yet, totals from zero). */
async function coldDeviced(env: LazyEnv): Promise<void> {
  await waitNoDevices(env);
  await env.killDeviced('SIGTERM');
  fs.rmSync(String((env.config.cacheConfig as { cacheDir: string }).cacheDir), { recursive: true, force: true });
  await env.startDeviced();
}

/** A cold start that runs nothing (mount, busybox, `echo READY`), then a container that reads one file: what each fetched alone. */
async function startAloneThenOneFile(env: LazyEnv, ref: string, file: string, o: ColdStartOptions, proxy: ThrottleProxy) {
  await coldDeviced(env);
  const measured = async (id: string, script: string) => {
    const wire0 = proxy.bytes;
    const fetched0 = (await env.deviceTotals()).receivedBytes;
    const output = await env.containerd.run(ref, id, ['/bin/sh', '-c', script], ['--snapshotter', 'obd']);
    await waitNoDevices(env);
    return { output, wireBytes: proxy.bytes - wire0, fetchedBytes: (await env.deviceTotals()).receivedBytes - fetched0 };
  };
  await env.rpull(ref);
  o.log('container start alone: ctr run --snapshotter obd … echo READY (cold cache)');
  const startAlone = await measured('start-alone', 'echo READY');
  o.log(`one file: ctr run --snapshotter obd … cat ${file} (the start's blocks cached)`);
  const oneFile = await measured('one-file', `cat ${file} | wc -c && echo READY`);
  return { startAlone, oneFile: { ...oneFile, fileBytes: Number(oneFile.output.trim().split(/\s+/)[0]) } };
}

async function waitNoDevices(env: LazyEnv): Promise<void> {
  for (let i = 0; i < 300 && (await env.deviceStats()).length > 0; i++) await new Promise((r) => setTimeout(r, 100));
}

/** An empty cache and a fresh deviced whose config enables `download` { delay: 0 }: the same lazy start, the download running behind it. */
async function withDownload(env: LazyEnv, ref: string, o: ColdStartOptions, proxy: ThrottleProxy) {
  await waitNoDevices(env);
  await env.killDeviced('SIGTERM');
  const cfg = env.config;
  fs.rmSync(String((cfg.cacheConfig as { cacheDir: string }).cacheDir), { recursive: true, force: true });
  const plain = JSON.stringify(cfg);
  fs.writeFileSync(env.configPath, JSON.stringify({ ...cfg, download: { enable: true, delay: 0, delayExtra: 0, maxMBps: 100, tryCnt: 5, blockSize: 1 << 20 } }));
  try {
    await env.startDeviced();
    o.log('lazy with background download: obd rpull + ctr run --snapshotter obd (config download.enable, delay 0)');
    let wire0 = 0;
    const [seconds, output] = await timed(async () => {
      await env.rpull(ref);
      wire0 = proxy.bytes;
      return env.containerd.run(ref, 'lazy-download', [], ['--snapshotter', 'obd']);
    });
    const wireBytes = proxy.bytes - wire0;
    const totals = await env.deviceTotals();
    await waitNoDevices(env);
    return { seconds, output, wireBytes, backgroundBytes: totals.backgroundBytes };
  } finally {
    // Back to the plain config, an empty cache and a fresh deviced for the next run.
    await env.killDeviced('SIGTERM');
    fs.writeFileSync(env.configPath, plain);
    fs.rmSync(String((cfg.cacheConfig as { cacheDir: string }).cacheDir), { recursive: true, force: true });
    await env.startDeviced();
  }
}

/** record-trace, then a cold cache (no device, empty cache dir, fresh deviced) and a run with the trace prefetched. */
async function withPrefetch(env: LazyEnv, ref: string, o: ColdStartOptions, proxy: ThrottleProxy) {
  o.log('recording a trace of the workload (obd record-trace)');
  // deviced takes trace files only from its trace directory (config traceDir)
  const traceDir = traceDirOf(loadConfig(env.configPath));
  fs.mkdirSync(traceDir, { recursive: true, mode: 0o700 });
  const trace = path.join(traceDir, 'app.trace');
  await execNode([obdBin(), 'record-trace', '--address', env.containerd.address, '--namespace', env.containerd.namespace, '--no-pull',
    '--runc-root', env.containerd.runcRoot, '--config', env.configPath, '-o', trace, ref], 1_800_000);
  const traceBytes = parseTrace(fs.readFileSync(trace, 'utf8')).reduce((n, r) => n + r.length, 0);
  await coldDeviced(env);
  o.log('lazy with prefetch: obd rpull + ctr run --snapshotter obd --snapshotter-label …/record-trace-path=<trace>');
  let wire0 = 0;
  const [seconds, output] = await timed(async () => {
    await env.rpull(ref);
    wire0 = proxy.bytes;
    return env.containerd.run(ref, 'lazy-prefetch', [], ['--snapshotter', 'obd', '--snapshotter-label', `${TRACE_LABEL}=${trace}`]);
  });
  const wireBytes = proxy.bytes - wire0;
  const totals = await env.deviceTotals();
  return {
    seconds,
    output,
    traceBytes,
    fetchedBytes: totals.receivedBytes,
    wireBytes,
    deviceReadBytes: totals.deviceReadBytes,
    prefetchedBytes: totals.prefetchBytes,
  };
}

const TRACE_LABEL = 'containerd.io/snapshot/overlaybd/record-trace-path';

export function human(n: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${u[i]}`;
}
