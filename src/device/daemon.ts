// The deviced process: recovery, the obd.device.v1 socket (0600), optional metrics, orderly stop.
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import type { ObdConfig } from '../config';
import { bindUnixSocket, prepareSocketPath, shutdownServer } from '../grpc-socket';
import type { Logger } from '../log';
import { type DeviceFdStore, openDeviceFdStore, SystemdFdStore } from './fd-store';
import { chooseTransport, DeviceManager, tcmuHba } from './manager';
import { renderMetrics } from './metrics';
import { DevicedStateMetrics } from './state-metrics';
import { renderFamilies, serveMetrics } from '../metrics/prometheus';
import { RemoteLowers } from './remote';

/** deviced keeps its state next to the snapshotter's: <root>/deviced. */
export function devicedStateDir(cfg: ObdConfig): string {
  return path.join(cfg.root, 'deviced');
}

const ms = (n: number) => Math.round(n);

export class DeviceDaemon {
  private stopping?: Promise<void>;

  private constructor(
    readonly manager: DeviceManager,
    private readonly remote: RemoteLowers,
    private readonly server: grpc.Server,
    private readonly metrics: http.Server | undefined,
    readonly address: string,
    private readonly log: Logger,
    private readonly fdStore: DeviceFdStore,
  ) {}

  static async start(cfg: ObdConfig, log: Logger): Promise<DeviceDaemon> {
    // Start-up timing, logged with "deviced serving": a restart stalls running containers this long.
    const startedMs = ms(process.uptime() * 1000);
    const transport = chooseTransport(cfg.transport, log);
    await prepareSocketPath(cfg.deviceAddress, log);
    const stateMetrics = new DevicedStateMetrics();
    const remote = new RemoteLowers(cfg, log, stateMetrics.onFetchError);
    const stateDir = devicedStateDir(cfg);
    fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
    const fdStore = openDeviceFdStore(stateDir, log);
    const mgr = new DeviceManager(stateDir, transport, log, remote, tcmuHba(cfg.tenant), fdStore, cfg.fuseIoUring, cfg.deviceCache);
    stateMetrics.watch(mgr);
    stateMetrics.watchCache(remote);
    await mgr.recover();
    const recoveredMs = ms(process.uptime() * 1000);
    // gRPC (and its proto loading) only now: the devices are served again before it loads.
    const { Server } = require('@grpc/grpc-js') as typeof grpc;
    const { addDevicesService } = require('./service') as typeof import('./service');
    const server = new Server();
    addDevicesService(server, mgr);
    let metrics: http.Server | undefined;
    try {
      await bindUnixSocket(server, cfg.deviceAddress);
      const ep = cfg.exporterConfig;
      if (ep.enable)
        metrics = await serveMetrics(ep, () => renderMetrics(mgr.stats(), mgr.totals()) + renderFamilies(stateMetrics.families()), 'deviced');
    } catch (err) {
      server.forceShutdown();
      await mgr.closeAll();
      await remote.close();
      fdStore.close();
      throw err;
    }
    log.log('info', 'deviced serving', {
      address: cfg.deviceAddress,
      transport,
      state: mgr.stateDir,
      fdStore: fdStore.kind,
      startMs: startedMs,
      recoveredMs,
      processMs: ms(process.uptime() * 1000),
      metrics: metrics ? `http://${cfg.exporterConfig.address}:${cfg.exporterConfig.port}${cfg.exporterConfig.uriPrefix}` : undefined,
    });
    if (fdStore instanceof SystemdFdStore) fdStore.notify('READY=1');
    return new DeviceDaemon(mgr, remote, server, metrics, cfg.deviceAddress, log, fdStore);
  }

  /** Stops accepting calls, then stops serving every device (their records stay for the next start). */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      // Idle client connections would hold a graceful shutdown open forever: give calls 2 s.
      if (this.fdStore instanceof SystemdFdStore) this.fdStore.notify('STOPPING=1');
      await shutdownServer(this.server, 2000);
      this.metrics?.close();
      await this.manager.closeAll();
      await this.remote.close();
      this.fdStore.close();
      try {
        fs.unlinkSync(this.address);
      } catch {
        // already gone
      }
      this.log.log('info', 'deviced stopped');
    })();
    return this.stopping;
  }
}
