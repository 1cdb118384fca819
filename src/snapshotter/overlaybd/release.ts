// Releasing devices when snapshots go: a dir/dev snapshot's writable device, a layer's own shared
// device, the image device's trace mode when its last tracing container goes, and (autoRemoveDev) the
// shared image device with its last container. Also what an orphan dir (no record) still holds.
import fs from 'node:fs';
import { Labels } from '../../labels';
import type { ChainLink } from '../mounts';
import type { OverlaybdContext } from './context';
import { setLayerTrace } from './image-device';
import { blockDir, mountpointOf, readConfig, writableModeOf } from './snapshot-files';

async function unmountAndDetach(ctx: OverlaybdContext, id: string, mountpoint: string): Promise<void> {
  await ctx.deviceLock.run(id, async () => {
    await ctx.devices.unmount(mountpoint, true);
    await ctx.devices.detach(id, true);
  });
}

export async function releaseDevices(ctx: OverlaybdContext, snap: ChainLink, ancestors: ChainLink[], siblings: number): Promise<void> {
  if (writableModeOf(snap)) {
    await unmountAndDetach(ctx, ctx.writableDeviceId(snap.record.id), mountpointOf(snap));
  } else if (snap.record.kind === 'committed' && readConfig(snap)) {
    // The layer's own shared device (its children are gone: containerd removes them first).
    await unmountAndDetach(ctx, ctx.layerDeviceId(snap.record.id), mountpointOf(snap));
  }
  const parent = ancestors[0];
  // Only when no other snapshot of the image exists: a new one may just have put the device into
  // replay mode (or be between its Mounts and containerd's mount).
  if (snap.record.labels[Labels.recordTracePath] && siblings === 0 && parent && readConfig(parent)?.recordTracePath) {
    // The recording (or replaying) container is gone: the next container gets a normal device.
    await setLayerTrace(ctx, parent, undefined).catch((err: Error) => ctx.log.log('warn', 'image device stays in trace mode', { layer: parent.key, err: err.message }));
  }
  // Another snapshot of the same image may be between its Mounts and containerd's mount: keep the device.
  if (ctx.cfg.autoRemoveDev && snap.record.kind !== 'committed' && siblings === 0 && parent && readConfig(parent)) {
    const id = ctx.layerDeviceId(parent.record.id);
    await ctx.deviceLock.run(id, async () => {
      // Busy (another container's overlay still uses it) → keep it; Mounts re-attaches on demand anyway.
      if (!(await ctx.devices.unmount(mountpointOf(parent), false))) return;
      await ctx.devices.detach(id, false).catch((err: Error) => ctx.log.log('warn', 'autoRemoveDev: detach failed', { id, err: err.message }));
    });
  }
}

/** A snapshot dir without a record: whatever device it got before its create failed or was cut short. */
export async function releaseOrphanDevices(ctx: OverlaybdContext, id: number, dir: string): Promise<void> {
  if (!fs.existsSync(blockDir({ dir }))) return; // a plain directory snapshot: no device
  const mountpoint = mountpointOf({ dir });
  await unmountAndDetach(ctx, ctx.writableDeviceId(id), mountpoint);
  await unmountAndDetach(ctx, ctx.layerDeviceId(id), mountpoint);
}
