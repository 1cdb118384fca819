// Mounts are computed here and nowhere else. A snapshot's mounts depend on its kind, its committed
// ancestors and its extra host lowerdirs; layer kinds other than plain directories (overlaybd
// devices) plug in through MountHook and get the first say.
import fs from 'node:fs';
import type { SnapshotRecord } from './storage';

export interface Mount {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

export interface ChainLink {
  key: string;
  record: SnapshotRecord;
  /** root/snapshots/<id> */
  dir: string;
  /** root/snapshots/<id>/fs */
  fsDir: string;
}

/** Everything needed to compute one snapshot's mounts. */
export interface MountRequest {
  snapshot: ChainLink;
  /** root/snapshots/<id>/work (exists for Active snapshots) */
  workDir: string;
  /** Committed ancestors, nearest first. */
  ancestors: ChainLink[];
  /** Validated extra host lowerdirs (custom lower label), to go below every layer. */
  extraLowers: string[];
}

/**
 * Extension point for snapshots whose data is not a plain directory. `mounts` returns undefined to
 * leave a snapshot to the overlay rules below; `lowerDirs` may replace the ancestors' fs dirs by
 * other directories (e.g. one mounted device for a whole overlaybd chain).
 */
export interface MountHook {
  mounts?(req: MountRequest): Promise<Mount[] | undefined>;
  lowerDirs?(req: MountRequest): Promise<string[] | undefined>;
}

/** containerd's overlayfs snapshotter adds index=off when the kernel has the parameter. */
export const overlayIndexOff = fs.existsSync('/sys/module/overlay/parameters/index');

function bind(source: string, readonly: boolean): Mount {
  return { type: 'bind', source, options: [readonly ? 'ro' : 'rw', 'rbind'] };
}

/**
 * The overlayfs snapshotter's rules: Active without lowers → rw bind of fs; View without lowers →
 * ro bind of its own (empty) fs; View on one lower → ro bind of it; View on several → overlay with
 * lowerdirs only; Active with lowers → overlay with upperdir/workdir. lowerdir lists the newest first.
 */
export function overlayMounts(kind: SnapshotRecord['kind'], upper: string, work: string, lowers: string[]): Mount[] {
  if (kind === 'committed') throw new Error('committed snapshots have no mounts');
  const readonly = kind === 'view';
  if (lowers.length === 0) return [bind(upper, readonly)];
  if (readonly && lowers.length === 1) return [bind(lowers[0], true)];
  const options: string[] = overlayIndexOff ? ['index=off'] : [];
  if (!readonly) options.push(`workdir=${work}`, `upperdir=${upper}`);
  options.push(`lowerdir=${lowers.join(':')}`);
  return [{ type: 'overlay', source: 'overlay', options }];
}

export async function computeMounts(req: MountRequest, hooks: readonly MountHook[]): Promise<Mount[]> {
  for (const h of hooks) {
    const m = await h.mounts?.(req);
    if (m) return m;
  }
  let lowers: string[] | undefined;
  for (const h of hooks) {
    lowers = await h.lowerDirs?.(req);
    if (lowers) break;
  }
  lowers ??= req.ancestors.map((a) => a.fsDir);
  return overlayMounts(req.snapshot.record.kind, req.snapshot.fsDir, req.workDir, [...lowers, ...req.extraLowers]);
}
