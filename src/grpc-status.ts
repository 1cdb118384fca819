// Error kinds ↔ gRPC status codes (containerd's errdefs.ToGRPC table), for both of obd's services.
import { status } from '@grpc/grpc-js';
import { ObdError, type ErrorKind } from './errors';

const STATUS: Record<ErrorKind, status> = {
  InvalidArgument: status.INVALID_ARGUMENT,
  NotFound: status.NOT_FOUND,
  AlreadyExists: status.ALREADY_EXISTS,
  FailedPrecondition: status.FAILED_PRECONDITION,
  Unimplemented: status.UNIMPLEMENTED,
  Unavailable: status.UNAVAILABLE,
  Internal: status.INTERNAL,
};

/** The status an error crosses the wire with; errors without a kind get `otherwise`. */
export function grpcStatusOf(err: unknown, otherwise: status): status {
  return err instanceof ObdError ? STATUS[err.kind] : otherwise;
}

export function kindOfGrpcStatus(code: number): ErrorKind {
  const hit = (Object.keys(STATUS) as ErrorKind[]).find((k) => STATUS[k] === code);
  return hit ?? 'Internal';
}
