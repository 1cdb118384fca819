// Bridges the addon's cache misses to the registry: a BlobSource knows, per digest, where the blob
// lives (host, repository) and reads ranges with one RangeReader per blob. It counts what it
// delivers per fetch kind, and every byte received from the network (`receivedBytes`, also bodies
// of retried or failed requests), which is what a proxy in front of the registry sees. After a fetch
// it can name the blob's route (final URL + headers) for a native fetcher to read from directly.
import type { RangeReader } from './range-reader';
import type { BlobRoute, FetchKind, NativeFetchFailure } from '../addon';
import type { RegistryClient } from './client';
import { nativeFetchError } from './errors';

export interface BlobLocation {
  host: string;
  repo: string;
  digest: string;
  size?: number;
}

export class BlobSource {
  private readonly readers = new Map<string, RangeReader>();
  fetches = 0;
  fetchedBytes = 0;
  receivedBytes = 0;
  failedFetches = 0;
  readonly bytesByKind: Record<FetchKind, number> = { demand: 0, readahead: 0, prefetch: 0, background: 0 };

  constructor(
    private readonly client: RegistryClient,
    private readonly opts: { readDeadlineMs?: number; onRetriedError?: (err: unknown) => void } = {},
  ) {}

  /** Registers where a digest can be fetched from (the first registration wins). */
  add(loc: BlobLocation): void {
    if (this.readers.has(loc.digest)) return;
    this.readers.set(loc.digest, this.client.blobReader(loc.host, loc.repo, loc.digest, {
      size: loc.size, readDeadlineMs: this.opts.readDeadlineMs, onBytes: (n) => (this.receivedBytes += n), onRetriedError: this.opts.onRetriedError,
    }));
  }

  /** Where a native fetcher can read `digest` from now (after a fetch of it succeeded). */
  async route(digest: string): Promise<BlobRoute | undefined> {
    return this.readers.get(digest)?.route();
  }

  /**
   * A native GET of a blob of this source failed; its fetches come to `fetch` next. Counted as a
   * failed attempt that is retried, as the registry client counts its own (onRetriedError).
   */
  readonly nativeFailed = (f: NativeFetchFailure): void => {
    const reader = this.readers.get(f.digest);
    const err = nativeFetchError(f, reader?.registry ?? 'registry', reader?.redirected);
    if (err) this.opts.onRetriedError?.(err);
  };

  has(digest: string): boolean {
    return this.readers.has(digest);
  }

  /** The fetch function for createRemoteFetcher(). */
  readonly fetch = async (digest: string, offset: number, length: number, kind: FetchKind = 'demand'): Promise<Uint8Array> => {
    const r = this.readers.get(digest);
    if (!r) throw new Error(`${digest}: no registry location known for this blob`);
    this.fetches++;
    try {
      const data = await r.read(offset, length);
      this.fetchedBytes += data.length;
      this.bytesByKind[kind] = (this.bytesByKind[kind] ?? 0) + data.length;
      return data;
    } catch (err) {
      this.failedFetches++;
      throw err;
    }
  };
}
