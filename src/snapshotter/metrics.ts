// The snapshotter's metrics: every snapshots.v1 call by operation and result, with its latency.
// Served on exporterConfig.address:snapshotterPort (deviced has exporterConfig.port).
import { Counter, Histogram, renderFamilies, SECONDS_BUCKETS } from '../metrics/prometheus';

export class SnapshotMetrics {
  readonly operations = new Counter('obd_snapshot_operations_total', 'snapshots.v1 calls by operation and result (ok or the error kind)');
  readonly seconds = new Histogram('obd_snapshot_operation_duration_seconds', 'time of one snapshots.v1 call, by operation', SECONDS_BUCKETS);

  observe(operation: string, result: string, seconds: number): void {
    this.operations.inc({ operation, result });
    this.seconds.observe({ operation }, seconds);
  }

  render(): string {
    return '# HELP obd_snapshotter_alive 1 while the snapshotter serves\n# TYPE obd_snapshotter_alive gauge\nobd_snapshotter_alive 1\n' + renderFamilies([this.operations, this.seconds]);
  }
}
