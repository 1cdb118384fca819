// Commit of a dir/dev snapshot: its writable upper is sealed into fs/overlaybd.sealed, a layer later
// snapshots use as parent. Each step can be cut by kill -9 and is safe to repeat:
//   1. unmount and detach the writable device
//   2. seal into a temp file, fsync, rename to fs/overlaybd.sealed, fsync fs/
//   3. write the sealed config as block/config.sealed.json (atomic, fsync'ed)
//   4. the metadata commit (Snapshotter)
//   5. switch block/config.v1.json to the sealed config (rename, fsync block/)
//   6. delete writable_data, writable_index, rwmode
// Before 4 the snapshot is still the Active one with its writable config (Commit is retried from
// step 1); after 4, finishSeal() — right away, or from recovery at the next start — does 5 and 6.
import fs from 'node:fs';
import path from 'node:path';
import { commitLayer } from '../../addon';
import { fsyncPath as syncDir, writeJsonAtomic } from '../../atomic-file';
import type { ImageConfig } from '../../device/image-config';
import { Labels } from '../../labels';
import { crashPoint } from '../crash-point';
import { failedPrecondition } from '../errors';
import type { ChainLink } from '../mounts';
import type { OverlaybdContext } from './context';
import { blockDir, configPath, mountpointOf, readConfig, writableModeOf } from './snapshot-files';

const WRITABLE_FILES = ['writable_data', 'writable_index', 'rwmode'];
const sealedConfigPath = (snap: ChainLink) => path.join(blockDir(snap), 'config.sealed.json');

/** Steps 1–3; returns the labels of the committed snapshot. */
export async function sealWritable(ctx: OverlaybdContext, snap: ChainLink, name: string): Promise<Record<string, string>> {
  const sealed = path.join(snap.fsDir, 'overlaybd.sealed');
  const id = ctx.writableDeviceId(snap.record.id);
  await ctx.deviceLock.run(id, async () => {
    if (!(await ctx.devices.unmount(mountpointOf(snap), false)))
      throw failedPrecondition(`commit ${snap.key}: its filesystem is still in use at ${mountpointOf(snap)} (stop the container first)`);
    await ctx.devices.detach(id, false);
    crashPoint('commit-1');
    const cfg = readConfig(snap)!;
    const block = blockDir(snap);
    const tmp = `${sealed}.tmp`;
    fs.rmSync(tmp, { force: true });
    commitLayer(path.join(block, 'writable_data'), path.join(block, 'writable_index'), tmp);
    const fd = fs.openSync(tmp, 'r');
    try {
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, sealed);
    syncDir(snap.fsDir);
    crashPoint('commit-2');
    const next: ImageConfig = { ...cfg, lowers: [...(cfg.lowers ?? []), { dir: snap.fsDir, file: sealed }] };
    delete next.upper;
    writeJsonAtomic(sealedConfigPath(snap), next);
    crashPoint('commit-3');
  });
  ctx.log.log('info', 'sealed writable layer', { key: snap.key, name, file: sealed });
  return { [Labels.localCommitPath]: sealed, [Labels.path]: 'local' };
}

/** Steps 5–6 for a committed snapshot (idempotent; nothing to do for other snapshots). */
export function finishSeal(snap: ChainLink): void {
  if (snap.record.kind !== 'committed') {
    // A commit cut before its metadata step: the snapshot keeps its writable config; redo from step 1.
    fs.rmSync(sealedConfigPath(snap), { force: true });
    return;
  }
  const staged = sealedConfigPath(snap);
  const hasStaged = fs.existsSync(staged);
  if (!hasStaged && !writableModeOf(snap)) return;
  crashPoint('commit-4');
  if (hasStaged) {
    fs.renameSync(staged, configPath(snap));
    syncDir(blockDir(snap));
  }
  crashPoint('commit-5');
  for (const f of WRITABLE_FILES) fs.rmSync(path.join(blockDir(snap), f), { force: true });
  syncDir(blockDir(snap));
}
