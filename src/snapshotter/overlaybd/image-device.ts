// The shared read-only device of an image top layer: attached once, its filesystem mounted at the
// layer's block/mountpoint (ro, nodev), the lowerdir of every overlayfs container of that image.
// Trace mode (ACI's recordTracePath) re-attaches it with a trace file to record into or replay.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../../atomic-file';
import type { ImageConfig } from '../../device/image-config';
import { traceMode } from '../../trace/trace';
import { failedPrecondition } from '../errors';
import type { ChainLink } from '../mounts';
import type { OverlaybdContext } from './context';
import { fsTypeOf, imageMountOptions } from './label-rules';
import { blockDir, configPath, mountpointOf, readConfig } from './snapshot-files';

/** Attaches and mounts the layer's device if needed; returns the mountpoint. */
export function ensureLayerMounted(ctx: OverlaybdContext, layer: ChainLink): Promise<string> {
  const id = ctx.layerDeviceId(layer.record.id);
  const fsType = fsTypeOf(layer.record.labels, ctx.cfg);
  return ctx.deviceLock.run(id, async () => {
    const dev = await ctx.devices.attach(id, configPath(layer));
    const mp = mountpointOf(layer);
    await ctx.devices.ensureMounted(dev, mp, fsType, imageMountOptions(fsType));
    return mp;
  });
}

/**
 * Puts the device of an image top layer into trace mode (record or prefetch) or back to normal: the
 * device is re-attached with the new config, which needs it unused.
 */
export function setLayerTrace(ctx: OverlaybdContext, layer: ChainLink, trace: string | undefined): Promise<void> {
  const id = ctx.layerDeviceId(layer.record.id);
  return ctx.deviceLock.run(id, async () => {
    const cfg = readConfig(layer)!;
    // Same trace, already replaying: containers of one image share the prefetched device. A device
    // that was recording into the file (now non-empty) is re-attached to replay it.
    const modeFile = path.join(blockDir(layer), 'trace-mode');
    const mode = trace ? traceMode(trace) : 'none';
    const was = fs.existsSync(modeFile) ? fs.readFileSync(modeFile, 'utf8') : 'none';
    if (cfg.recordTracePath === trace && was === mode) return;
    if (!(await ctx.devices.unmount(mountpointOf(layer), false)))
      throw failedPrecondition(`image layer ${layer.key}: its device is in use by other containers; stop them to record or replay a trace`);
    await ctx.devices.detach(id, false);
    const next: ImageConfig = { ...cfg };
    if (trace) next.recordTracePath = trace;
    else delete next.recordTracePath;
    writeJsonAtomic(configPath(layer), next);
    writeFileAtomic(modeFile, mode);
    ctx.log.log('info', trace ? 'image device in trace mode' : 'image device back to normal', { layer: layer.key, trace });
  });
}
