// What a killed obdconv leaves behind in the cache's tmp/: its work dir, and in the kernel the loop
// devices and FUSE mounts of the layers it was building. Each work dir is named after the pid that
// owns it; the next run removes the dirs of pids that are gone — loop devices first (their backing
// files live on the dead FUSE mounts), then the mounts, then the files.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { listLoopDevices, readMountInfo } from '../kernel';

const WORK_DIR = /^conv-(\d+)-/;

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function within(p: string, dir: string): boolean {
  return p === dir || p.startsWith(dir + '/');
}

/** Removes the work dirs under `tmpDir` whose owner is dead, with their loop devices and mounts; returns what it did. */
export function sweepStaleWork(tmpDir: string): string[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(tmpDir);
  } catch {
    return [];
  }
  const done: string[] = [];
  for (const e of entries) {
    const m = WORK_DIR.exec(e);
    if (!m || Number(m[1]) === process.pid || alive(Number(m[1]))) continue;
    const dir = path.join(tmpDir, e);
    for (const loop of listLoopDevices().filter((l) => within(l.backingFile, dir))) {
      try {
        execFileSync('losetup', ['-d', loop.path], { stdio: 'ignore' });
        done.push(`detached ${loop.path}`);
      } catch {
        // already going away (autoclear)
      }
    }
    const mounts = readMountInfo()
      .filter((mi) => within(mi.mountPoint, dir))
      .sort((a, b) => b.mountPoint.length - a.mountPoint.length);
    for (const mi of mounts) {
      try {
        execFileSync('umount', ['-l', mi.mountPoint], { stdio: 'ignore' });
        done.push(`unmounted ${mi.mountPoint}`);
      } catch {
        // unmounted meanwhile
      }
    }
    fs.rmSync(dir, { recursive: true, force: true });
    done.push(`removed ${dir}`);
  }
  return done;
}
