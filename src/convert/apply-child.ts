// The apply child: started by the converter inside a private mount namespace (`unshare -m`), so a
// crash or kill can never leave the layer filesystem mounted anywhere. It mounts the layer device,
// applies one tar onto it (chroot'ed, through the addon's libarchive applier), unmounts, and
// prints its statistics as one JSON line on stdout. The parent serves the device and must not
// touch it itself (a process must not do blocking I/O on a device it serves).
//
//   unshare -m --propagation private node apply-child.js '{"device":…,"mountpoint":…,"input":…}'
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { convertApplyTar, ext4MarkExtentsWritten, type ApplyTarLayerInput, type ApplyTarLimits, type ApplyTarStats } from '../addon';

export interface ApplyChildRequest {
  device: string;
  mountpoint: string;
  input: string; // layer blob file (compressed or not)
  /** TurboOCI: read `input` as it arrives, gzip inflated once with its index built on the way */
  layer?: Omit<ApplyTarLayerInput, 'path'>;
  fstype: string;
  mountOptions: string;
  limits?: ApplyTarLimits;
  targetRunsOut?: string; // TurboOCI: where file data sits on the device and in the tar
}

/** What the child spent its time on (ms), for obdconv's phase breakdown. */
export type ApplyChildPhases = Record<'start' | 'mount' | 'apply' | 'umount' | 'markWritten', number>;

function applyTar(req: ApplyChildRequest): ApplyTarStats {
  if (req.layer) {
    return convertApplyTar({ input: { path: req.input, ...req.layer }, root: req.mountpoint, limits: req.limits, targetRunsOut: req.targetRunsOut });
  }
  const fd = fs.openSync(req.input, 'r');
  try {
    return convertApplyTar({ inputFd: fd, root: req.mountpoint, limits: req.limits, targetRunsOut: req.targetRunsOut });
  } finally {
    fs.closeSync(fd);
  }
}

function main(): void {
  const req = JSON.parse(process.argv[2] ?? '{}') as ApplyChildRequest;
  process.umask(0o022);
  let t = Date.now();
  const phases: ApplyChildPhases = { start: process.uptime() * 1000, mount: 0, apply: 0, umount: 0, markWritten: 0 };
  const lap = (k: keyof ApplyChildPhases) => {
    phases[k] = Date.now() - t;
    t = Date.now();
  };
  execFileSync('mount', ['-t', req.fstype, '-o', req.mountOptions, req.device, req.mountpoint], { stdio: ['ignore', 'ignore', 'pipe'] });
  lap('mount');
  let mounted = true;
  try {
    const stats = applyTar(req);
    lap('apply');
    execFileSync('umount', [req.mountpoint], { stdio: ['ignore', 'ignore', 'pipe'] });
    mounted = false;
    lap('umount');
    // TurboOCI: the preallocated (unwritten) extents now map to the tar; ext4 must read them.
    if (stats.preallocatedInodes?.length) ext4MarkExtentsWritten(req.device, stats.preallocatedInodes);
    lap('markWritten');
    delete stats.preallocatedInodes; // the parent needs only the counts
    process.stdout.write(JSON.stringify({ ok: true, stats, phases }) + '\n');
  } finally {
    if (mounted) {
      try {
        execFileSync('umount', [req.mountpoint], { stdio: 'ignore' });
      } catch {
        // the namespace goes away with this process, and the mount with it
      }
    }
  }
}

try {
  main();
} catch (err) {
  const e = err as Error & { code?: string; stderr?: Buffer };
  const detail = e.stderr && e.stderr.length ? `: ${e.stderr.toString().trim()}` : '';
  process.stdout.write(JSON.stringify({ ok: false, error: `${e.message}${detail}`, code: e.code ?? '' }) + '\n');
  process.exitCode = 1;
}
