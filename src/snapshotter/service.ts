// containerd.services.snapshots.v1.Snapshots over gRPC: decodes requests, calls the Snapshotter,
// encodes answers. Error kinds become gRPC codes here, once (containerd's errdefs.ToGRPC table).
import * as grpc from '@grpc/grpc-js';
import { grpcStatusOf } from '../grpc-status';
import { SnapshotError } from './errors';
import { Logger } from '../log';
import { loadProto } from '../proto';
import type { SnapshotMetrics } from './metrics';
import { Info, Kind, Mount, Snapshotter } from './snapshotter';

const SNAPSHOTS_PROTO = 'containerd/services/snapshots/v1/snapshots.proto';

export function loadSnapshotsService(): grpc.ServiceDefinition {
  const pkg = loadProto(SNAPSHOTS_PROTO, { keepCase: true, longs: String, enums: String, defaults: true }) as unknown as {
    containerd: { services: { snapshots: { v1: { Snapshots: grpc.ServiceClientConstructor } } } };
  };
  return pkg.containerd.services.snapshots.v1.Snapshots.service;
}

export function toServiceError(err: unknown): grpc.ServiceError {
  const e = err instanceof Error ? err : new Error(String(err));
  const code = err instanceof SnapshotError ? grpcStatusOf(err, grpc.status.UNKNOWN) : grpc.status.UNKNOWN;
  return Object.assign(new Error(e.message), { code, details: e.message, metadata: new grpc.Metadata() });
}

interface Timestamp {
  seconds: string;
  nanos: number;
}

const KIND_ENUM: Record<Kind, string> = { view: 'VIEW', active: 'ACTIVE', committed: 'COMMITTED' };

function timestamp(ns: bigint): Timestamp {
  return { seconds: (ns / 1_000_000_000n).toString(), nanos: Number(ns % 1_000_000_000n) };
}

export function encodeInfo(i: Info): Record<string, unknown> {
  return {
    name: i.name,
    parent: i.parent,
    kind: KIND_ENUM[i.kind],
    created_at: timestamp(i.created),
    updated_at: timestamp(i.updated),
    labels: i.labels,
  };
}

function encodeMounts(mounts: Mount[]): Record<string, unknown> {
  return { mounts: mounts.map((m) => ({ type: m.type, source: m.source, target: m.target ?? '', options: m.options })) };
}

type Req = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Wraps one unary handler: logging, timing and the single error mapping. */
function unary(
  name: string,
  log: Logger,
  fn: (req: Req) => Promise<unknown>,
  metrics?: SnapshotMetrics,
): grpc.handleUnaryCall<Req, unknown> {
  return (call, callback) => {
    const t0 = process.hrtime.bigint();
    const seconds = () => Number(process.hrtime.bigint() - t0) / 1e9;
    fn(call.request).then(
      (res) => {
        metrics?.observe(name, 'ok', seconds());
        callback(null, res);
      },
      (err: unknown) => {
        const clientError = err instanceof SnapshotError;
        metrics?.observe(name, clientError ? err.kind : 'Unknown', seconds());
        log.log(clientError ? 'debug' : 'error', `${name} failed`, {
          key: call.request?.key,
          code: clientError ? err.kind : 'Unknown',
          err: (err as Error)?.message,
          ms: Number(process.hrtime.bigint() - t0) / 1e6,
        });
        callback(toServiceError(err));
      },
    );
  };
}

const LIST_BATCH = 100;

/**
 * The service's handlers. `opened` may still be pending: a server accepting connections early (while
 * the snapshotter opens) holds each call until it resolves.
 */
export function snapshotsHandlers(
  opened: Snapshotter | Promise<Snapshotter>,
  log: Logger,
  metrics?: SnapshotMetrics,
): grpc.UntypedServiceImplementation {
  const ready = Promise.resolve(opened);
  const u = (name: string, fn: (sn: Snapshotter, req: Req) => Promise<unknown>) => unary(name, log, async (r) => fn(await ready, r), metrics);
  return {
    Prepare: u('Prepare', async (sn, r) => encodeMounts(await sn.prepare(r.key, r.parent, r.labels ?? {}))),
    View: u('View', async (sn, r) => encodeMounts(await sn.view(r.key, r.parent, r.labels ?? {}))),
    Mounts: u('Mounts', async (sn, r) => encodeMounts(await sn.mounts(r.key))),
    Commit: u('Commit', async (sn, r) => {
      await sn.commit(r.name, r.key, r.labels ?? {});
      return {};
    }),
    Remove: u('Remove', async (sn, r) => {
      await sn.remove(r.key);
      return {};
    }),
    Stat: u('Stat', async (sn, r) => ({ info: encodeInfo(await sn.stat(r.key)) })),
    Update: u('Update', async (sn, r) => {
      const info = r.info ?? {};
      const paths: string[] = r.update_mask?.paths ?? [];
      return { info: encodeInfo(await sn.update({ name: info.name ?? '', labels: info.labels ?? {} }, paths)) };
    }),
    Usage: u('Usage', async (sn, r) => {
      const u = await sn.usage(r.key);
      return { size: String(u.size), inodes: String(u.inodes) };
    }),
    Cleanup: u('Cleanup', async (sn) => {
      await sn.cleanup();
      return {};
    }),
    List: (call: grpc.ServerWritableStream<Req, unknown>) => {
      const run = async () => {
        let batch: Record<string, unknown>[] = [];
        const sn = await ready;
        await sn.walk(call.request.filters ?? [], (info) => {
          batch.push(encodeInfo(info));
          if (batch.length >= LIST_BATCH) {
            call.write({ info: batch });
            batch = [];
          }
        });
        if (batch.length > 0) call.write({ info: batch });
      };
      run().then(
        () => call.end(),
        (err: unknown) => {
          log.log(err instanceof SnapshotError ? 'debug' : 'error', 'List failed', { err: (err as Error).message });
          call.emit('error', toServiceError(err));
        },
      );
    },
  };
}
