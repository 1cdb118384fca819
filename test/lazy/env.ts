// The whole lazy-image stack for a test, each part real and private: a docker-registry, `obd
// deviced` + `obd snapshotter` sharing one config, and a containerd with the snapshotter registered
// as proxy plugin `obd`. Overlaybd images are made by obdconv from OCI layouts (test/helpers/images).
// One owner: start() → stop(); stop() also runs at process exit (each helper registers its own).
import { ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DeviceClient } from '../../src/device/client';
import type { DeviceStatsInfo } from '../../src/device/manager';
import type { FetchTotalsInfo } from '../../src/device/fetch-counters';
import { CriOptions, TestContainerd } from '../helpers/containerd';
import { unmountUnder } from '../helpers/loop';
import { ImageSpec, writeOciLayout } from '../helpers/images';
import { TestRegistry } from '../helpers/registry';
import { obdBin, obdconvBin } from '../helpers/bin';
import { TestSnapshotter } from '../helpers/snapshotter';
import { makeTempDir, TempDir } from '../helpers/tmp';
import { sweepKernelState } from '../device/harness';
import { killedAtExit } from '../helpers/live';

export interface LazyEnvOptions {
  /** extra snapshotter/deviced config keys (rwMode, autoRemoveDev, …) */
  config?: Record<string, unknown>;
  /** registry to use (default: a private one started here) */
  registry?: TestRegistry;
  /** containerd's CRI plugin on (evaluated once the registry has started) */
  cri?: (registry: TestRegistry) => CriOptions;
}

const live = killedAtExit<LazyEnv>();

export class LazyEnv {
  readonly tmp: TempDir;
  readonly registry: TestRegistry;
  readonly snapshotter: TestSnapshotter;
  containerd!: TestContainerd;
  private deviced?: ChildProcess;
  private devicedLog = '';
  private ownRegistry: boolean;
  private readonly cri?: (registry: TestRegistry) => CriOptions;

  constructor(opts: LazyEnvOptions = {}) {
    this.tmp = makeTempDir('obd-lazy-');
    this.ownRegistry = !opts.registry;
    this.cri = opts.cri;
    this.registry = opts.registry ?? new TestRegistry();
    const { cacheConfig, ...rest } = opts.config ?? {};
    this.snapshotter = new TestSnapshotter({
      transport: 'fuse-loop',
      ...rest,
      cacheConfig: { cacheDir: this.tmp.join('cache'), cacheSizeGB: 4, refillSize: 262144, readAheadSize: 1 << 20, ...(cacheConfig as object) },
    });
    live.add(this);
  }

  get configPath(): string {
    return this.snapshotter.configPath;
  }
  get config(): Record<string, unknown> {
    return JSON.parse(fs.readFileSync(this.configPath, 'utf8'));
  }
  get deviceAddress(): string {
    return this.config.deviceAddress as string;
  }

  async start(): Promise<void> {
    if (this.ownRegistry) await this.registry.start();
    await this.startDeviced();
    await this.snapshotter.start();
    this.containerd = new TestContainerd({ proxySnapshotters: { obd: this.snapshotter.address }, cri: this.cri?.(this.registry) });
    await this.containerd.start();
  }

  /** deviced and the snapshotter only (tests that talk to the snapshotter directly). */
  async startDevicedAndSnapshotter(): Promise<void> {
    await this.startDeviced();
    await this.snapshotter.start();
  }

