// `obd doctor`: everything a node needs before obd can serve containerd, checked in the order an
// operator fixes things — the config, the kernel, the transport, containerd's config, the running
// processes, the disk. It changes nothing except what deviced's own start would (loading modules).
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as addon from '../addon';
import { ConfigError, loadConfig, type ObdConfig } from '../config';
import { decideTransport } from '../device/manager';
import { DeviceClient } from '../device/client';
import { containerdConfigChecks } from './containerd-config';
import { kernelChecks } from './kernel-features';
import { report, type Check, type DoctorReport } from './report';

export interface DoctorOptions {
  configPath: string;
  containerdConfig: string;
  containerdAddress: string;
  /** Where /proc and /sys are read ("/" on a node). */
  sysRoot?: string;
  /** The TCMU probe deviced uses; tests on a captured tree replace it. */
  tcmu?: () => addon.TcmuSupport;
}

const GiB = 2 ** 30;

export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  const checks: Check[] = [];
  let cfg: ObdConfig;
  try {
    cfg = loadConfig(o.configPath);
    checks.push({ name: 'config', status: 'ok', detail: `${o.configPath} is valid` });
  } catch (err) {
    const why = err instanceof ConfigError ? err.message : String(err);
    checks.push({ name: 'config', status: 'blocker', detail: `${why}; the checks that depend on the config were skipped` });
    return report(checks);
  }
  const transport = decideTransport(cfg.transport, o.tcmu ?? (() => addon.tcmuSupported(true)));
  checks.push(...kernelChecks({ root: o.sysRoot ?? '/' }, { fuseLoop: transport.transport !== 'tcmu', fuseIoUring: cfg.fuseIoUring }));
  checks.push(transportCheck(cfg, transport));
  if (transport.transport === 'fuse-loop') checks.push(deviceCacheCheck(cfg));
  checks.push(...containerdConfigChecks(o.containerdConfig, cfg.address));
  checks.push(await socketCheck('socket: containerd', o.containerdAddress, 'containerd is not running or listens elsewhere (--containerd-address)'));
  checks.push(await socketCheck('socket: snapshotter', cfg.address, 'start `obd snapshotter` (obd-snapshotter.service)'));
  checks.push(await devicedCheck(cfg));
  checks.push(dirCheck('state: root', cfg.root));
  checks.push(...cacheChecks(cfg));
  return report(checks);
}

function transportCheck(cfg: ObdConfig, d: ReturnType<typeof decideTransport>): Check {
  const name = 'transport';
  if (!d.transport) return { name, status: 'blocker', detail: d.reason };
  if (cfg.transport === 'auto')
    return { name, status: 'ok', detail: `auto picks ${d.transport}: ${d.transport === 'tcmu' ? d.reason : `tcmu is not usable (${d.reason})`}` };
  return { name, status: 'ok', detail: `${d.transport} (configured)` };
}

/** The cache mode new fuse-loop devices get (config deviceCache); `obd device ls` shows each device's. */
function deviceCacheCheck(cfg: ObdConfig): Check {
  const how = {
    auto: 'page-cached when all lowers are local, direct I/O for lazy (registry-backed) devices',
    page: 'page-cached',
    direct: 'direct I/O',
  }[cfg.deviceCache];
  return { name: 'device cache', status: 'ok', detail: `deviceCache ${cfg.deviceCache}: new fuse-loop devices are ${how}` };
}

function socketCheck(name: string, address: string, hint: string): Promise<Check> {
  return new Promise((resolve) => {
    const c = net.connect({ path: address });
    const done = (check: Check) => {
      c.destroy();
      resolve(check);
    };
    c.once('connect', () => done({ name, status: 'ok', detail: `${address} accepts connections` }));
    c.once('error', (err: NodeJS.ErrnoException) => done({ name, status: 'blocker', detail: `${address}: ${err.code ?? err.message}; ${hint}` }));
    c.setTimeout(3000, () => done({ name, status: 'blocker', detail: `${address}: no answer in 3 s; ${hint}` }));
  });
}

async function devicedCheck(cfg: ObdConfig): Promise<Check> {
  const name = 'socket: deviced';
  const client = new DeviceClient(cfg.deviceAddress);
  try {
    const devices = await client.list(5000);
    return { name, status: 'ok', detail: `${cfg.deviceAddress} answers; ${devices.length} device(s) attached` };
  } catch (err) {
    return { name, status: 'blocker', detail: `${(err as Error).message}; start \`obd deviced\` (obd-deviced.service)` };
  } finally {
    client.close();
  }
}

/** The directory, or the nearest existing ancestor it would be created under. */
function existingBase(dir: string): string {
  let d = path.resolve(dir);
  while (!fs.existsSync(d) && path.dirname(d) !== d) d = path.dirname(d);
  return d;
}

function dirCheck(name: string, dir: string): Check {
  const base = existingBase(dir);
  try {
    if (!fs.statSync(base).isDirectory()) return { name, status: 'blocker', detail: `${dir} cannot be created: ${base} is not a directory` };
    fs.accessSync(base, fs.constants.W_OK | fs.constants.X_OK);
  } catch (err) {
    return { name, status: 'blocker', detail: `${dir} is not usable: ${(err as Error).message}` };
  }
  return { name, status: 'ok', detail: base === path.resolve(dir) ? `${dir} is writable` : `${dir} will be created under ${base}` };
}

function cacheChecks(cfg: ObdConfig): Check[] {
  const dir = cfg.cacheConfig.cacheDir;
  const usable = dirCheck('cache: directory', dir);
  if (usable.status === 'blocker') return [usable];
  const st = fs.statfsSync(existingBase(dir));
  const free = st.bavail * st.bsize;
  const limit = cfg.cacheConfig.cacheSizeGB * GiB;
  const gb = (n: number) => `${(n / GiB).toFixed(1)} GiB`;
  const space: Check =
    free >= limit
      ? { name: 'cache: free space', status: 'ok', detail: `${gb(free)} free for a cache of up to ${gb(limit)}` }
      : {
          name: 'cache: free space',
          status: 'warn',
          detail: `${gb(free)} free but cacheSizeGB allows ${gb(limit)}: the disk fills before the cache evicts; lower cacheConfig.cacheSizeGB or move cacheConfig.cacheDir`,
        };
  return [usable, space];
}
