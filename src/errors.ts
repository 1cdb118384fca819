// One shape for the errors obd's callers act on, as containerd's errdefs and undici's named errors:
// every such error is an ObdError with a `kind` (what the caller can do about it) and a stable
// `code`, `ERR_<AREA>_<KIND>` (for scripts and logs). Each gRPC service maps kinds to status codes
// once (grpc-status.ts).
export type ErrorKind =
  | 'InvalidArgument'
  | 'NotFound'
  | 'AlreadyExists'
  | 'FailedPrecondition'
  | 'Unimplemented'
  | 'Unavailable'
  | 'Internal';

/** ERR_DEVICE_NOT_FOUND for ('DEVICE', 'NotFound'). */
export function errorCode(area: string, kind: string): string {
  return `ERR_${area}_${kind.replace(/[A-Z]/g, (c, i: number) => (i ? '_' : '') + c).toUpperCase()}`;
}

export abstract class ObdError extends Error {
  abstract readonly code: string;
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The base of a named error with a fixed code and kind: `class XError extends errorClass('ERR_X', 'NotFound') {}`. */
export function errorClass(code: string, kind: ErrorKind) {
  return class extends ObdError {
    readonly code = code;
    constructor(message: string, cause?: unknown) {
      super(kind, message, cause === undefined ? undefined : { cause });
    }
  };
}
