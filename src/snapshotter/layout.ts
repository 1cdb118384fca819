// The on-disk layout under `root`, as accelerated-container-image and containerd's overlayfs snapshotter:
//   root/metadata.level/        LevelDB (ours; ACI's bolt file is root/metadata.db, so the two never collide)
//   root/snapshots/<id>/fs      overlay upperdir of an Active snapshot, lowerdir once Committed (0755)
//   root/snapshots/<id>/work    overlay workdir, Active snapshots only (0711)
//   root/snapshots/<id>/block/  device state of overlaybd snapshots
// Directories being created are named `new-*` and directories being removed `rm-*`; Cleanup removes
// every entry of snapshots/ that is not the id of a record.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';

export class Layout {
  constructor(readonly root: string) {}

  get metadataDir(): string {
    return path.join(this.root, 'metadata.level');
  }
  get snapshotsDir(): string {
    return path.join(this.root, 'snapshots');
  }
  snapshotDir(id: number): string {
    return path.join(this.snapshotsDir, String(id));
  }
  fsDir(id: number): string {
    return path.join(this.snapshotDir(id), 'fs');
  }
  workDir(id: number): string {
    return path.join(this.snapshotDir(id), 'work');
  }
  blockDir(id: number): string {
    return path.join(this.snapshotDir(id), 'block');
  }
  /**
   * Builds snapshots/<id> under a `new-*` name (0700) with `fill`, then renames it into place: a
   * crash never leaves a half-built dir under a record's id.
   */
  async stageSnapshotDir(id: number, fill: (dir: string) => void | Promise<void>): Promise<void> {
    const tmp = path.join(this.snapshotsDir, `new-${id}-${crypto.randomBytes(4).toString('hex')}`);
    await fs.mkdir(tmp, { mode: 0o700 });
    try {
      await fill(tmp);
      await fs.rename(tmp, this.snapshotDir(id));
    } catch (err) {
      await fs.rm(tmp, { recursive: true, force: true });
      throw err;
    }
  }

  /** The id named by an entry of snapshots/, or undefined for temp and foreign entries. */
  static idOf(entry: string): number | undefined {
    return /^[1-9][0-9]{0,15}$/.test(entry) ? Number(entry) : undefined;
  }
}
