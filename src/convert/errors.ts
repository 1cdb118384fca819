// Errors of obdconv, one class per kind of failure with a stable code (src/errors.ts).
import { ObdError } from '../errors';

/** Options that cannot work together or are not supported (--fstype, --mkfs/--vsize, the base layer). */
export class ConvertOptionError extends ObdError {
  readonly code = 'ERR_CONVERT_OPTION';
  constructor(message: string) {
    super('InvalidArgument', message);
    this.name = 'ConvertOptionError';
  }
}

/** The source image is not one obdconv converts (already overlaybd, a layer type it cannot read, inconsistent config). */
export class UnsupportedImageError extends ObdError {
  readonly code = 'ERR_CONVERT_UNSUPPORTED_IMAGE';
  constructor(message: string) {
    super('InvalidArgument', message);
    this.name = 'UnsupportedImageError';
  }
}

/** An OCI image layout directory that is malformed or lacks the requested manifest. */
export class OciLayoutError extends ObdError {
  readonly code = 'ERR_CONVERT_OCI_LAYOUT';
  constructor(message: string) {
    super('NotFound', message);
    this.name = 'OciLayoutError';
  }
}

/** Content that does not match its descriptor (digest or size). */
export class DigestMismatchError extends ObdError {
  readonly code = 'ERR_CONVERT_DIGEST_MISMATCH';
  constructor(message: string) {
    super('FailedPrecondition', message);
    this.name = 'DigestMismatchError';
  }
}

/** Building one layer failed (applying its tar, mkfs, commit); the message names the layer, `cause` is the failure. */
export class LayerBuildError extends ObdError {
  readonly code = 'ERR_CONVERT_LAYER';
  constructor(message: string, cause?: unknown) {
    super('Internal', message, { cause });
    this.name = 'LayerBuildError';
  }
}
