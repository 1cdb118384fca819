// What deviced exports besides the per-device counters: how many devices are in each state, and the
// registry errors of lazy reads by kind — the numbers that say whether a node is healthy.
import fs from 'node:fs';
import path from 'node:path';
import { ComputedGauge, Counter } from '../metrics/prometheus';
import { RegistryError } from '../registry/errors';
import type { DeviceManager } from './manager';

/** "auth", "not_found", "timeout", "network", … from the error's code; "other" for anything else. */
export function registryErrorKind(err: unknown): string {
  if (err instanceof RegistryError) return err.code.replace(/^ERR_REGISTRY_?/, '').toLowerCase() || 'other';
  return 'other';
}

export class DevicedStateMetrics {
  readonly registryErrors = new Counter('obd_registry_errors_total', 'lazy reads that failed after their retries, by kind of registry error');
  private mgr?: DeviceManager;
  private readonly devices = new ComputedGauge(
    'obd_devices',
    'devices by state: in_use (a filesystem on it is mounted), idle (attached, not mounted), missing (recorded as attached but not attached: a re-attach failed)',
    () => (this.mgr ? devicesByState(this.mgr) : []),
  );

  /** The registry client reports each failed lazy read here. */
  readonly onFetchError = (err: unknown): void => this.registryErrors.inc({ kind: registryErrorKind(err) });

  watch(mgr: DeviceManager): void {
    this.mgr = mgr;
  }

  families(): Array<{ render(): string[] }> {
    return [this.devices, this.registryErrors];
  }
}

function devicesByState(mgr: DeviceManager): Array<{ labels: Record<string, string>; value: number }> {
  const attached = mgr.list();
  const inUse = attached.filter((d) => d.mountedAt.length > 0).length;
  const ids = new Set(attached.map((d) => d.id));
  let recorded: string[] = [];
  try {
    recorded = fs.readdirSync(mgr.devicesDir).filter((id) => fs.existsSync(path.join(mgr.devicesDir, id, 'attachment.json')));
  } catch {
    // no state dir yet
  }
  const missing = recorded.filter((id) => !ids.has(id)).length;
  return [
    { labels: { state: 'in_use' }, value: inUse },
    { labels: { state: 'idle' }, value: attached.length - inUse },
    { labels: { state: 'missing' }, value: missing },
  ];
}
