// Writable devices of dir/dev snapshots: a private LSMT upper (block/writable_data + writable_index,
// virtual size from the vsize label when there is no parent, else the image's) over the image's lowers, attached through deviced. A snapshot
// without a parent gets a fresh filesystem (ACI: mkfs only for the bottom writable layer).
import fs from 'node:fs';
import path from 'node:path';
import { createWritableLayer } from '../../addon';
import { writeFileAtomic, writeJsonAtomic } from '../../atomic-file';
import type { ImageConfig } from '../../device/image-config';
import { Labels } from '../../labels';
import { invalidArgument } from '../errors';
import type { ChainLink, Mount } from '../mounts';
import type { OverlaybdContext } from './context';
import { fsTypeOf, type RwMode } from './label-rules';
import { blockDir, configPath, mountpointOf, type WritableMode } from './snapshot-files';

/** Creates the writable upper and its config; makes the filesystem when there is no parent image. */
export async function createWritableDisk(
  ctx: OverlaybdContext,
  snap: ChainLink,
  mode: Exclude<RwMode, 'overlayfs'>,
  labels: Record<string, string>,
  vsize: number,
  parent: ChainLink | undefined,
  parentCfg: ImageConfig | undefined,
  trace: string | undefined,
): Promise<void> {
  const block = blockDir(snap);
  const fsType = writableFsType(ctx, labels, parent);
  if (!parentCfg && fsType !== 'ext4') throw invalidArgument(`label ${Labels.fsType}=${JSON.stringify(labels[Labels.fsType])}: a fresh writable disk is formatted ext4 only`);
  fs.mkdirSync(path.join(block, 'mountpoint'), { recursive: true, mode: 0o711 });
  const data = path.join(block, 'writable_data');
  const index = path.join(block, 'writable_index');
  createWritableLayer(data, index, { vsize });
  const config: ImageConfig = {
    ...(parentCfg?.repoBlobUrl ? { repoBlobUrl: parentCfg.repoBlobUrl } : {}),
    lowers: parentCfg?.lowers ?? [],
    upper: { index, data },
    resultFile: path.join(block, 'init-debug.log'),
    ...(trace ? { recordTracePath: trace } : {}),
  };
  writeJsonAtomic(configPath(snap), config);
  writeFileAtomic(path.join(block, 'rwmode'), mode);
  if (!parentCfg) {
    const id = ctx.writableDeviceId(snap.record.id);
    await ctx.deviceLock.run(id, async () => {
      const dev = await ctx.devices.attach(id, configPath(snap));
      await ctx.devices.mkfs(dev.path, fsType);
    });
  }
  ctx.log.log('info', 'writable device snapshot', { key: snap.key, id: snap.record.id, mode, vsize });
}

/** On an image the filesystem is the image's (its top layer's label); a fresh disk's is its own label's. */
function writableFsType(ctx: OverlaybdContext, labels: Record<string, string>, parent: ChainLink | undefined): string {
  fsTypeOf(labels, ctx.cfg); // a bad label is refused either way
  return parent ? fsTypeOf(parent.record.labels, ctx.cfg) : fsTypeOf(labels, ctx.cfg);
}

/** The mounts of a dir/dev snapshot: its device attached (and for dir, its filesystem mounted). */
export function writableMounts(ctx: OverlaybdContext, snap: ChainLink, mode: WritableMode, parent: ChainLink | undefined): Promise<Mount[]> {
  const readonly = snap.record.kind === 'view';
  const id = ctx.writableDeviceId(snap.record.id);
  const fsType = writableFsType(ctx, snap.record.labels, parent);
  return ctx.deviceLock.run(id, async () => {
    const dev = await ctx.devices.attach(id, configPath(snap));
    if (mode === 'dev') return [{ type: fsType, source: dev.path, options: [readonly ? 'ro' : 'rw', 'discard'] }];
    await ctx.devices.ensureMounted(dev, mountpointOf(snap), fsType, 'rw,nodev,discard');
    return [{ type: 'bind', source: mountpointOf(snap), options: [readonly ? 'ro' : 'rw', 'rbind'] }];
  });
}
