// `obd deviced` (the process that owns every device) and `obd device attach|detach|ls|stats` (its
// client). Both find the config through --config, else $OBD_CONFIG, else /etc/obd/config.json.
import path from 'node:path';
import { Command } from 'commander';
import { loadConfig, resolveConfigPath } from '../config';
import { DeviceDaemon } from '../device/daemon';
import type { DeviceInfo, DeviceStatsInfo } from '../device/manager';
import type { DeviceClient } from '../device/client';
import type { FetchTotalsInfo } from '../device/fetch-counters';
import { serveUntilSignal } from './until-signal';

export async function runDeviced(configFlag?: string): Promise<void> {
  await serveUntilSignal(configFlag, (cfg, log) => DeviceDaemon.start(cfg, log));
  // Every device is stopped; a lingering client connection must not keep the process alive.
  setTimeout(() => process.exit(process.exitCode ?? 0), 200).unref();
}

async function withClient<T>(opts: { config?: string }, fn: (c: DeviceClient) => Promise<T>): Promise<T> {
  const cfg = loadConfig(resolveConfigPath(opts.config));
  const { DeviceClient: Client } = require('../device/client') as typeof import('../device/client'); // grpc: not for deviced's start
  const client = new Client(cfg.deviceAddress);
  try {
    return await fn(client);
  } finally {
    client.close();
  }
}

function human(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n}${units[i]}`;
}

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  return [head, ...rows].map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd()).join('\n') + '\n';
}

function lsTable(devs: DeviceInfo[]): string {
  return table(
    ['ID', 'DEVICE', 'MODE', 'SIZE', 'TRANSPORT', 'CACHE', 'MOUNTED'],
    devs.map((d) => [d.id, d.path, d.readOnly ? 'ro' : 'rw', human(d.size), d.fusePath ? `${d.transport} (${d.fusePath})` : d.transport, d.cache || '-', d.mountedAt.join(',') || '-']),
  );
}

function statsTable(stats: DeviceStatsInfo[]): string {
  return table(
    ['ID', 'DEVICE', 'READ', 'WRITTEN', 'FETCHED', 'PREFETCHED', 'CACHE HIT/MISS', 'IN-FLIGHT', 'ERRORS'],
    stats.map((s) => [
      s.id,
      s.path,
      human(s.readBytes),
      human(s.writeBytes),
      human(s.fetchedBytes),
      human(s.prefetchedBytes),
      `${s.cacheHits}/${s.cacheMisses}`,
      String(s.inFlight),
      String(s.errors),
    ]),
  );
}

function totalsLine(t: FetchTotalsInfo): string {
  return `deviced total: ${human(t.receivedBytes)} received from registries in ${t.fetches} fetches ` +
    `(demand ${human(t.demandBytes)}, read-ahead ${human(t.readaheadBytes)}, prefetch ${human(t.prefetchBytes)}, ` +
    `background ${human(t.backgroundBytes)}); devices read ${human(t.deviceReadBytes)} (${t.detachedDevices} detached)\n`;
}

export function registerDeviceCommands(program: Command): void {
  const configOpt = ['-c, --config <file>', 'config.json (default: $OBD_CONFIG or /etc/obd/config.json)'] as const;
  program
    .command('deviced')
    .description('serve obd.device.v1: own every block device of this host (fuse-loop or tcmu)')
    .option(...configOpt)
    .action(async (opts: { config?: string }) => runDeviced(opts.config));

  const device = program.command('device').description('attach, detach and inspect devices through deviced');
  device
    .command('attach')
    .description('attach the stack a config.v1.json describes; prints the device path last')
    .argument('<config>', 'config.v1.json (overlaybd schema)')
    .option('--id <id>', 'device id (default: derived from the config path)')
    .option(...configOpt)
    .action(async (configPath: string, opts: { id?: string; config?: string }) => {
      const d = await withClient(opts, (c) => c.attach({ id: opts.id, configPath: path.resolve(configPath) }));
      process.stdout.write(`id ${d.id}\n${d.path}\n`);
    });
  device
    .command('detach')
    .description('detach a device (refused while mounted unless --force)')
    .argument('<device>', 'device id or path')
    .option('--force', 'detach even while mounted: I/O on the mounted filesystem fails afterwards')
    .option(...configOpt)
    .action(async (idOrPath: string, opts: { force?: boolean; config?: string }) => {
      await withClient(opts, (c) => c.detach(idOrPath, !!opts.force));
    });
  device
    .command('ls')
    .description('list attached devices')
    .option('--json', 'machine-readable output')
    .option(...configOpt)
    .action(async (opts: { json?: boolean; config?: string }) => {
      const devs = await withClient(opts, (c) => c.list());
      process.stdout.write(opts.json ? JSON.stringify(devs, null, 2) + '\n' : lsTable(devs));
    });
  device
    .command('stats')
    .description('per-device counters: bytes read/written by the kernel, fetched from the registry, cache, errors')
    .argument('[device]', 'device id or path (default: all)')
    .option('--json', 'machine-readable output')
    .option(...configOpt)
    .action(async (idOrPath: string | undefined, opts: { json?: boolean; config?: string }) => {
      const stats = await withClient(opts, (c) => c.stats(idOrPath ?? ''));
      if (opts.json) {
        process.stdout.write(JSON.stringify(stats, null, 2) + '\n');
        return;
      }
      const t = idOrPath ? undefined : await withClient(opts, (c) => c.totals());
      process.stdout.write(statsTable(stats) + (t ? totalsLine(t) : ''));
    });
}
