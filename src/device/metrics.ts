// Prometheus text exposition (format 0.0.4) of the per-device counters; deviced serves them with
// serveMetrics (metrics/prometheus.ts) on exporterConfig.address:port at exporterConfig.uriPrefix.
import type { DeviceStatsInfo, DevicedTotals } from './manager';
import { FETCH_KINDS, FETCH_SECONDS_BUCKETS } from './fetch-counters';

type Key = keyof Omit<DeviceStatsInfo, 'id' | 'path'>;

const SERIES: Array<{ name: string; key: Key; type: 'counter' | 'gauge'; help: string }> = [
  { name: 'obd_device_read_ops_total', key: 'readOps', type: 'counter', help: 'read requests from the kernel' },
  { name: 'obd_device_read_bytes_total', key: 'readBytes', type: 'counter', help: 'bytes read by the kernel' },
  { name: 'obd_device_write_ops_total', key: 'writeOps', type: 'counter', help: 'write requests from the kernel' },
  { name: 'obd_device_write_bytes_total', key: 'writeBytes', type: 'counter', help: 'bytes written by the kernel' },
  { name: 'obd_device_discard_bytes_total', key: 'discardBytes', type: 'counter', help: 'bytes discarded by the kernel' },
  { name: 'obd_device_flush_ops_total', key: 'flushOps', type: 'counter', help: 'flushes (fsync) from the kernel' },
  { name: 'obd_device_coalesced_reads_total', key: 'coalescedReads', type: 'counter', help: 'reads served by an in-flight read' },
  { name: 'obd_device_in_flight', key: 'inFlight', type: 'gauge', help: 'requests being served now' },
  { name: 'obd_device_errors_total', key: 'errors', type: 'counter', help: 'requests answered with an error' },
  { name: 'obd_device_fetched_bytes_total', key: 'fetchedBytes', type: 'counter', help: 'bytes fetched from the registry' },
  { name: 'obd_device_cache_hits_total', key: 'cacheHits', type: 'counter', help: 'block cache hits' },
  { name: 'obd_device_cache_misses_total', key: 'cacheMisses', type: 'counter', help: 'block cache misses' },
];

function label(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** deviced-wide series: cumulative since deviced started, so detached devices still count. */
function renderTotals(t: DevicedTotals): string[] {
  const one = (name: string, type: string, help: string, v: number) => [`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name} ${v}`];
  const out = [
    ...one('obd_fetch_received_bytes_total', 'counter', 'every body byte received from registries, also of retried or failed requests', t.receivedBytes),
    ...one('obd_fetch_requests_total', 'counter', 'fetches of blob ranges', t.fetches),
    ...one('obd_fetch_failures_total', 'counter', 'fetches that failed after their retries', t.failedFetches),
    ...one('obd_link_bytes_per_second', 'gauge', 'registry link throughput measured over the last seconds with fetches in flight', t.linkBytesPerSec),
    ...one('obd_devices_read_bytes_total', 'counter', 'bytes read by the kernel from every device since deviced started', t.deviceReadBytes),
    ...one('obd_devices_fetched_bytes_total', 'counter', 'bytes fetched on behalf of every device since deviced started', t.deviceFetchedBytes),
    '# HELP obd_fetch_bytes_total bytes delivered by fetches, by kind (demand, readahead, prefetch, background)',
    '# TYPE obd_fetch_bytes_total counter',
    ...FETCH_KINDS.map((k) => `obd_fetch_bytes_total{kind="${k}"} ${t.bytes[k]}`),
    '# HELP obd_fetch_duration_seconds time of one fetch including retries',
    '# TYPE obd_fetch_duration_seconds histogram',
  ];
  FETCH_SECONDS_BUCKETS.forEach((b, i) => out.push(`obd_fetch_duration_seconds_bucket{le="${b}"} ${t.seconds.buckets[i] ?? 0}`));
  out.push(`obd_fetch_duration_seconds_bucket{le="+Inf"} ${t.seconds.count}`, `obd_fetch_duration_seconds_sum ${t.seconds.sum}`,
    `obd_fetch_duration_seconds_count ${t.seconds.count}`);
  return out;
}

export function renderMetrics(stats: DeviceStatsInfo[], totals?: DevicedTotals): string {
  const out: string[] = [
    '# HELP obd_deviced_alive 1 while deviced serves',
    '# TYPE obd_deviced_alive gauge',
    'obd_deviced_alive 1',
    '# HELP obd_deviced_devices attached devices',
    '# TYPE obd_deviced_devices gauge',
    `obd_deviced_devices ${stats.length}`,
  ];
  for (const s of SERIES) {
    out.push(`# HELP ${s.name} ${s.help}`, `# TYPE ${s.name} ${s.type}`);
    for (const d of stats) out.push(`${s.name}{device="${label(d.id)}",path="${label(d.path)}"} ${d[s.key]}`);
  }
  if (totals) out.push(...renderTotals(totals));
  return out.join('\n') + '\n';
}
