// The snapshotter process: the unix socket (see grpc-socket.ts), the gRPC server, and an orderly stop.
import fs from 'node:fs';
import type { Server } from 'node:http';
import type net from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { ObdConfig } from '../config';
import { bindUnixSocket, prepareSocketPath, serveInheritedListener, shutdownServer, takeInheritedListener } from '../grpc-socket';
import { Logger } from '../log';
import { serveMetrics } from '../metrics/prometheus';
import { SnapshotMetrics } from './metrics';
import { loadSnapshotsService, snapshotsHandlers } from './service';
import { SnapshotHooks, Snapshotter } from './snapshotter';

export class SnapshotterServer {
  private stopping?: Promise<void>;
  private socketIno = 0;

  private constructor(
    readonly address: string,
    private readonly server: grpc.Server,
    readonly snapshotter: Snapshotter,
    private readonly log: Logger,
    private readonly metricsServer?: Server,
    private readonly inherited?: net.Server,
  ) {}

  static async start(cfg: ObdConfig, log: Logger, hooks: SnapshotHooks[] = []): Promise<SnapshotterServer> {
    // Socket activation (obd-snapshotter.socket): the socket stays up across our restarts.
    const inheritedFd = takeInheritedListener();
    if (inheritedFd === undefined) await prepareSocketPath(cfg.address, log);
    const sn = await Snapshotter.open({
      root: cfg.root,
      allowedLowerPrefixes: cfg.allowedLowerPrefixes,
      asyncRemove: cfg.asyncRemove,
      hooks,
      log,
    });
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 << 20 });
    const metrics = new SnapshotMetrics();
    server.addService(loadSnapshotsService(), snapshotsHandlers(sn, log, metrics));
    const ep = cfg.exporterConfig;
    let http: Server | undefined;
    let inherited: net.Server | undefined;
    try {
      if (inheritedFd !== undefined) inherited = await serveInheritedListener(server, inheritedFd);
      else await bindUnixSocket(server, cfg.address);
      if (ep.enable) http = await serveMetrics({ ...ep, port: ep.snapshotterPort }, () => metrics.render(), 'snapshotter');
    } catch (err) {
      server.forceShutdown();
      await sn.close();
      throw err;
    }
    const s = new SnapshotterServer(cfg.address, server, sn, log, http, inherited);
    if (!inherited) s.socketIno = fs.statSync(cfg.address).ino;
    log.log('info', 'obd snapshotter serving', {
      address: cfg.address,
      root: cfg.root,
      rwMode: cfg.rwMode,
      pid: process.pid,
      socket: inherited ? 'inherited (socket activation)' : 'own',
      metrics: http ? `http://${ep.address}:${ep.snapshotterPort}${ep.uriPrefix}` : undefined,
    });
    return s;
  }

  /** Lets in-flight calls finish (up to `graceMs`), then closes the metadata store and the socket. */
  stop(graceMs = 3000): Promise<void> {
    this.stopping ??= (async () => {
      // An inherited socket is no longer accepted from here on; new connections wait for our successor.
      this.inherited?.close();
      await shutdownServer(this.server, graceMs, () =>
        this.log.log('warn', 'calls still running at shutdown; closing them', { graceMs }),
      );
      this.metricsServer?.close();
      await this.snapshotter.close();
      try {
        if (!this.inherited && fs.statSync(this.address).ino === this.socketIno) fs.unlinkSync(this.address);
      } catch {
        /* already gone */
      }
      this.log.log('info', 'obd snapshotter stopped', { address: this.address });
    })();
    return this.stopping;
  }
}
