// A private `obd deviced` per test: its own config, state root and socket in a temp dir, started as a
// child process (the test process never serves a device, so it may do blocking I/O on them freely).
// Everything it or the test leaves in the kernel — mounts, FUSE mounts, loop devices under the temp
// dir — is swept by the Cleanup, also when the test fails.
import assert from 'node:assert/strict';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DeviceClient } from '../../src/device/client';
import { readMountInfo } from '../../src/kernel';
import { Cleanup, loopsBackedBy } from '../helpers/loop';
import { obdBin } from '../helpers/bin';
import { makeTempDir, TempDir } from '../helpers/tmp';

export const OBD = obdBin();
export const FIXTURES = path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'overlaybd');

export interface Deviced {
  readonly configFile: string;
  readonly stateDir: string;
  readonly client: DeviceClient;
  pid(): number;
  logs(): string;
  /** Runs `obd …` with OBD_CONFIG pointing at this deviced. */
  obd(...args: string[]): { status: number; stdout: string; stderr: string };
  /** `obd device attach` → device path (the last line of its output). */
  attach(configFile: string, id?: string): string;
  /** Detach that tolerates a moment of "in use" right after an unmount (the kernel, or a mount
   *  namespace another process cloned meanwhile, may hold the device briefly). */
  detach(idOrPath: string): Promise<void>;
  kill9(): Promise<void>;
  /** The running deviced's process, to watch it exit. */
  exited(): Promise<void>;
  stop(): Promise<void>;
  restart(): Promise<void>;
}

function alive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.split(') ')[1]?.[0] !== 'Z';
  } catch {
    return false;
  }
}

function waitDeadSync(pid: number, ms: number): boolean {
  const end = Date.now() + ms;
  while (alive(pid)) {
    if (Date.now() > end) return false;
    execFileSync('sleep', ['0.05']);
  }
  return true;
}

/** Pids of obd-fd-holder processes whose socket lies under dir. */
export function holdersUnder(dir: string): number[] {
  const out: number[] = [];
  for (const p of fs.readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (path.basename(argv[0]) === 'obd-fd-holder' && argv[1]?.startsWith(dir + '/')) out.push(Number(p));
    } catch {
      // exited meanwhile
    }
  }
  return out;
}

/**
 * Kills fd holders left under `dir` (a failed test), lazily unmounts everything under it (deepest
 * first) and detaches loop devices backed by it.
 */
export function sweepKernelState(dir: string): string[] {
  const done: string[] = [];
  for (const pid of holdersUnder(dir)) {
    process.kill(pid, 'SIGKILL');
    waitDeadSync(pid, 5000);
    done.push(`kill fd holder ${pid}`);
  }
  const mounts = readMountInfo()
    .filter((m) => m.mountPoint.startsWith(dir + '/'))
    .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
  for (const m of mounts) {
    spawnSync('umount', ['-l', m.mountPoint]);
    done.push(`umount ${m.mountPoint}`);
  }
  for (const dev of loopsBackedBy(dir)) {
    spawnSync('losetup', ['-d', dev]);
    done.push(`losetup -d ${dev}`);
  }
  return done;
}

/** What a launch adds: environment, and descriptors passed as fds 3, 4, … (with LISTEN_PID set, as systemd does). */
export type LaunchWith = () => { env: Record<string, string>; fds: number[] };

