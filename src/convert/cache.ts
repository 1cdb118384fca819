// Conversion cache: source chain id (+ the options that change the bytes) → converted blob. The
// blob itself is kept under <dir>/blobs so later layers can be built on it and pushed to other
// registries; `locations` remembers the repositories that have it (for cross-repository mounts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { sweepStaleWork } from './stale-work';
import { writeJsonAtomic } from '../atomic-file';

export interface CachedLayer {
  digest: string;
  size: number;
  uuid: string;
  locations: string[];
}

export class ConversionCache {
  constructor(readonly dir: string) {
    fs.mkdirSync(path.join(dir, 'layers'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'blobs'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  }

  static key(chainId: string, options: string): string {
    return crypto.createHash('sha256').update(`${chainId}\n${options}`).digest('hex');
  }

  blobPath(digest: string): string {
    return path.join(this.dir, 'blobs', digest.replace(/^sha256:/, ''));
  }

  get(key: string): CachedLayer | undefined {
    try {
      const rec = JSON.parse(fs.readFileSync(path.join(this.dir, 'layers', `${key}.json`), 'utf8')) as CachedLayer;
      if (!/^sha256:[a-f0-9]{64}$/.test(rec.digest) || fs.statSync(this.blobPath(rec.digest)).size !== rec.size) return undefined;
      return rec;
    } catch {
      return undefined;
    }
  }

  put(key: string, rec: CachedLayer): void {
    writeJsonAtomic(path.join(this.dir, 'layers', `${key}.json`), rec);
  }

  /** Moves a finished blob into the cache (atomic rename; same filesystem as tmp/). */
  adopt(file: string, digest: string): string {
    const dst = this.blobPath(digest);
    fs.renameSync(file, dst);
    return dst;
  }

  /** A work dir named after this process, so that a later run can tell when its owner is gone. */
  tempDir(): string {
    return fs.mkdtempSync(path.join(this.dir, 'tmp', `conv-${process.pid}-`));
  }

  /** Cleans what killed conversions left (stale-work.ts); returns what it did. */
  sweepStale(): string[] {
    return sweepStaleWork(path.join(this.dir, 'tmp'));
  }
}
