// The block cache of remote layers on /metrics: its bound and use, reads answered from it or not
// (every device since deviced started), evictions, and what it could not keep.
import { ComputedCounter, ComputedGauge } from '../metrics/prometheus';
import type { RemoteLowers } from './remote';

export function cacheFamilies(remote: RemoteLowers): Array<{ render(): string[] }> {
  const one = (pick: (s: NonNullable<ReturnType<RemoteLowers['cacheStats']>>) => number) => () => [{ labels: {}, value: pick(remote.cacheStats()) }];
  const reads = () => remote.cacheReads();
  return [
    new ComputedGauge('obd_cache_capacity_bytes', 'bound of the whole cache: block cache and verified blobs (cacheConfig.cacheSizeGB)',
      () => [{ labels: {}, value: remote.cacheCapacityBytes }]),
    new ComputedGauge('obd_cache_used_bytes', 'bytes of remote layers held in the block cache (every registry location) and as verified blobs',
      one((s) => s.usedBytes + remote.verifiedBytes())),
    new ComputedGauge('obd_cache_verified_bytes', 'bytes of whole blobs whose sha256 was checked, read as local files (at most half the bound unless in use)',
      () => [{ labels: {}, value: remote.verifiedBytes() }]),
    new ComputedGauge('obd_cache_blobs', 'blobs with an entry in the block cache', one((s) => s.blobs)),
    new ComputedGauge('obd_cache_open_blobs', 'cache entries an attached device reads (their files are open)', one((s) => s.openBlobs)),
    new ComputedCounter('obd_cache_hits_total', 'reads of remote layers answered without waiting for the registry', () => [{ labels: {}, value: reads().hits }]),
    new ComputedCounter('obd_cache_misses_total', 'reads of remote layers that waited for a fetch', () => [{ labels: {}, value: reads().reads - reads().hits }]),
    new ComputedCounter('obd_cache_evictions_total', 'refill units evicted, least recently used first, to stay within the bound or the disk-free floor',
      one((s) => s.evictedUnits)),
    new ComputedCounter('obd_cache_written_units_total', 'refill units written into the block cache', one((s) => s.writtenUnits)),
    new ComputedCounter('obd_cache_skipped_units_total', 'refill units not cached because the disk was below its free-space floor', one((s) => s.skippedForSpace)),
    new ComputedCounter('obd_cache_write_errors_total', 'block cache writes that failed (the read itself was answered)', one((s) => s.writeErrors)),
  ];
}
