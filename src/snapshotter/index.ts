// The snapshotter core's public surface, for the CLI and for what plugs in (issue 7: remote
// overlaybd layers and writable devices implement SnapshotHooks and pass them to SnapshotterServer).
export { Snapshotter, type SnapshotHooks, type SnapshotterOptions, type CreateRequest, lookupField } from './snapshotter';
export { SnapshotterServer } from './server';
export { prepareSocketPath } from '../grpc-socket';
export { type Mount, type MountHook, type MountRequest, type ChainLink, overlayMounts, computeMounts } from './mounts';
export { MetaStore, Transaction, type Info, type Kind, type SnapshotRecord, type Usage, validateLabels } from './storage';
export { SnapshotError, type ErrorKind, notFound, alreadyExists, failedPrecondition, invalidArgument, isKind } from './errors';
export { CUSTOM_LOWER_LABEL, customLowerDirs } from './custom-lower';
export { Layout } from './layout';
export { stderrLogger, silentLogger, type Logger } from './log';
