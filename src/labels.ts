// Snapshot label names of accelerated-container-image and CRI that drive the overlaybd paths of
// the snapshotter; rpull and record-trace set them, the snapshotter reads them.
export const Labels = {
  targetRef: 'containerd.io/snapshot.ref',
  imageRef: 'containerd.io/snapshot/image-ref',
  criImageRef: 'containerd.io/snapshot/cri.image-ref',
  criLayerDigest: 'containerd.io/snapshot/cri.layer-digest',
  overlaybdVersion: 'containerd.io/snapshot/overlaybd/version',
  blobDigest: 'containerd.io/snapshot/overlaybd/blob-digest',
  blobSize: 'containerd.io/snapshot/overlaybd/blob-size',
  fsType: 'containerd.io/snapshot/overlaybd/blob-fs-type',
  remote: 'containerd.io/snapshot/remote',
  writable: 'containerd.io/snapshot/overlaybd.writable',
  localCommitPath: 'containerd.io/snapshot/overlaybd.localcommitpath',
  vsize: 'containerd.io/snapshot/overlaybd/vsize',
  recordTrace: 'containerd.io/snapshot/overlaybd/record-trace',
  recordTracePath: 'containerd.io/snapshot/overlaybd/record-trace-path',
  snapshotType: 'containerd.io/snapshot/type',
  /** TurboOCI (and its legacy FastOCI names): the original layer blob and its media type. */
  turboTargetDigest: 'containerd.io/snapshot/overlaybd/turbo-oci/target-digest',
  turboTargetMediaType: 'containerd.io/snapshot/overlaybd/turbo-oci/target-media-type',
  fastociTargetDigest: 'containerd.io/snapshot/overlaybd/fastoci/target-digest',
  fastociTargetMediaType: 'containerd.io/snapshot/overlaybd/fastoci/target-media-type',
  /** obd: which path a snapshot took ("remote", "local", "overlayfs", "dir", "dev"), so a silent full download is visible. */
  path: 'containerd.io/snapshot/obd/path',
} as const;

export const REMOTE_SNAPSHOT = 'remote snapshot';
