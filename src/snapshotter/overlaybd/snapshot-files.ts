// The files of an overlaybd snapshot, in root/snapshots/<id>/block/ (ACI's layout):
//   config.v1.json   the device config: the whole chain's lowers (+ the upper for dir/dev)
//   mountpoint/      where this snapshot's device is mounted (layers: read-only; dir: read-write)
//   writable_data, writable_index, rwmode   the writable upper of a dir/dev snapshot
//   config.sealed.json   the config a commit in progress switches to (see commit-seal.ts)
//   trace-mode       record/replay/none: what the image device's trace config was made for
//   init-debug.log   deviced's result file
// block/ is obd's own: no layer tar can put files there (layers land in fs/).
import fs from 'node:fs';
import path from 'node:path';
import type { ImageConfig } from '../../device/image-config';

export type WritableMode = 'dir' | 'dev';

export const blockDir = (snap: { dir: string }): string => path.join(snap.dir, 'block');
export const configPath = (snap: { dir: string }): string => path.join(snap.dir, 'block', 'config.v1.json');
export const mountpointOf = (snap: { dir: string }): string => path.join(snap.dir, 'block', 'mountpoint');

/** The device config of an overlaybd snapshot; undefined for plain directory snapshots. */
export function readConfig(snap: { dir: string }): ImageConfig | undefined {
  try {
    return JSON.parse(fs.readFileSync(configPath(snap), 'utf8')) as ImageConfig;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new Error(`${configPath(snap)}: ${(err as Error).message}`);
  }
}

/** dir/dev when the snapshot has a private writable device. */
export function writableModeOf(snap: { dir: string }): WritableMode | undefined {
  try {
    const m = fs.readFileSync(path.join(blockDir(snap), 'rwmode'), 'utf8').trim();
    return m === 'dir' || m === 'dev' ? m : undefined;
  } catch {
    return undefined;
  }
}
