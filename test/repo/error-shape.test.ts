// Errors with one shape: every error a caller acts on carries a kind and a stable code, and a kind
// crosses gRPC as one status code and comes back as the same kind.
import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { describe, it } from 'node:test';
import { ConvertOptionError, DigestMismatchError, LayerBuildError, OciLayoutError, UnsupportedImageError } from '../../src/convert/errors';
import { DeviceError } from '../../src/device/errors';
import { errorCode, ObdError, type ErrorKind } from '../../src/errors';
import { grpcStatusOf, kindOfGrpcStatus } from '../../src/grpc-status';
import { RpullImageError, RpullLayerError } from '../../src/rpull/errors';
import { SnapshotError } from '../../src/snapshotter/errors';

const KINDS: ErrorKind[] = ['InvalidArgument', 'NotFound', 'AlreadyExists', 'FailedPrecondition', 'Unimplemented', 'Unavailable', 'Internal'];

describe('error shape', () => {
  it('codes are ERR_<AREA>_<KIND> in upper snake case', () => {
    assert.equal(errorCode('DEVICE', 'NotFound'), 'ERR_DEVICE_NOT_FOUND');
    assert.equal(errorCode('SNAPSHOT', 'FailedPrecondition'), 'ERR_SNAPSHOT_FAILED_PRECONDITION');
    assert.equal(new SnapshotError('AlreadyExists', 'x').code, 'ERR_SNAPSHOT_ALREADY_EXISTS');
    assert.equal(new DeviceError('Unavailable', 'x').code, 'ERR_DEVICE_UNAVAILABLE');
  });

  it('every kind crosses gRPC as one status and comes back as the same kind', () => {
    const statuses = new Set<number>();
    for (const kind of KINDS) {
      const s = grpcStatusOf(new DeviceError(kind, 'x'), status.UNKNOWN);
      statuses.add(s);
      assert.equal(kindOfGrpcStatus(s), kind);
      assert.equal(grpcStatusOf(new SnapshotError(kind, 'x'), status.UNKNOWN), s);
    }
    assert.equal(statuses.size, KINDS.length);
    assert.equal(grpcStatusOf(new SnapshotError('NotFound', 'x'), status.UNKNOWN), status.NOT_FOUND);
    assert.equal(grpcStatusOf(new Error('plain'), status.UNKNOWN), status.UNKNOWN);
    assert.equal(grpcStatusOf(new Error('plain'), status.INTERNAL), status.INTERNAL);
    assert.equal(kindOfGrpcStatus(status.DATA_LOSS), 'Internal');
  });

  it('the named errors of obdconv and rpull have their class name, code, kind and cause', () => {
    const cause = new Error('mkfs.ext4 failed');
    const cases: Array<[ObdError, string, string, ErrorKind]> = [
      [new ConvertOptionError('--fstype xfs'), 'ConvertOptionError', 'ERR_CONVERT_OPTION', 'InvalidArgument'],
      [new UnsupportedImageError('already overlaybd'), 'UnsupportedImageError', 'ERR_CONVERT_UNSUPPORTED_IMAGE', 'InvalidArgument'],
      [new OciLayoutError('no manifest'), 'OciLayoutError', 'ERR_CONVERT_OCI_LAYOUT', 'NotFound'],
      [new DigestMismatchError('bad digest'), 'DigestMismatchError', 'ERR_CONVERT_DIGEST_MISMATCH', 'FailedPrecondition'],
      [new LayerBuildError('layer 1/2', cause), 'LayerBuildError', 'ERR_CONVERT_LAYER', 'Internal'],
      [new RpullImageError('not overlaybd'), 'RpullImageError', 'ERR_RPULL_IMAGE', 'FailedPrecondition'],
      [new RpullLayerError('layer 1/2', cause), 'RpullLayerError', 'ERR_RPULL_LAYER', 'Internal'],
    ];
    for (const [err, name, code, kind] of cases) {
      assert.ok(err instanceof ObdError && err instanceof Error, name);
      assert.equal(err.name, name);
      assert.equal(err.code, code);
      assert.equal(err.kind, kind);
    }
    assert.equal(new LayerBuildError('layer 1/2', cause).cause, cause);
    assert.equal(new ConvertOptionError('x').cause, undefined);
  });
});
