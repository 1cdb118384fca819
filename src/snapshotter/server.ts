// The snapshotter process: the unix socket (parent dir created 0700, socket 0600, a stale socket
// replaced only when nothing listens on it), the gRPC server, and an orderly stop.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { ObdConfig } from '../config';
import { Logger } from './log';
import { loadSnapshotsService, snapshotsHandlers } from './service';
import { SnapshotHooks, Snapshotter } from './snapshotter';

function isListening(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ path: socket });
    const done = (v: boolean) => {
      c.destroy();
      resolve(v);
    };
    c.once('connect', () => done(true));
    c.once('error', (err: NodeJS.ErrnoException) => done(err.code !== 'ECONNREFUSED' && err.code !== 'ENOENT'));
    c.setTimeout(1000, () => done(true));
  });
}

/** Makes `address` free to bind: creates its directory, removes a stale socket, refuses a live one. */
export async function prepareSocketPath(address: string, log: Logger): Promise<void> {
  fs.mkdirSync(path.dirname(address), { recursive: true, mode: 0o700 });
  let st: fs.Stats;
  try {
    st = fs.lstatSync(address);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new Error(`address ${address} exists and is not a socket; refusing to replace it`);
  if (await isListening(address)) throw new Error(`address ${address} is in use: another process is serving on it`);
  fs.unlinkSync(address);
  log.log('info', 'removed stale socket', { address });
}

function bind(server: grpc.Server, address: string): Promise<void> {
  const old = process.umask(0o177); // the socket is born 0600
  return new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix:${address}`, grpc.ServerCredentials.createInsecure(), (err) => {
      process.umask(old);
      if (err) reject(new Error(`listen on ${address}: ${err.message}`));
      else resolve();
    });
  }).then(() => fs.chmodSync(address, 0o600));
}

export class SnapshotterServer {
  private stopping?: Promise<void>;
  private socketIno = 0;

  private constructor(
    readonly address: string,
    private readonly server: grpc.Server,
    readonly snapshotter: Snapshotter,
    private readonly log: Logger,
  ) {}

  static async start(cfg: ObdConfig, log: Logger, hooks: SnapshotHooks[] = []): Promise<SnapshotterServer> {
    await prepareSocketPath(cfg.address, log);
    const sn = await Snapshotter.open({
      root: cfg.root,
      allowedLowerPrefixes: cfg.allowedLowerPrefixes,
      asyncRemove: cfg.asyncRemove,
      hooks,
      log,
    });
    const server = new grpc.Server({ 'grpc.max_receive_message_length': 16 << 20 });
    server.addService(loadSnapshotsService(), snapshotsHandlers(sn, log));
    try {
      await bind(server, cfg.address);
    } catch (err) {
      server.forceShutdown();
      await sn.close();
      throw err;
    }
    const s = new SnapshotterServer(cfg.address, server, sn, log);
    s.socketIno = fs.statSync(cfg.address).ino;
    log.log('info', 'obd snapshotter serving', { address: cfg.address, root: cfg.root, rwMode: cfg.rwMode, pid: process.pid });
    return s;
  }

  /** Lets in-flight calls finish (up to `graceMs`), then closes the metadata store and the socket. */
  stop(graceMs = 3000): Promise<void> {
    this.stopping ??= (async () => {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          this.log.log('warn', 'calls still running at shutdown; closing them', { graceMs });
          this.server.forceShutdown();
          resolve();
        }, graceMs);
        this.server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      await this.snapshotter.close();
      try {
        if (fs.statSync(this.address).ino === this.socketIno) fs.unlinkSync(this.address);
      } catch {
        /* already gone */
      }
      this.log.log('info', 'obd snapshotter stopped', { address: this.address });
    })();
    return this.stopping;
  }
}
