// Errors of deviced, typed by kind; mapped to gRPC status codes once (service.ts) and back (client.ts).
import { errorCode, ObdError, type ErrorKind } from '../errors';

export type DeviceErrorKind = ErrorKind;

export class DeviceError extends ObdError {
  readonly code: string;
  constructor(kind: DeviceErrorKind, message: string) {
    super(kind, message);
    this.name = 'DeviceError';
    this.code = errorCode('DEVICE', kind);
  }
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