  async startDeviced(): Promise<void> {
    const p = spawn(process.execPath, [obdBin(), 'deviced', '--config', this.configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.deviced = p;
    const from = this.devicedLog.length;
    p.stderr!.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`deviced did not start in 30 s:\n${this.devicedLog}`)), 30_000);
      p.stderr!.on('data', (s: string) => {
        this.devicedLog += s;
        if (this.devicedLog.includes('deviced serving', from)) {
          clearTimeout(timer);
          resolve();
        }
      });
      p.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`deviced exited with ${code} before serving:\n${this.devicedLog}`));
      });
    });
  }

  /** deviced's process id (tests that look at what it holds open); undefined when it is not running. */
  get devicedPid(): number | undefined {
    return this.deviced?.pid;
  }

  get devicedLogs(): string {
    return this.devicedLog;
  }

  async killDeviced(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const p = this.deviced;
    this.deviced = undefined;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise<void>((r) => p.once('exit', () => r()));
    p.kill(signal);
    const t = setTimeout(() => p.kill('SIGKILL'), 20_000);
    await gone;
    clearTimeout(t);
  }

  /** Device counters of every device of this deviced. */
  async deviceStats(): Promise<DeviceStatsInfo[]> {
    const c = new DeviceClient(this.deviceAddress);
    try {
      return await c.stats();
    } finally {
      c.close();
    }
  }

  /** deviced-wide counters since deviced (re)started: bytes received from registries, read by every device. */
  async deviceTotals(): Promise<FetchTotalsInfo> {
    const c = new DeviceClient(this.deviceAddress);
    try {
      return await c.totals();
    } finally {
      c.close();
    }
  }

  /** Builds `spec` as an OCI layout, converts it with obdconv into `repo:tag` of the registry. */
  /** Converts `spec` with obdconv and pushes it to `registryHost` (default: this env's registry). */
  async convertImage(spec: ImageSpec, repo: string, tag = 'latest', extraArgs: string[] = [], registryHost = this.registry.host): Promise<string> {
    const layout = writeOciLayout(this.tmp.join('oci', repo.replace(/\//g, '_')), 'src', spec);
    const target = `${registryHost}/${repo}:${tag}`;
    await execNode([obdconvBin(), `oci:${layout.dir}:src`, target, '--plain-http',
      '--cache-dir', this.tmp.join('obdconv-cache'), '--json', ...extraArgs], 600_000);
    return target;
  }

  /** `obd rpull` against this containerd. */
  async rpull(ref: string): Promise<string> {
    return execNode([obdBin(), 'rpull', '--address', this.containerd.address, '--namespace', this.containerd.namespace, '--plain-http', ref], 120_000);
  }

  private stopping?: Promise<void>;

  /** Stops everything this env started (once; concurrent callers share the same stop). */
  stop(): Promise<void> {
    this.stopping ??= this.stopAll();
    return this.stopping;
  }

  private async stopAll(): Promise<void> {
    live.delete(this);
    const errors: string[] = [];
    const step = async (what: string, fn: () => Promise<unknown> | unknown) => {
      try {
        await fn();
      } catch (err) {
        errors.push(`${what}: ${(err as Error).message}`);
      }
    };
    if (this.containerd) await step('containerd', () => this.containerd.stop());
    await step('snapshotter', () => this.snapshotter.stop());
    // Unmount what the snapshotter mounted before deviced goes, so no I/O is left to fail.
    await step('unmount', () => unmountUnder(this.snapshotter.dir));
    await step('deviced', () => this.killDeviced('SIGTERM'));
    await step('sweep', () => sweepKernelState(this.snapshotter.dir));
    await step('snapshotter files', () => this.snapshotter.cleanup());
    if (this.ownRegistry) await step('registry', () => this.registry.stop());
    await step('tmp', () => this.tmp.cleanup());
    if (errors.length) throw new Error(`LazyEnv.stop: ${errors.join('; ')}`);
  }

  killNow(): void {
    try {
      this.deviced?.kill('SIGKILL');
    } catch {
      /* gone */
    }
    try {
      unmountUnder(this.snapshotter.dir);
      sweepKernelState(this.snapshotter.dir);
    } catch {
      /* best effort */
    }
  }
}

export function execNode(args: string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, args, { timeout: timeoutMs, maxBuffer: 64 << 20, killSignal: 'SIGKILL' }, (err, stdout, stderr) => {
      if (err) reject(new Error(`node ${args.slice(0, 2).join(' ')}… failed: ${stderr.trim() || err.message}`));
      else resolve(stdout);
    });
  });
}
