// Errors of obdconv, one class per kind of failure with a stable code (src/errors.ts).
import { errorClass } from '../errors';

/** Options that cannot work together or are not supported (--fstype, --mkfs/--vsize, the base layer). */
export class ConvertOptionError extends errorClass('ERR_CONVERT_OPTION', 'InvalidArgument') {}

/** The source image is not one obdconv converts (already overlaybd, a layer type it cannot read, inconsistent config). */
export class UnsupportedImageError extends errorClass('ERR_CONVERT_UNSUPPORTED_IMAGE', 'InvalidArgument') {}

/** An OCI image layout directory that is malformed or lacks the requested manifest. */
export class OciLayoutError extends errorClass('ERR_CONVERT_OCI_LAYOUT', 'NotFound') {}

/** Content that does not match its descriptor (digest or size). */
export class DigestMismatchError extends errorClass('ERR_CONVERT_DIGEST_MISMATCH', 'FailedPrecondition') {}

/** Building one layer failed (applying its tar, mkfs, commit); the message names the layer, `cause` is the failure. */
export class LayerBuildError extends errorClass('ERR_CONVERT_LAYER', 'Internal') {}
