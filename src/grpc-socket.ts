// Serving gRPC on a unix socket, shared by the snapshotter and deviced: the parent directory is
// created 0700, the socket is born 0600 (root only), a stale socket is replaced only when nothing
// listens on it, and a stop lets in-flight calls finish for a grace period before closing them.
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import type { Logger } from './log';

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

const held = new Map<string, net.Server>();

/**
 * Takes the lock of `address` for this process's lifetime: a unix socket in the abstract namespace,
 * named after the address. The kernel frees it when the process dies (no stale lock after kill -9),
 * and binding it is atomic, so of two instances started at once exactly one goes on to touch the
 * socket file and the other fails here.
 */
function lockAddress(address: string): Promise<void> {
  const name = `\0obd-lock-${crypto.createHash('sha256').update(path.resolve(address)).digest('hex').slice(0, 32)}`;
  if (held.has(name)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const lock = net.createServer();
    lock.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(err.code === 'EADDRINUSE' ? `address ${address} is in use: another instance holds its lock` : `lock for ${address}: ${err.message}`)),
    );
    lock.listen({ path: name }, () => {
      lock.unref();
      held.set(name, lock);
      resolve();
    });
  });
}

/** Makes `address` free to bind: takes its lock, creates its directory, removes a stale socket, refuses a live one. */
export async function prepareSocketPath(address: string, log: Logger): Promise<void> {
  await lockAddress(address);
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

/** Credentials of a local socket. grpc-js is loaded here, not at import: prepareSocketPath runs before it is needed. */
function insecure(): grpc.ServerCredentials {
  return (require('@grpc/grpc-js') as typeof grpc).ServerCredentials.createInsecure();
}

/** Binds `server` to the unix socket `address`, created 0600. */
export function bindUnixSocket(server: grpc.Server, address: string): Promise<void> {
  const old = process.umask(0o177); // the socket is born 0600
  return new Promise<void>((resolve, reject) => {
    server.bindAsync(`unix:${address}`, insecure(), (err) => {
      process.umask(old);
      if (err) reject(new Error(`listen on ${address}: ${err.message}`));
      else resolve();
    });
  }).then(() => fs.chmodSync(address, 0o600));
}

/**
 * The listening socket systemd passed us (socket activation: $LISTEN_FDS, $LISTEN_PID, fds from 3),
 * taken once; undefined when we were not socket-activated.
 */
export function takeInheritedListener(): number | undefined {
  const count = Number(process.env.LISTEN_FDS ?? 0);
  const mine = Number(process.env.LISTEN_PID) === process.pid;
  delete process.env.LISTEN_FDS;
  delete process.env.LISTEN_PID;
  delete process.env.LISTEN_FDNAMES;
  return mine && count >= 1 ? 3 : undefined;
}

/**
 * Serves `server` on an inherited listening socket. The socket outlives us (systemd keeps a copy), so
 * while we restart connections wait in its backlog instead of being refused. Close the returned
 * net.Server to stop accepting; never unlink the socket file.
 */
export function serveInheritedListener(server: grpc.Server, fd: number): Promise<net.Server> {
  const injector = server.createConnectionInjector(insecure());
  const listener = net.createServer((sock) => injector.injectConnection(sock));
  return new Promise((resolve, reject) => {
    listener.once('error', (err) => reject(new Error(`inherited socket (fd ${fd}): ${err.message}`)));
    listener.listen({ fd }, () => resolve(listener));
  });
}

/**
 * Stops accepting calls and waits up to `graceMs` for running ones (idle client connections would
 * hold a graceful shutdown open forever), then closes what is left; `onForce` runs just before.
 */
export function shutdownServer(server: grpc.Server, graceMs: number, onForce?: () => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      onForce?.();
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
