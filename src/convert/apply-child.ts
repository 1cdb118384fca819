// The apply child: started by the converter inside a private mount namespace (`unshare -m`), so a
// crash or kill can never leave the layer filesystem mounted anywhere. It mounts the layer device,
// applies one tar onto it (chroot'ed, through the addon's libarchive applier), unmounts, and
// prints its statistics as one JSON line on stdout. The parent serves the device and must not
// touch it itself (a process must not do blocking I/O on a device it serves).
//
//   unshare -m --propagation private node apply-child.js '{"device":…,"mountpoint":…,"input":…}'
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { convertApplyTar, ext4MarkExtentsWritten, type ApplyTarLimits } from '../addon';

export interface ApplyChildRequest {
  device: string;
  mountpoint: string;
  input: string; // layer blob file (compressed or not)
  fstype: string;
  mountOptions: string;
  limits?: ApplyTarLimits;
  targetRunsOut?: string; // TurboOCI: where file data sits on the device and in the tar
}

function main(): void {
  const req = JSON.parse(process.argv[2] ?? '{}') as ApplyChildRequest;
  process.umask(0o022);
  execFileSync('mount', ['-t', req.fstype, '-o', req.mountOptions, req.device, req.mountpoint], { stdio: ['ignore', 'ignore', 'pipe'] });
  let mounted = true;
  try {
    const fd = fs.openSync(req.input, 'r');
    try {
      const stats = convertApplyTar({ inputFd: fd, root: req.mountpoint, limits: req.limits, targetRunsOut: req.targetRunsOut });
      execFileSync('umount', [req.mountpoint], { stdio: ['ignore', 'ignore', 'pipe'] });
      mounted = false;
      // TurboOCI: the preallocated (unwritten) extents now map to the tar; ext4 must read them.
      if (stats.preallocatedInodes?.length) ext4MarkExtentsWritten(req.device, stats.preallocatedInodes);
      delete stats.preallocatedInodes; // the parent needs only the counts
      process.stdout.write(JSON.stringify({ ok: true, stats }) + '\n');
    } finally {
      fs.closeSync(fd);
    }
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
