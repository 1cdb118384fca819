// The snapshotter's side of a block device: attach through deviced (obd.device.v1), mount the
// filesystem on it, unmount, detach. Every step is idempotent and checks the kernel's view
// (/proc/self/mountinfo) first, so it is safe to repeat after a crash or a restart of either process.
// Mounting happens here, in the snapshotter: the device is served by deviced, never by this process.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import type { DeviceInfo } from '../../device/manager';
import { DeviceError } from '../../device/errors';
import { DeviceClient } from '../../device/client';
import { readMountInfo } from '../../kernel';
import { failedPrecondition, invalidArgument, SnapshotError } from '../errors';
import type { Logger } from '../../log';

function run(cmd: string, args: string[], timeoutMs = 120_000): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { timeout: timeoutMs, killSignal: 'SIGKILL' }, (err, _out, stderr) => {
      if (err) reject(Object.assign(new Error(`${cmd} ${args.join(' ')}: ${stderr.trim() || err.message}`), { stderr }));
      else resolve();
    });
  });
}

/** major:minor of a block device node, as mountinfo writes it. */
export function majorMinorOf(devPath: string): string {
  const rdev = fs.statSync(devPath).rdev;
  const major = ((rdev >> 8) & 0xfff) | (Math.floor(rdev / 2 ** 32) & ~0xfff);
  const minor = (rdev & 0xff) | ((rdev >> 12) & ~0xff);
  return `${major}:${minor}`;
}

/** Device errors as snapshot errors: what the caller can act on keeps its kind. */
export function asSnapshotError(err: unknown, what: string): Error {
  if (!(err instanceof DeviceError)) return err instanceof Error ? err : new Error(String(err));
  const msg = `${what}: ${err.message}`;
  switch (err.kind) {
    case 'InvalidArgument':
      return invalidArgument(msg);
    case 'FailedPrecondition':
      return failedPrecondition(msg);
    case 'Unavailable':
      return new SnapshotError('Unavailable', msg);
    default:
      return new Error(msg);
  }
}

export class BlockDevices {
  private readonly client: DeviceClient;

  constructor(
    readonly deviceAddress: string,
    private readonly log: Logger,
  ) {
    this.client = new DeviceClient(deviceAddress);
  }

  close(): void {
    this.client.close();
  }

  async attach(id: string, configPath: string): Promise<DeviceInfo> {
    try {
      return await this.client.attach({ id, configPath });
    } catch (err) {
      throw asSnapshotError(err, `attach device ${id} (${configPath})`);
    }
  }

  /**
   * Detaches if attached; false when it is gone already. Right after an unmount or mkfs, udev may
   * still hold the device open for a probe (EBUSY): that is retried for a few seconds.
   */
  async detach(id: string, force: boolean): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.detach(id, force);
        this.log.log('info', 'detached device', { id, force });
        return true;
      } catch (err) {
        if (err instanceof DeviceError && err.kind === 'NotFound') return false;
        const busy = err instanceof DeviceError && err.kind === 'FailedPrecondition' && /in use/.test(err.message);
        if (!busy || attempt >= 30) throw asSnapshotError(err, `detach device ${id}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  async stats(id: string) {
    return (await this.client.stats(id))[0];
  }

  /**
   * Makes sure `dev` is what is mounted at `mountpoint`: a mount of another device there (e.g. the
   * dead loop device of a killed deviced) is lazily unmounted first.
   */
  async ensureMounted(dev: DeviceInfo, mountpoint: string, fsType: string, options: string): Promise<void> {
    const want = majorMinorOf(dev.path);
    const here = readMountInfo().filter((m) => m.mountPoint === mountpoint);
    if (here.length > 0 && here[here.length - 1].majorMinor === want) return;
    for (const m of here) {
      this.log.log('warn', 'replacing a stale mount', { mountpoint, was: m.source, device: dev.path });
      await run('umount', ['-l', mountpoint]).catch(() => undefined);
    }
    fs.mkdirSync(mountpoint, { recursive: true, mode: 0o711 });
    await run('mount', ['-t', fsType, '-o', options, dev.path, mountpoint]);
    this.log.log('info', 'mounted device', { device: dev.path, mountpoint, fsType, options });
  }

  /** Unmounts everything at `mountpoint`. Without `lazy`, a busy mount stays and the answer is false. */
  async unmount(mountpoint: string, lazy: boolean): Promise<boolean> {
    while (readMountInfo().some((m) => m.mountPoint === mountpoint)) {
      try {
        await run('umount', lazy ? ['-l', mountpoint] : [mountpoint]);
      } catch (err) {
        if (!lazy && /busy/i.test((err as { stderr?: string }).stderr ?? (err as Error).message)) return false;
        throw err;
      }
    }
    return true;
  }

  static isMounted(mountpoint: string): boolean {
    return readMountInfo().some((m) => m.mountPoint === mountpoint);
  }

  /** mkfs on a fresh writable device (ACI's flags for ext4: no journal, discard). */
  async mkfs(devPath: string, fsType: string): Promise<void> {
    if (fsType !== 'ext4') throw invalidArgument(`mkfs of ${fsType}: only ext4 is supported`);
    await run('mkfs.ext4', ['-q', '-F', '-O', '^has_journal,sparse_super,flex_bg', '-G', '1', '-E', 'nodiscard', devPath]);
  }
}
