// Errors of `obd rpull`, one class per kind of failure with a stable code (src/errors.ts).
import { errorClass } from '../errors';

/** The image cannot be registered lazily: its config does not fit its manifest, or a layer is not overlaybd. */
export class RpullImageError extends errorClass('ERR_RPULL_IMAGE', 'FailedPrecondition') {}

/** containerd or the snapshotter refused or misreported a layer; the message names the layer, `cause` the answer. */
export class RpullLayerError extends errorClass('ERR_RPULL_LAYER', 'Internal') {}
