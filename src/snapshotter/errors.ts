// Errors of the snapshotter, typed by kind as containerd's errdefs: the storage layer decides the
// kind once, the gRPC service maps it to its status code once (service.ts), and containerd maps it back.
import { errorCode, ObdError, type ErrorKind } from '../errors';

export type { ErrorKind } from '../errors';

export class SnapshotError extends ObdError {
  readonly code: string;
  constructor(kind: ErrorKind, message: string) {
    super(kind, message);
    this.name = `SnapshotError(${kind})`;
    this.code = errorCode('SNAPSHOT', kind);
  }
}

export const notFound = (msg: string): SnapshotError => new SnapshotError('NotFound', msg);
export const alreadyExists = (msg: string): SnapshotError => new SnapshotError('AlreadyExists', msg);
export const failedPrecondition = (msg: string): SnapshotError => new SnapshotError('FailedPrecondition', msg);
export const invalidArgument = (msg: string): SnapshotError => new SnapshotError('InvalidArgument', msg);
