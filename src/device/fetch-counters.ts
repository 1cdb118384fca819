// deviced-wide, cumulative counters of what the registry delivered: they live as long as deviced,
// so they still hold the bytes of devices that are gone (`ctr run --rm`). `receivedBytes` counts
// every body byte from the network (also retried, failed and cut-short requests) and matches what a
// proxy in front of the registry counts; the per-kind bytes are what fetches delivered.
import type { FetchKind } from '../addon';
import type { DevicedTotals } from './manager';

export const FETCH_KINDS: FetchKind[] = ['demand', 'readahead', 'prefetch', 'background'];
/** Upper bounds (seconds) of the fetch latency histogram buckets. */
export const FETCH_SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];

export interface FetchTotals {
  receivedBytes: number;
  fetches: number;
  failedFetches: number;
  bytes: Record<FetchKind, number>;
  /** histogram of fetch durations: counts per FETCH_SECONDS_BUCKETS bound (cumulative), sum, count */
  seconds: { buckets: number[]; sum: number; count: number };
  linkBytesPerSec: number;
}

export class FetchCounters {
  fetches = 0;
  failedFetches = 0;
  readonly bytes: Record<FetchKind, number> = { demand: 0, readahead: 0, prefetch: 0, background: 0 };
  private readonly bucketCounts = FETCH_SECONDS_BUCKETS.map(() => 0);
  private secondsSum = 0;

  /** Wraps one fetch: counts it, its bytes by kind, its duration, its failure. */
  async time<T extends Uint8Array>(kind: FetchKind, run: () => Promise<T>): Promise<T> {
    const t0 = process.hrtime.bigint();
    this.fetches++;
    try {
      const data = await run();
      this.bytes[kind] += data.length;
      return data;
    } catch (err) {
      this.failedFetches++;
      throw err;
    } finally {
      const s = Number(process.hrtime.bigint() - t0) / 1e9;
      this.secondsSum += s;
      FETCH_SECONDS_BUCKETS.forEach((b, i) => {
        if (s <= b) this.bucketCounts[i]++;
      });
    }
  }

  totals(receivedBytes: number, linkBytesPerSec: number): FetchTotals {
    return {
      receivedBytes,
      fetches: this.fetches,
      failedFetches: this.failedFetches,
      bytes: { ...this.bytes },
      seconds: { buckets: [...this.bucketCounts], sum: this.secondsSum, count: this.fetches },
      linkBytesPerSec,
    };
  }
}

/** StatsResponse.totals on the wire (proto FetchTotals): deviced-wide, cumulative. */
export interface FetchTotalsInfo {
  receivedBytes: number;
  fetches: number;
  failedFetches: number;
  demandBytes: number;
  readaheadBytes: number;
  prefetchBytes: number;
  backgroundBytes: number;
  deviceReadBytes: number;
  deviceFetchedBytes: number;
  detachedDevices: number;
  linkBytesPerSec: number;
}

export function totalsMessage(t: DevicedTotals): FetchTotalsInfo {
  return {
    receivedBytes: t.receivedBytes, fetches: t.fetches, failedFetches: t.failedFetches,
    demandBytes: t.bytes.demand, readaheadBytes: t.bytes.readahead, prefetchBytes: t.bytes.prefetch, backgroundBytes: t.bytes.background,
    deviceReadBytes: t.deviceReadBytes, deviceFetchedBytes: t.deviceFetchedBytes, detachedDevices: t.detachedDevices,
    linkBytesPerSec: t.linkBytesPerSec,
  };
}
