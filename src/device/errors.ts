// Errors of deviced, typed by kind; mapped to gRPC status codes once (server.ts) and back (client.ts).
import { status } from '@grpc/grpc-js';

export type DeviceErrorKind =
  | 'InvalidArgument'
  | 'NotFound'
  | 'AlreadyExists'
  | 'FailedPrecondition'
  | 'Unimplemented'
  | 'Unavailable'
  | 'Internal';

export class DeviceError extends Error {
  readonly code: string;
  constructor(
    readonly kind: DeviceErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'DeviceError';
    this.code = `OBD_DEVICE_${kind.replace(/[A-Z]/g, (c, i: number) => (i ? '_' : '') + c).toUpperCase()}`;
  }
}

const GRPC: Record<DeviceErrorKind, status> = {
  InvalidArgument: status.INVALID_ARGUMENT,
  NotFound: status.NOT_FOUND,
  AlreadyExists: status.ALREADY_EXISTS,
  FailedPrecondition: status.FAILED_PRECONDITION,
  Unimplemented: status.UNIMPLEMENTED,
  Unavailable: status.UNAVAILABLE,
  Internal: status.INTERNAL,
};

export function grpcCodeOf(err: unknown): status {
  return err instanceof DeviceError ? GRPC[err.kind] : status.INTERNAL;
}

export function kindOfGrpc(code: number): DeviceErrorKind {
  const hit = (Object.keys(GRPC) as DeviceErrorKind[]).find((k) => GRPC[k] === code);
  return hit ?? 'Internal';
}

/** Addon errors carry an errno name in `code`; give them a kind. */
export function fromAddonError(err: unknown, context: string): DeviceError {
  const e = err as Error & { code?: string };
  const kind: DeviceErrorKind =
    e.code === 'ENOENT'
      ? 'NotFound'
      : e.code === 'EINVAL' || e.code === 'EBADMSG'
        ? 'InvalidArgument'
        : e.code === 'EBUSY'
          ? 'FailedPrecondition'
          : e.code === 'ENOSYS' || e.code === 'ENOTSUP' || e.code === 'EOPNOTSUPP'
            ? 'Unimplemented'
            : 'Internal';
  return new DeviceError(kind, `${context}: ${e.message}`);
}
