// Whole blobs whose sha256 was checked (<cacheDir>/verified/sha256_<hex>): every image naming the
// digest reads them as local files. They take part of cacheSizeGB: at most half of it (the block
// cache gets the rest), and copies no device reads are deleted beyond that, least recently used first.
import fs from 'node:fs';
import path from 'node:path';

interface Copy {
  size: number;
  users: number;
  lastUse: number; // ms since epoch: the file's mtime at start, then the last release
}

export class VerifiedCopies {
  private readonly copies = new Map<string, Copy>(); // by digest
  private total = 0;

  constructor(
    readonly dir: string,
    /** Bytes the copies may take when no device reads them. */
    readonly budgetBytes: number,
  ) {
    let names: string[] = [];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return; // nothing verified yet
    }
    for (const name of names) {
      if (!/^sha256_[0-9a-f]{64}$/.test(name)) continue; // temp files of a copy in progress
      const st = fs.lstatSync(path.join(dir, name));
      if (!st.isFile()) continue;
      this.copies.set(`sha256:${name.slice(7)}`, { size: st.size, users: 0, lastUse: st.mtimeMs });
      this.total += st.size;
    }
  }

  pathOf(digest: string): string {
    return path.join(this.dir, `sha256_${digest.slice(7)}`);
  }

  /** Bytes of every copy on disk. */
  get bytes(): number {
    return this.total;
  }

  /** Whether a copy of `size` bytes may be kept (one larger than the budget never is). */
  fits(size: number): boolean {
    return size <= this.budgetBytes;
  }

  /** The copy's path, with one more user, if there is a copy of that size. */
  use(digest: string, size: number): string | undefined {
    const c = this.copies.get(digest);
    if (!c || c.size !== size || !fs.existsSync(this.pathOf(digest))) return undefined;
    c.users++;
    return this.pathOf(digest);
  }

  release(digest: string): void {
    const c = this.copies.get(digest);
    if (!c || c.users === 0) return;
    c.users--;
    c.lastUse = Date.now();
  }

  has(digest: string): boolean {
    return this.copies.has(digest);
  }

  /** A copy just written (renamed into place). */
  add(digest: string, size: number): void {
    const old = this.copies.get(digest);
    if (old) this.total -= old.size;
    this.copies.set(digest, { size, users: old?.users ?? 0, lastUse: Date.now() });
    this.total += size;
  }

  /** Deletes copies no device reads, least recently used first, until the copies fit the budget. */
  trim(): string[] {
    const removed: string[] = [];
    const idle = [...this.copies].filter(([, c]) => c.users === 0).sort(([, a], [, b]) => a.lastUse - b.lastUse);
    for (const [digest, c] of idle) {
      if (this.total <= this.budgetBytes) break;
      fs.rmSync(this.pathOf(digest), { force: true });
      this.copies.delete(digest);
      this.total -= c.size;
      removed.push(digest);
    }
    return removed;
  }
}
