// Errors of `obd rpull`, one class per kind of failure with a stable code (src/errors.ts).
import { ObdError } from '../errors';

/** The image cannot be registered lazily: its config does not fit its manifest, or a layer is not overlaybd. */
export class RpullImageError extends ObdError {
  readonly code = 'ERR_RPULL_IMAGE';
  constructor(message: string) {
    super('FailedPrecondition', message);
    this.name = 'RpullImageError';
  }
}

/** containerd or the snapshotter refused or misreported a layer; the message names the layer, `cause` the answer. */
export class RpullLayerError extends ObdError {
  readonly code = 'ERR_RPULL_LAYER';
  constructor(message: string, cause?: unknown) {
    super('Internal', message, { cause });
    this.name = 'RpullLayerError';
  }
}