export async function startDeviced(tmp: TempDir, cleanup: Cleanup, extra: Record<string, unknown> = {}, launchWith?: LaunchWith): Promise<Deviced> {
  const root = tmp.join('root');
  const configFile = tmp.join('config.json');
  const address = tmp.join('run', 'deviced.sock');
  fs.writeFileSync(configFile, JSON.stringify({ root, address: tmp.join('run', 'sn.sock'), deviceAddress: address, transport: 'fuse-loop', ...extra }));
  // Runs last: whatever is still in the kernel after the test's own teardown.
  cleanup.add('sweep kernel state', () => void sweepKernelState(tmp.path));
  let proc: ChildProcess | undefined;
  let log = '';

  const launch = async (): Promise<void> => {
    const w = launchWith?.() ?? { env: {}, fds: [] };
    // LISTEN_PID must name the process itself: a shell sets it to its own pid and execs node.
    const p = w.fds.length
      ? spawn('/bin/sh', ['-c', 'LISTEN_PID=$$ exec "$@"', 'sh', process.execPath, OBD, 'deviced', '--config', configFile], {
          stdio: ['ignore', 'ignore', 'pipe', ...w.fds],
          env: { ...process.env, ...w.env, LISTEN_FDS: String(w.fds.length) },
        })
      : spawn(process.execPath, [OBD, 'deviced', '--config', configFile], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...w.env } });
    proc = p;
    const from = log.length; // a restart waits for its own "serving" line
    p.stderr!.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`deviced did not start in 30 s:\n${log}`)), 30_000);
      p.stderr!.on('data', (s: string) => {
        log += s;
        if (log.includes('deviced serving', from)) {
          clearTimeout(timer);
          resolve();
        }
      });
      p.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`deviced exited with ${code} before serving:\n${log}`));
      });
    });
  };
  const stopSync = () => {
    if (!proc || proc.pid === undefined || !alive(proc.pid)) return;
    proc.kill('SIGTERM');
    if (!waitDeadSync(proc.pid, 20_000)) proc.kill('SIGKILL');
  };
  const exited = (p: ChildProcess) =>
    new Promise<void>((resolve) => (p.exitCode !== null || p.signalCode !== null ? resolve() : p.once('exit', () => resolve())));

  await launch();
  cleanup.add('stop deviced', stopSync);
  const client = new DeviceClient(address);
  cleanup.add('close client', () => client.close());

  const obd = (...args: string[]) => {
    const r = spawnSync(process.execPath, [OBD, ...args], { encoding: 'utf8', env: { ...process.env, OBD_CONFIG: configFile }, timeout: 120_000 });
    return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  return {
    configFile,
    stateDir: path.join(root, 'deviced'),
    client,
    pid: () => proc!.pid!,
    logs: () => log,
    obd,
    attach(cfg: string, id?: string) {
      const r = obd('device', 'attach', cfg, ...(id ? ['--id', id] : []));
      if (r.status !== 0) throw new Error(`obd device attach ${cfg} failed: ${r.stderr}`);
      return r.stdout.trim().split('\n').pop()!;
    },
    async detach(idOrPath: string) {
      for (let i = 0; ; i++) {
        try {
          return await client.detach(idOrPath);
        } catch (err) {
          if (i >= 50 || !/is in use/.test((err as Error).message)) throw err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    },
    async kill9() {
      proc!.kill('SIGKILL');
      await exited(proc!);
    },
    exited: () => exited(proc!),
    async stop() {
      proc!.kill('SIGTERM');
      await exited(proc!);
    },
    async restart() {
      await launch();
    },
  };
}

/** Writes a config.v1.json and returns its path. */
/** Runs `obd layer ARGS…` and fails the test, with its stderr, when it fails. */
export function obdLayer(d: Deviced, ...args: string[]): void {
  const r = d.obd('layer', ...args);
  assert.equal(r.status, 0, `obd layer ${args.join(' ')}: ${r.stderr}`);
}

export function writeImageConfig(tmp: TempDir, name: string, cfg: object): string {
  const file = tmp.join(name);
  fs.writeFileSync(file, JSON.stringify(cfg, null, 2));
  return file;
}

export function run(cmd: string, args: string[], timeoutMs = 120_000): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
}

export function sha256File(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Every regular file and symlink under dir → sha256 (files) or "-> target" (symlinks). */
export function treeDigest(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = path.join(rel, e.name);
      if (r === 'lost+found') continue;
      const p = path.join(dir, r);
      if (e.isDirectory()) {
        out.set(r + '/', 'dir');
        walk(r);
      } else if (e.isSymbolicLink()) out.set(r, `-> ${fs.readlinkSync(p)}`);
      else out.set(r, sha256File(p));
    }
  };
  walk('');
  return out;
}

/** Writes `bytes` of deterministic data and fsyncs the file. */
export function writeFileSynced(file: string, bytes: number, seed: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const buf = Buffer.alloc(bytes);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < bytes; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    buf[i] = x & 0xff;
  }
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, buf);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Mounts under the temp dir, unmounted by the cleanup (the kernel-state sweep is the backstop). */
export function mountDev(cleanup: Cleanup, dev: string, dir: string, options: string): void {
  fs.mkdirSync(dir, { recursive: true });
  run('mount', ['-t', 'ext4', '-o', options, dev, dir]);
  cleanup.add(`umount ${dir}`, () => {
    if (readMountInfo().some((m) => m.mountPoint === dir)) spawnSync('umount', [dir]).status === 0 || spawnSync('umount', ['-l', dir]);
  });
}

export function umount(dir: string): void {
  run('umount', [dir]);
}

/** Nothing of this test left in the kernel: no mounts and no loop devices under dir. */
export function leftovers(dir: string): string[] {
  const mounts = readMountInfo()
    .filter((m) => m.mountPoint.startsWith(dir + '/') || m.source.startsWith(dir + '/'))
    .map((m) => `mount ${m.mountPoint} (${m.fsType})`);
  return [...mounts, ...loopsBackedBy(dir).map((d) => `loop ${d}`), ...holdersUnder(dir).map((p) => `fd holder ${p}`)];
}

/** A test's temp dir and the Cleanup that sweeps what it leaves in the kernel (for beforeEach). */
export function startTestDir(prefix: string): { tmp: TempDir; cleanup: Cleanup } {
  return { tmp: makeTempDir(prefix), cleanup: new Cleanup() };
}

/** Runs the cleanup, removes the temp dir, and fails the test if a mount or loop device was left (for afterEach). */
export function finishTestDir(tmp: TempDir, cleanup: Cleanup): void {
  try {
    cleanup.run();
  } finally {
    const left = leftovers(tmp.path);
    tmp.cleanup();
    assert.deepEqual(left, [], 'the test left kernel state behind');
  }
}

const ENABLE_URING = '/sys/module/fuse/parameters/enable_uring';

/** Turns FUSE over io_uring on until `cleanup` runs (then back to what it was); fails naming what the kernel lacks. */
export function enableFuseIoUring(cleanup: Cleanup): void {
  if (!fs.existsSync(ENABLE_URING)) throw new Error(`${ENABLE_URING} is missing: the kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING, Linux 6.14+)`);
  const was = fs.readFileSync(ENABLE_URING, 'utf8').trim();
  fs.writeFileSync(ENABLE_URING, '1');
  cleanup.add('restore enable_uring', () => fs.writeFileSync(ENABLE_URING, was === 'Y' ? '1' : '0'));
}
