// overlaybd in the snapshotter: remote layers committed at Prepare time (containerd then skips
// download and unpack), and container snapshots on an overlaybd chain by rwMode — overlayfs (one
// shared read-only device per image top layer, overlay on its mountpoint), dir (a private writable
// device, bind mount of its filesystem) and dev (the block device itself). Plain OCI layers and
// images are left to the overlay rules of mounts.ts. Each concern has its file:
//   layer-classifier.ts  which kind of layer a Prepare is (labels, one header read from the registry)
//   remote-layer.ts      the committed snapshot of a remote layer
//   writable-disk.ts     writable devices of dir/dev snapshots
//   image-device.ts      the shared read-only device of an image, trace mode
//   commit-seal.ts       sealing a writable upper at Commit, crash-safe
//   local-layer.ts       adopting an overlaybd blob containerd unpacked itself
//   release.ts           releasing devices when snapshots go
//   label-rules.ts       what the labels may ask for
// Nothing is kept in memory that the disk and /proc/self/mountinfo do not also say: Mounts attaches
// and mounts again whatever is missing, so a restarted snapshotter (or deviced) recovers.
import type { ObdConfig } from '../../config';
import { Labels } from '../../labels';
import type { Logger } from '../../log';
import { ChainLink, Mount, MountRequest, overlayIndexOff } from '../mounts';
import type { CreateRequest, SnapshotHooks, TargetSnapshot } from '../snapshotter';
import { finishSeal, sealWritable } from './commit-seal';
import { OverlaybdContext } from './context';
import { ensureLayerMounted, setLayerTrace } from './image-device';
import { makeTraceDir, rwModeOf, traceFileOf, vsizeBytesOf } from './label-rules';
import { LayerClassifier } from './layer-classifier';
import { adoptLocalLayer } from './local-layer';
import { releaseDevices, releaseOrphanDevices } from './release';
import { remoteLayerTarget } from './remote-layer';
import { readConfig, writableModeOf } from './snapshot-files';
import { createWritableDisk, writableMounts } from './writable-disk';

export class OverlaybdHooks implements SnapshotHooks {
  private readonly ctx: OverlaybdContext;
  private readonly classifier: LayerClassifier;

  constructor(cfg: ObdConfig, log: Logger) {
    this.ctx = new OverlaybdContext(cfg, log);
    this.classifier = new LayerClassifier(cfg, log);
    makeTraceDir(cfg);
  }

  async close(): Promise<void> {
    this.ctx.devices.close();
    await this.classifier.close();
  }

  beforeCreate(req: CreateRequest, ancestors: ChainLink[]): Promise<TargetSnapshot | undefined> {
    return remoteLayerTarget(req, ancestors, this.classifier, this.ctx.cfg, this.ctx.log);
  }

  async afterCreate(snap: ChainLink, req: CreateRequest, ancestors: ChainLink[] = []): Promise<void> {
    if (req.labels[Labels.targetRef]) return; // an image layer being unpacked by containerd
    // Every label is checked before anything is made, so a bad one is an error naming it.
    const mode = rwModeOf(req.labels, this.ctx.cfg);
    const trace = traceFileOf(req.labels, this.ctx.cfg);
    const parentCfg = ancestors.length > 0 ? readConfig(ancestors[0]) : undefined;
    if (ancestors.length > 0 && !parentCfg) return;
    // Without a parent, only an explicit label makes a fresh writable disk (ACI's converter does this);
    // the global rwMode applies to containers of overlaybd images.
    if (ancestors.length === 0 && !req.labels[Labels.writable]) return;
    if (mode === 'overlayfs') {
      if (trace && parentCfg) await setLayerTrace(this.ctx, ancestors[0], trace);
      return;
    }
    const vsize = vsizeBytesOf(req.labels, this.ctx.cfg); // a bad label is refused either way
    // ACI: the vsize label sizes a fresh disk only; over an image the upper takes the image's size
    // (0 = inherit the lowers'), so a small label cannot cut the image's filesystem short.
    await createWritableDisk(this.ctx, snap, mode, req.labels, parentCfg ? 0 : vsize, ancestors[0], parentCfg, trace);
  }

  async mounts(req: MountRequest): Promise<Mount[] | undefined> {
    const snap = req.snapshot;
    if (snap.record.kind === 'committed') return undefined;
    const readonly = snap.record.kind === 'view';
    const mode = writableModeOf(snap);
    if (mode) return writableMounts(this.ctx, snap, mode, req.ancestors[0]);
    const parent = req.ancestors[0];
    if (!parent || !readConfig(parent)) return undefined;
    const lower = await ensureLayerMounted(this.ctx, parent);
    if (readonly && req.extraLowers.length === 0) return [{ type: 'bind', source: lower, options: ['ro', 'rbind'] }];
    const options: string[] = overlayIndexOff ? ['index=off'] : [];
    if (!readonly) options.push(`workdir=${req.workDir}`, `upperdir=${snap.fsDir}`);
    options.push(`lowerdir=${[lower, ...req.extraLowers].join(':')}`);
    return [{ type: 'overlay', source: 'overlay', options }];
  }

  async beforeCommit(snap: ChainLink, name: string, ancestors: ChainLink[] = []): Promise<Record<string, string> | undefined> {
    if (writableModeOf(snap)) return sealWritable(this.ctx, snap, name);
    return adoptLocalLayer(snap, name, ancestors);
  }

  async afterCommit(snap: ChainLink): Promise<void> {
    finishSeal(snap);
  }

  async recover(snap: ChainLink): Promise<void> {
    finishSeal(snap);
  }

  async beforeRemoveDir(snap: ChainLink, ancestors: ChainLink[] = [], siblings = 0): Promise<void> {
    // The record is gone already: a failure here must not fail the Remove; Cleanup retries the dir.
    await releaseDevices(this.ctx, snap, ancestors, siblings).catch((err: Error) =>
      this.ctx.log.log('warn', 'releasing the devices of a removed snapshot failed', { key: snap.key, id: snap.record.id, err: err.message }),
    );
  }

  releaseOrphan(id: number, dir: string): Promise<void> {
    return releaseOrphanDevices(this.ctx, id, dir);
  }
}
