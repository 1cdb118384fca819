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

  /**
   * Serves first, then opens: the socket accepts (and answers gRPC's handshake) before the slow part
   * of start-up — loading the image hooks (`makeHooks`: the registry client, the device client) and
   * opening the metadata store — and calls wait for that. containerd's proxy client gives up on a
   * connection whose handshake takes longer than about a second, less than a whole start.
   */
  static async start(cfg: ObdConfig, log: Logger, makeHooks: () => SnapshotHooks[] = () => []): Promise<SnapshotterServer> {
    const t0 = process.hrtime.bigint();
    const since = () => Math.round(Number(process.hrtime.bigint() - t0) / 1e6);
    // Socket activation (obd-snapshotter.socket): the socket stays up across our restarts.
    const inheritedFd = takeInheritedListener();
    if (inheritedFd === undefined) await prepareSocketPath(cfg.address, log);
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 << 20 });
    const metrics = new SnapshotMetrics();
    let opened!: (sn: Snapshotter) => void;
    let failed!: (err: unknown) => void;
    const opening = new Promise<Snapshotter>((resolve, reject) => ((opened = resolve), (failed = reject)));
    opening.catch(() => {}); // calls waiting on it see the error; nothing else does
    server.addService(loadSnapshotsService(), snapshotsHandlers(opening, log, metrics));
    let inherited: net.Server | undefined;
    if (inheritedFd !== undefined) inherited = await serveInheritedListener(server, inheritedFd);
    else await bindUnixSocket(server, cfg.address);
    const socketIno = inherited ? 0 : fs.statSync(cfg.address).ino;
    const acceptingMs = since();
    const ep = cfg.exporterConfig;
    let sn: Snapshotter | undefined;
    let http: Server | undefined;
    try {
      sn = await Snapshotter.open({
        root: cfg.root,
        allowedLowerPrefixes: cfg.allowedLowerPrefixes,
        asyncRemove: cfg.asyncRemove,
        hooks: makeHooks(),
        log,
      });
      opened(sn);
      if (ep.enable) http = await serveMetrics({ ...ep, port: ep.snapshotterPort }, () => metrics.render(), 'snapshotter');
    } catch (err) {
      failed(err);
      server.forceShutdown();
      inherited?.close();
      await sn?.close();
      if (!inherited) removeSocketIfOurs(cfg.address, socketIno);
      throw err;
    }
    const s = new SnapshotterServer(cfg.address, server, sn, log, http, inherited);
    s.socketIno = socketIno;
    log.log('info', 'obd snapshotter serving', {
      address: cfg.address,
      root: cfg.root,
      rwMode: cfg.rwMode,
      pid: process.pid,
      socket: inherited ? 'inherited (socket activation)' : 'own',
      metrics: http ? `http://${ep.address}:${ep.snapshotterPort}${ep.uriPrefix}` : undefined,
      acceptingMs,
      readyMs: since(),
      processMs: Math.round(process.uptime() * 1000),
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
      if (!this.inherited) removeSocketIfOurs(this.address, this.socketIno);
      this.log.log('info', 'obd snapshotter stopped', { address: this.address });
    })();
    return this.stopping;
  }
}

/** Unlinks our own socket file (not one a successor has bound meanwhile). */
function removeSocketIfOurs(address: string, ino: number): void {
  try {
    if (fs.statSync(address).ino === ino) fs.unlinkSync(address);
  } catch {
    /* already gone */
  }
}
