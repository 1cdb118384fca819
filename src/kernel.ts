// What the kernel says about mounts and loop devices (read-only views of /proc and /sys).
import fs from 'node:fs';
import path from 'node:path';

export interface MountEntry {
  majorMinor: string; // "7:3"
  mountPoint: string;
  fsType: string;
  source: string;
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function readMountInfo(file = '/proc/self/mountinfo'): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (sep < 0 || f.length < sep + 3) continue;
    out.push({ majorMinor: f[2], mountPoint: unescape(f[4]), fsType: f[sep + 1], source: unescape(f[sep + 2]) });
  }
  return out;
}

/** Where the block device major:minor is mounted now. */
export function mountPointsOf(major: number, minor: number, mounts = readMountInfo()): string[] {
  const mm = `${major}:${minor}`;
  return mounts.filter((m) => m.majorMinor === mm).map((m) => m.mountPoint);
}

export interface LoopBinding {
  path: string; // /dev/loopN
  major: number;
  minor: number;
  backingFile: string;
}

/** Every bound loop device and its backing file. */
export function listLoopDevices(): LoopBinding[] {
  const out: LoopBinding[] = [];
  let names: string[] = [];
  try {
    names = fs.readdirSync('/sys/block').filter((n) => /^loop\d+$/.test(n));
  } catch {
    return out;
  }
  for (const n of names) {
    try {
      const backing = fs.readFileSync(path.join('/sys/block', n, 'loop', 'backing_file'), 'utf8').trim();
      const [major, minor] = fs.readFileSync(path.join('/sys/block', n, 'dev'), 'utf8').trim().split(':').map(Number);
      out.push({ path: `/dev/${n}`, major, minor, backingFile: backing });
    } catch {
      // not bound (no loop/backing_file) or gone meanwhile
    }
  }
  return out;
}
