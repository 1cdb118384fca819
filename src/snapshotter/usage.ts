// Disk usage of a snapshot directory as containerd's fs.DiskUsage: every inode counted once (hardlinks
// share one), size in allocated bytes (st_blocks * 512).
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Usage } from './storage';

export async function diskUsage(dir: string): Promise<Usage> {
  const seen = new Set<string>();
  let size = 0n;
  const visit = async (p: string): Promise<void> => {
    let st;
    try {
      st = await fs.lstat(p, { bigint: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return; // removed while walking
      throw err;
    }
    const id = `${st.dev}:${st.ino}`;
    if (!seen.has(id)) {
      seen.add(id);
      size += st.blocks * 512n;
    }
    if (!st.isDirectory()) return;
    const entries = await fs.readdir(p).catch(() => [] as string[]);
    for (const e of entries) await visit(path.join(p, e));
  };
  await visit(dir);
  return { size: Number(size), inodes: seen.size };
}
