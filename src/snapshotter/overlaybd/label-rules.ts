// What the overlaybd labels of a snapshot may ask for. Labels come from whoever creates containers
// and from image annotations, so each value is checked here and a bad one is an InvalidArgument that
// names the label.
import fs from 'node:fs';
import { type ObdConfig, traceDirOf } from '../../config';
import { Labels } from '../../labels';
import { checkTraceFile } from '../../trace/trace';
import { invalidArgument } from '../errors';

export type RwMode = 'overlayfs' | 'dir' | 'dev';
const GiB = 2 ** 30;
/** ACI's default virtual size of a writable device. */
const DEFAULT_VSIZE_GB = 64;

const bad = (label: string, value: string | undefined, why: string) => invalidArgument(`label ${label}=${JSON.stringify(value)}: ${why}`);

/** Filesystem types an image device may be mounted as: ext4, erofs and the config's defaultFsType. */
export function allowedFsTypes(cfg: ObdConfig): string[] {
  return [...new Set(['ext4', 'erofs', cfg.defaultFsType])];
}

/** The filesystem of a snapshot's device: its blob-fs-type label (ACI: "type;options"), else the config's. */
export function fsTypeOf(labels: Record<string, string>, cfg: ObdConfig): string {
  const v = labels[Labels.fsType];
  const t = (v || cfg.defaultFsType).split(';')[0];
  const allowed = allowedFsTypes(cfg);
  if (!allowed.includes(t)) throw bad(Labels.fsType, v, `filesystem type ${JSON.stringify(t)} is not allowed (allowed: ${allowed.join(', ')})`);
  return t;
}

/** Mount options of a shared read-only image device: no device nodes from the image. */
export function imageMountOptions(fsType: string): string {
  return fsType === 'ext4' ? 'ro,nodev,noload' : 'ro,nodev';
}

/** The rwMode for a new snapshot: its label, else the config. */
export function rwModeOf(labels: Record<string, string>, cfg: ObdConfig): RwMode {
  const v = labels[Labels.writable];
  if (v !== undefined && v !== '' && v !== 'dir' && v !== 'dev' && v !== 'overlayfs') throw bad(Labels.writable, v, 'must be dir, dev or overlayfs');
  const m = v || cfg.rwMode;
  return m === 'dir' || m === 'dev' ? m : 'overlayfs';
}

/** Bytes of virtual size for a new writable device: the vsize label (GiB), capped by maxVsizeGB. */
export function vsizeBytesOf(labels: Record<string, string>, cfg: ObdConfig): number {
  const v = labels[Labels.vsize];
  if (v === undefined || v === '') return Math.min(DEFAULT_VSIZE_GB, cfg.maxVsizeGB) * GiB;
  if (!/^[1-9][0-9]{0,9}$/.test(v)) throw bad(Labels.vsize, v, 'must be a positive integer (GiB)');
  const gb = Number(v);
  if (gb > cfg.maxVsizeGB) throw bad(Labels.vsize, v, `larger than the configured maximum of ${cfg.maxVsizeGB} GiB (maxVsizeGB)`);
  return gb * GiB;
}

/**
 * The trace file a snapshot asks for (record-trace-path): a regular file inside the configured trace
 * directory, reached without symlinks. obd opens it as root, so nothing else is accepted.
 */
export function traceFileOf(labels: Record<string, string>, cfg: ObdConfig): string | undefined {
  const v = labels[Labels.recordTracePath];
  if (v === undefined || v === '') return undefined;
  try {
    return checkTraceFile(v, traceDirOf(cfg));
  } catch (err) {
    throw bad(Labels.recordTracePath, v, (err as Error).message);
  }
}

/** Creates the trace directory (0700) so that trace files can be put there. */
export function makeTraceDir(cfg: ObdConfig): void {
  fs.mkdirSync(traceDirOf(cfg), { recursive: true, mode: 0o700 });
}
