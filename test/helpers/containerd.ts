// A private containerd (+ runc) for tests: its own root, state dir, socket and runc root, proxy
// snapshotters registered under [proxy_plugins.<name>], the CRI plugin off (no CNI here), cgroup v1
// as this host has (with `cri` set, the CRI plugin is on instead: see CriOptions). One owner: start() → stop(); stop() kills every task and shim it started,
// stops containerd (TERM, then KILL), unmounts whatever is still mounted under its dirs and removes
// them. It also runs (synchronously, best effort) at process exit.
//
//   const ctd = new TestContainerd({ proxySnapshotters: { obd: sockPath } });
//   await ctd.start();
//   await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'obd', ref]);
//   await ctd.stop();
import { ChildProcess, execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { unmountUnder } from './loop';
import { killedAtExit } from './live';

export interface TestContainerdOptions {
  /** name → unix socket of a snapshots.v1 proxy plugin */
  proxySnapshotters?: Record<string, string>;
  /** containerd log level (default warn) */
  logLevel?: string;
  namespace?: string;
  /** Turns the CRI plugin on, as a Kubernetes node has it (host-network pods only: no CNI here). */
  cri?: CriOptions;
}

export interface CriOptions {
  /** snapshotter the CRI plugin unpacks images with (e.g. the proxy plugin "obd") */
  snapshotter: string;
  /** the pause image of every pod sandbox (must be pullable from a registry of `plainHttpRegistries`) */
  sandboxImage: string;
  /** "host:port" of registries spoken to over plain http */
  plainHttpRegistries?: string[];
}

export interface CtrResult {
  stdout: string;
  stderr: string;
}

export class CtrError extends Error {
  constructor(
    readonly args: string[],
    readonly code: number | null,
    readonly stdout: string,
    readonly stderr: string,
  ) {
    super(`ctr ${args.join(' ')} exited ${code}: ${stderr.trim() || stdout.trim()}`);
  }
}

const live = killedAtExit<TestContainerd>();

/** Pids of processes whose command line contains `needle` (e.g. our private socket path). */
export function pidsWithArg(needle: string): number[] {
  const out: number[] = [];
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${e}/cmdline`, 'utf8');
      if (cmd.split('\0').some((a) => a.includes(needle))) out.push(Number(e));
    } catch {
      /* exited */
    }
  }
  return out;
}

export class TestContainerd {
  readonly dir: string;
  readonly namespace: string;
  private proc?: ChildProcess;
  private logFd = -1;

  constructor(private readonly opts: TestContainerdOptions = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-containerd-'));
    this.namespace = opts.namespace ?? 'obdtest';
  }

  get address(): string {
    return path.join(this.dir, 'containerd.sock');
  }
  get root(): string {
    return path.join(this.dir, 'root');
  }
  get state(): string {
    return path.join(this.dir, 'state');
  }
  get runcRoot(): string {
    return path.join(this.dir, 'runc');
  }
  get logPath(): string {
    return path.join(this.dir, 'containerd.log');
  }

  async start(): Promise<void> {
    if (this.proc) throw new Error('containerd already started');
    const cfg = this.writeConfig();
    this.logFd = fs.openSync(this.logPath, 'a');
    const proc = spawn('/usr/bin/containerd', ['--config', cfg], {
      stdio: ['ignore', this.logFd, this.logFd],
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin' },
    });
    this.proc = proc;
    live.add(this);
    let exited = false;
    proc.once('exit', () => (exited = true));
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (exited) throw new Error(`containerd exited with ${proc.exitCode}; log:\n${this.tailLog()}`);
      if (fs.existsSync(this.address)) {
        const ok = await this.ctr(['version']).then(
          () => true,
          () => false,
        );
        if (ok) return;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    await this.stop();
    throw new Error(`containerd did not answer on ${this.address} within 30 s; log:\n${this.tailLog()}`);
  }

  /** Runs ctr against this containerd in its namespace; rejects with CtrError on non-zero exit. */
  ctr(args: string[], opts: { timeoutMs?: number; namespace?: string } = {}): Promise<CtrResult> {
    const full = ['--address', this.address, '--namespace', opts.namespace ?? this.namespace, ...args];
    return new Promise((resolve, reject) => {
      execFile(
        'ctr',
        full,
        { timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 << 20, killSignal: 'SIGKILL' },
        (err, stdout, stderr) => {
          if (err) reject(new CtrError(args, typeof err.code === 'number' ? err.code : null, stdout, stderr));
          else resolve({ stdout, stderr });
        },
      );
    });
  }

  /** `ctr run --rm` with this instance's runc root; resolves to the container's stdout. */
  async run(image: string, id: string, cmd: string[], extra: string[] = []): Promise<string> {
    const r = await this.ctr(['run', '--rm', '--runc-root', this.runcRoot, ...extra, image, id, ...cmd]);
    return r.stdout;
  }

  async stop(): Promise<void> {
    live.delete(this);
    const p = this.proc;
    if (p && p.exitCode === null && p.signalCode === null) {
      await this.removeTasks().catch(() => undefined);
      const gone = new Promise<void>((resolve) => p.once('exit', () => resolve()));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
    }
    this.proc = undefined;
    this.cleanupFiles();
  }

  /** Synchronous last resort (process exit). */
  killNow(): void {
    try {
      this.proc?.kill('SIGKILL');
    } catch {
      /* gone */
    }
    this.cleanupFiles();
  }

  private cleanupFiles(): void {
    for (const pid of pidsWithArg(this.address)) {
      try {
        process.kill(pid, 'SIGKILL'); // leftover shims of this instance
      } catch {
        /* gone */
      }
    }
    if (this.logFd >= 0) {
      fs.closeSync(this.logFd);
      this.logFd = -1;
    }
    unmountUnder(this.dir);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private async removeTasks(): Promise<void> {
    const nss = (await this.ctr(['namespaces', 'ls', '-q'])).stdout.split('\n').filter(Boolean);
    for (const ns of nss) {
      const tasks = (await this.ctr(['tasks', 'ls', '-q'], { namespace: ns })).stdout.split('\n').filter(Boolean);
      for (const t of tasks) {
        await this.ctr(['tasks', 'kill', '-s', 'SIGKILL', t], { namespace: ns }).catch(() => undefined);
        await this.ctr(['tasks', 'delete', '-f', t], { namespace: ns, timeoutMs: 20_000 }).catch(() => undefined);
      }
      const ctrs = (await this.ctr(['containers', 'ls', '-q'], { namespace: ns })).stdout.split('\n').filter(Boolean);
      for (const c of ctrs) await this.ctr(['containers', 'delete', c], { namespace: ns }).catch(() => undefined);
    }
  }

  tailLog(lines = 30): string {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  private writeConfig(): string {
    const q = (s: string) => JSON.stringify(s);
    const lines = [
      'version = 2',
      `root = ${q(this.root)}`,
      `state = ${q(this.state)}`,
      `disabled_plugins = [${this.opts.cri ? '' : '"io.containerd.grpc.v1.cri", '}"io.containerd.snapshotter.v1.btrfs",`,
      '  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs",',
      '  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]',
      '[grpc]',
      `  address = ${q(this.address)}`,
      '[ttrpc]',
      `  address = ${q(this.address + '.ttrpc')}`,
      '[debug]',
      `  level = ${q(this.opts.logLevel ?? 'warn')}`,
      '[plugins."io.containerd.gc.v1.scheduler"]',
      '  startup_delay = "100ms"',
    ];
    for (const [name, sock] of Object.entries(this.opts.proxySnapshotters ?? {})) {
      lines.push(`[proxy_plugins.${q(name)}]`, '  type = "snapshot"', `  address = ${q(sock)}`);
    }
    if (this.opts.cri) lines.push(...this.criConfig(this.opts.cri));
    const file = path.join(this.dir, 'config.toml');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    return file;
  }

  /** The CRI plugin's section: snapshot annotations on (obd needs them to pull lazily), its streaming
   *  server on a free port of 127.0.0.1, runc with this instance's root, empty CNI dirs, no
   *  oom_score_adj below containerd's own. */
  private criConfig(cri: CriOptions): string[] {
    const q = (s: string) => JSON.stringify(s);
    const cniDir = path.join(this.dir, 'cni');
    fs.mkdirSync(path.join(cniDir, 'conf'), { recursive: true });
    fs.mkdirSync(path.join(cniDir, 'bin'), { recursive: true });
    const p = '[plugins."io.containerd.grpc.v1.cri"';
    const lines = [
      `${p}]`,
      `  sandbox_image = ${q(cri.sandboxImage)}`,
      '  stream_server_address = "127.0.0.1"',
      '  stream_server_port = "0"',
      '  disable_apparmor = true',
      '  enable_selinux = false',
      // The pause container asks for oom_score_adj -998, which needs CAP_SYS_RESOURCE; clamp it to ours.
      '  restrict_oom_score_adj = true',
      `${p}.containerd]`,
      `  snapshotter = ${q(cri.snapshotter)}`,
      '  disable_snapshot_annotations = false',
      '  default_runtime_name = "runc"',
      `${p}.containerd.runtimes.runc]`,
      '  runtime_type = "io.containerd.runc.v2"',
      `${p}.containerd.runtimes.runc.options]`,
      '  BinaryName = "/usr/sbin/runc"',
      `  Root = ${q(this.runcRoot)}`,
      '  SystemdCgroup = false',
      `${p}.cni]`,
      `  bin_dir = ${q(path.join(cniDir, 'bin'))}`,
      `  conf_dir = ${q(path.join(cniDir, 'conf'))}`,
    ];
    for (const host of cri.plainHttpRegistries ?? []) {
      lines.push(`${p}.registry.mirrors.${q(host)}]`, `  endpoint = [${q(`http://${host}`)}]`);
    }
    return lines;
  }
}
