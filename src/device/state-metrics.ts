// What deviced exports besides the per-device counters: how many devices are in each state, and the
// registry errors of lazy reads by kind, and the block cache's figures — the numbers that say whether
// a node is healthy.
import fs from 'node:fs';
import path from 'node:path';
import { ComputedGauge, Counter } from '../metrics/prometheus';
import {
  isTransportError, RegistryAbortError, RegistryDigestMismatchError, RegistryError, RegistryNetworkError, RegistryNotFoundError,
  RegistryProtocolError, RegistrySizeMismatchError, RegistryTimeoutError,
} from '../registry/errors';
import { cacheFamilies } from './cache-metrics';
import type { DeviceManager } from './manager';
import type { RemoteLowers } from './remote';

/**
 * What went wrong in one registry request, as an operator asks it: "401", "403", "404", "429",
 * "5xx", "4xx" (another client error), "timeout", "reset" (connection reset or closed early),
 * "network" (refused, unreachable, DNS), "digest_mismatch", "size_mismatch", "protocol" (an answer
 * that does not fit the request), "aborted", or "other".
 */
export function registryErrorKind(err: unknown): string {
  // A read that ran out of time after failed attempts: the attempt's own failure says more.
  const e = err instanceof RegistryTimeoutError && err.cause instanceof RegistryError ? err.cause : err;
  if (e instanceof RegistryDigestMismatchError) return 'digest_mismatch';
  if (e instanceof RegistrySizeMismatchError) return 'size_mismatch';
  if (e instanceof RegistryTimeoutError || isTimeout(e)) return 'timeout';
  if (e instanceof RegistryAbortError) return 'aborted';
  const status = e instanceof RegistryError ? e.status : undefined;
  if (status === 401 || status === 403 || status === 404 || status === 429) return String(status);
  if (status !== undefined && status >= 500) return '5xx';
  if (e instanceof RegistryNotFoundError) return '404';
  if (status !== undefined && status >= 400) return '4xx';
  if (e instanceof RegistryProtocolError) return 'protocol';
  if (e instanceof RegistryNetworkError || isTransportError(e)) return isReset(e) ? 'reset' : 'network';
  return 'other';
}

const RESET_CODES = new Set(['ECONNRESET', 'EPIPE', 'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH']);
const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

function codes(err: unknown): string[] {
  const e = err as { code?: string; name?: string; cause?: { code?: string; name?: string } } | undefined;
  return [e?.code, e?.name, e?.cause?.code, e?.cause?.name].filter((c): c is string => !!c);
}
function isReset(err: unknown): boolean {
  return codes(err).some((c) => RESET_CODES.has(c));
}
function isTimeout(err: unknown): boolean {
  return codes(err).some((c) => TIMEOUT_CODES.has(c) || c === 'TimeoutError');
}

export class DevicedStateMetrics {
  readonly registryErrors = new Counter('obd_registry_errors_total', 'failed registry requests of lazy reads (retried ones too), by kind');
  private mgr?: DeviceManager;
  private readonly devices = new ComputedGauge(
    'obd_devices',
    'devices by state: in_use (a filesystem on it is mounted), idle (attached, not mounted), missing (recorded as attached but not attached: a re-attach failed)',
    () => (this.mgr ? devicesByState(this.mgr) : []),
  );

  /** Each failed registry request of a lazy read is reported here (a retry that succeeds counts too). */
  readonly onFetchError = (err: unknown): void => this.registryErrors.inc({ kind: registryErrorKind(err) });

  private remote?: RemoteLowers;
  private cache: Array<{ render(): string[] }> = [];
  private countedVerifyFailures = 0;

  watch(mgr: DeviceManager): void {
    this.mgr = mgr;
  }

  watchCache(remote: RemoteLowers): void {
    this.remote = remote;
    this.cache = cacheFamilies(remote);
  }

  families(): Array<{ render(): string[] }> {
    // The block cache checks a blob's sha256 once all of it arrived: a mismatch is the registry's.
    const failures = this.remote?.cacheStats().verifyFailures ?? 0;
    if (failures > this.countedVerifyFailures) this.registryErrors.inc({ kind: 'digest_mismatch' }, failures - this.countedVerifyFailures);
    this.countedVerifyFailures = failures;
    return [this.devices, this.registryErrors, ...this.cache];
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
