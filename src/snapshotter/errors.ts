// Errors typed by kind, as containerd's errdefs: the storage layer decides the kind once, the gRPC
// service maps each kind to its status code once (service.ts), and containerd maps it back.

export type ErrorKind = 'NotFound' | 'AlreadyExists' | 'FailedPrecondition' | 'InvalidArgument' | 'Unavailable';

export class SnapshotError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
    this.name = `SnapshotError(${kind})`;
  }
}

export const notFound = (msg: string): SnapshotError => new SnapshotError('NotFound', msg);
export const alreadyExists = (msg: string): SnapshotError => new SnapshotError('AlreadyExists', msg);
export const failedPrecondition = (msg: string): SnapshotError => new SnapshotError('FailedPrecondition', msg);
export const invalidArgument = (msg: string): SnapshotError => new SnapshotError('InvalidArgument', msg);
