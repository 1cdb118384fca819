// Which files a process holds open, from /proc/<pid>/fd: tests that check nothing is left open.
import fs from 'node:fs';
import path from 'node:path';

/** Targets of the descriptors of `pid` that point at files under `dir`. */
export function fdsUnder(pid: number | 'self', dir: string): string[] {
  const out: string[] = [];
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      const target = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
      if (target.startsWith(dir + path.sep)) out.push(target);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}
