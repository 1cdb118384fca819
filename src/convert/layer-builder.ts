// Builds one overlaybd layer from one OCI layer tar: a writable LSMT layer over the previous
// sealed layers, served as a block device by the addon's fuse-loop engine in this process; the
// filesystem work (mkfs, mount, tar apply, umount) happens in child processes — the apply child in
// a private mount namespace — because a process must not do blocking I/O on a device it serves.
// Then the writable layer is sealed (commit). One owner: whatever happens, the device is detached
// and the writable files are removed before build() returns.
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import {
  commitLayer, createWritableLayer, deviceAttach, deviceDetach, type ApplyTarLimits, type ApplyTarStats,
  type CommitResult, type WarpLower,
} from '../addon';
import type { ApplyChildRequest } from './apply-child';
import { applyChildArgs, parseApplyReply, type ApplyReply, type ApplyWorker } from './apply-worker';
import { ConvertOptionError, LayerBuildError } from './errors';

export interface BuildLayerSpec {
  workDir: string;       // private dir for this layer's files
  lowers: Array<string | WarpLower>; // sealed layer files below (TurboOCI: meta + target), bottom first
  vsize: number;         // bytes
  uuid: string;
  parentUuid?: string;
  tar?: string;          // the layer tar (plain/gzip/zstd); absent = only mkfs
  mkfs?: { fstype: string; uuid: string };
  fstype: string;
  limits?: ApplyTarLimits;
  out: string;           // sealed LSMT output
  signal?: AbortSignal;
  /** TurboOCI meta layer: file data is mapped to the tar stream, not stored (needs tar). */
  turbo?: boolean;
  /** TurboOCI: `tar` is the uncompressed tar stream (its offsets are what the meta layer maps to). */
  plainTar?: boolean;
  /** Apply in this long-lived apply child instead of starting one for this layer. */
  applier?: ApplyWorker;
}

export interface BuildLayerResult {
  commit: CommitResult;
  apply?: ApplyTarStats;
  applyMs: number;
  commitMs: number;
  /** Where the time went (ms): attach, mkfs, the apply child's own phases (spawn = its start-up), detach, commit. */
  phases: Record<string, number>;
}

let deviceSeq = 0;

export async function buildLayer(spec: BuildLayerSpec): Promise<BuildLayerResult> {
  const data = path.join(spec.workDir, 'writable_data');
  const index = path.join(spec.workDir, 'writable_index');
  const fuseDir = path.join(spec.workDir, 'fuse');
  const mnt = path.join(spec.workDir, 'mnt');
  const runs = spec.turbo ? path.join(spec.workDir, 'target_runs') : undefined;
  fs.mkdirSync(mnt, { recursive: true });
  createWritableLayer(data, index, { vsize: spec.vsize, uuid: spec.uuid, parentUuid: spec.parentUuid });
  const t0 = Date.now();
  const phases: Record<string, number> = {};
  let lapAt = t0;
  const lap = (k: string) => {
    phases[k] = Date.now() - lapAt;
    lapAt = Date.now();
  };
  let apply: ApplyTarStats | undefined;
  try {
    const dev = await deviceAttach({
      id: `obdconv-${process.pid}-${++deviceSeq}`, mountDir: fuseDir, lowers: spec.lowers, upperData: data, upperIndex: index,
      threads: 4, // measured: with 2 FUSE threads the apply of many small files is ~1.5x slower
    });
    lap('attach');
    let detached = false;
    try {
      if (spec.mkfs) await runMkfs(dev.path, spec.mkfs.fstype, spec.mkfs.uuid, spec.signal);
      lap('mkfs');
      if (spec.tar) {
        const req: ApplyChildRequest = {
          device: dev.path, mountpoint: mnt, input: spec.tar, plainTar: spec.plainTar, fstype: spec.fstype,
          mountOptions: mountOptions(spec.fstype), limits: spec.limits, targetRunsOut: runs,
        };
        const child = await (spec.applier ? spec.applier.apply(req, spec.signal) : runApplyChild(req, spec.signal));
        apply = child.stats;
        const inChild = child.phases.mount + child.phases.apply + child.phases.umount + child.phases.markWritten;
        phases.spawn = Date.now() - lapAt - inChild;
        Object.assign(phases, child.phases);
        lapAt = Date.now();
      }
      await deviceDetach(dev.handle, false);
      detached = true;
      lap('detach');
    } finally {
      if (!detached) await deviceDetach(dev.handle, true).catch(() => undefined);
    }
    const t1 = Date.now();
    const commit = commitLayer(data, index, spec.out, { uuid: spec.uuid, parentUuid: spec.parentUuid,
      ...(runs && fs.existsSync(runs) ? { targetRuns: runs } : {}) });
    phases.commit = Date.now() - t1;
    return { commit, apply, applyMs: t1 - t0, commitMs: Date.now() - t1, phases };
  } finally {
    fs.rmSync(data, { force: true });
    fs.rmSync(index, { force: true });
    if (runs) fs.rmSync(runs, { force: true });
  }
}

/** No journal while converting (journal blocks would land in every layer); no background inode-table zeroing. */
function mountOptions(fstype: string): string {
  return fstype === 'ext4' ? 'noload,noinit_itable' : 'rw';
}

/** mkfs.ext4 with the feature set of overlaybd's own ext4_64 base layer (readable by old kernels). */
export function mkfsArgs(fstype: string, device: string, uuid: string): [string, string[]] {
  if (fstype !== 'ext4') throw new ConvertOptionError(`--fstype ${fstype}: only ext4 is supported`);
  return ['mkfs.ext4', ['-F', '-q', '-b', '4096', '-i', '16384', '-U', uuid,
    '-O', '^metadata_csum,^metadata_csum_seed,^orphan_file,uninit_bg',
    '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0', device]];
}

function runMkfs(device: string, fstype: string, uuid: string, signal?: AbortSignal): Promise<void> {
  const [cmd, args] = mkfsArgs(fstype, device, uuid);
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { signal }, (err, _out, stderr) => {
      if (err) reject(new LayerBuildError(`${cmd} ${device}: ${stderr.trim() || err.message}`, err));
      else resolve();
    });
  });
}

function runApplyChild(req: ApplyChildRequest, signal?: AbortSignal): Promise<ApplyReply> {
  const [cmd, args] = applyChildArgs(JSON.stringify(req));
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], signal, killSignal: 'SIGKILL' });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    child.on('error', reject);
    child.on('close', (code, sig) => {
      try {
        resolve(parseApplyReply(out.trim().split('\n').pop() ?? '', `exited with ${sig ?? code}`, err));
      } catch (e) {
        reject(e);
      }
    });
  });
}
