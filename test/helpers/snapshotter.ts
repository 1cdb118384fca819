// `obd snapshotter` as a child process for tests, plus a typed gRPC client of snapshots.v1 that talks
// either to it directly or to containerd's own snapshots service (same API; containerd needs the
// `containerd-namespace` header and the snapshotter name). One owner: start() → stop(); kill9()
// simulates a crash; state (root, socket) lives in a temp dir removed by cleanup().
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadSnapshotsService } from '../../src/snapshotter/service';
import { obdBin } from './bin';
import { unmountUnder } from './loop';
import { killedAtExit } from './live';

const live = killedAtExit<TestSnapshotter>();

export class TestSnapshotter {
  readonly dir: string;
  readonly root: string;
  readonly address: string;
  readonly configPath: string;
  private proc?: ChildProcess;
  private logFd = -1;

  constructor(config: Record<string, unknown> = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-snapshotter-'));
    this.root = path.join(this.dir, 'root');
    this.address = path.join(this.dir, 'run', 'snapshotter.sock');
    this.configPath = path.join(this.dir, 'config.json');
    const cfg = { root: this.root, address: this.address, deviceAddress: path.join(this.dir, 'run', 'deviced.sock'), ...config };
    fs.writeFileSync(this.configPath, JSON.stringify(cfg, null, 2));
    live.add(this);
  }

  get logPath(): string {
    return path.join(this.dir, 'snapshotter.log');
  }

  /** listenFd: a listening socket passed as systemd's socket activation does (fd 3, LISTEN_FDS=1). */
  async start(opts: { listenFd?: number } = {}): Promise<void> {
    if (this.proc) throw new Error('snapshotter already running');
    const logStart = fs.existsSync(this.logPath) ? fs.statSync(this.logPath).size : 0;
    this.logFd = fs.openSync(this.logPath, 'a');
    const args = [obdBin(), 'snapshotter', '--config', this.configPath];
    const proc =
      opts.listenFd === undefined
        ? spawn(process.execPath, args, { stdio: ['ignore', this.logFd, this.logFd] })
        : spawn('/bin/sh', ['-c', 'LISTEN_PID=$$ exec "$@"', 'sh', process.execPath, ...args], {
            stdio: ['ignore', this.logFd, this.logFd, opts.listenFd],
            env: { ...process.env, LISTEN_FDS: '1', LISTEN_FDNAMES: 'obd-snapshotter.socket' },
          });
    this.proc = proc;
    let exited = false;
    proc.once('exit', () => (exited = true));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (exited) throw new Error(`obd snapshotter exited with ${proc.exitCode}; log:\n${this.tailLog()}`);
      if (this.logSince(logStart).includes('obd snapshotter serving')) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`obd snapshotter did not listen on ${this.address}; log:\n${this.tailLog()}`);
  }

  /** SIGTERM and wait; resolves to the exit code. */
  async stop(): Promise<number | null> {
    return this.signal('SIGTERM');
  }

  /** SIGKILL and wait (a crash). */
  async kill9(): Promise<void> {
    await this.signal('SIGKILL');
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  private async signal(sig: NodeJS.Signals): Promise<number | null> {
    const p = this.proc;
    this.proc = undefined;
    if (this.logFd >= 0) {
      fs.closeSync(this.logFd);
      this.logFd = -1;
    }
    if (!p) return null;
    if (p.exitCode !== null || p.signalCode !== null) return p.exitCode;
    const gone = new Promise<number | null>((resolve) => p.once('exit', (code) => resolve(code)));
    p.kill(sig);
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    const code = await gone;
    clearTimeout(t);
    return code;
  }

  private logSince(offset: number): string {
    try {
      return fs.readFileSync(this.logPath).subarray(offset).toString();
    } catch {
      return '';
    }
  }

  tailLog(lines = 30): string {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-lines).join('\n');
    } catch {
      return '';
    }
  }

  async cleanup(): Promise<void> {
    await this.stop();
    live.delete(this);
    unmountUnder(this.dir);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  killNow(): void {
    try {
      this.proc?.kill('SIGKILL');
    } catch {
      /* gone */
    }
    unmountUnder(this.dir);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// ---- a promise-based snapshots.v1 client ----

export interface WireMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

export interface WireInfo {
  name: string;
  parent: string;
  kind: 'VIEW' | 'ACTIVE' | 'COMMITTED' | 'UNKNOWN';
  labels: Record<string, string>;
  created_at: { seconds: string; nanos: number };
  updated_at: { seconds: string; nanos: number };
}

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

export class SnapshotsClient {
  private readonly client: Any;
  private readonly meta = new grpc.Metadata();

  /** `namespace` is needed when talking to containerd (it sets containerd-namespace). */
  constructor(
    socket: string,
    readonly snapshotter = 'obd',
    namespace?: string,
  ) {
    const Ctor = grpc.makeGenericClientConstructor(loadSnapshotsService(), 'Snapshots');
    this.client = new Ctor(`unix:${socket}`, grpc.credentials.createInsecure());
    if (namespace) this.meta.set('containerd-namespace', namespace);
  }

  close(): void {
    this.client.close();
  }

  private call<T>(method: string, req: object): Promise<T> {
    return new Promise((resolve, reject) => {
      this.client[method]({ snapshotter: this.snapshotter, ...req }, this.meta, (err: grpc.ServiceError | null, res: T) =>
        err ? reject(err) : resolve(res),
      );
    });
  }

  async prepare(key: string, parent = '', labels: Record<string, string> = {}): Promise<WireMount[]> {
    return (await this.call<{ mounts: WireMount[] }>('Prepare', { key, parent, labels })).mounts;
  }
  async view(key: string, parent = '', labels: Record<string, string> = {}): Promise<WireMount[]> {
    return (await this.call<{ mounts: WireMount[] }>('View', { key, parent, labels })).mounts;
  }
  async mounts(key: string): Promise<WireMount[]> {
    return (await this.call<{ mounts: WireMount[] }>('Mounts', { key })).mounts;
  }
  async commit(name: string, key: string, labels: Record<string, string> = {}): Promise<void> {
    await this.call('Commit', { name, key, labels });
  }
  async remove(key: string): Promise<void> {
    await this.call('Remove', { key });
  }
  async stat(key: string): Promise<WireInfo> {
    return (await this.call<{ info: WireInfo }>('Stat', { key })).info;
  }
  async update(info: Partial<WireInfo> & { name: string }, paths: string[] = []): Promise<WireInfo> {
    return (await this.call<{ info: WireInfo }>('Update', { info, update_mask: { paths } })).info;
  }
  async usage(key: string): Promise<{ size: number; inodes: number }> {
    const r = await this.call<{ size: string; inodes: string }>('Usage', { key });
    return { size: Number(r.size), inodes: Number(r.inodes) };
  }
  async cleanup(): Promise<void> {
    await this.call('Cleanup', {});
  }
  list(filters: string[] = []): Promise<WireInfo[]> {
    return new Promise((resolve, reject) => {
      const out: WireInfo[] = [];
      const s = this.client.List({ snapshotter: this.snapshotter, filters }, this.meta);
      s.on('data', (m: { info: WireInfo[] }) => out.push(...m.info));
      s.on('error', reject);
      s.on('end', () => resolve(out));
    });
  }
}
