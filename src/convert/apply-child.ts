// The apply child: started by the converter inside a private mount namespace (`unshare -m`), so a
// crash or kill can never leave the layer filesystem mounted anywhere. It mounts the layer device,
// applies one tar onto it (chroot'ed, through the addon's libarchive applier), unmounts, and
// prints its statistics as one JSON line on stdout. The parent serves the device and must not
// touch it itself (a process must not do blocking I/O on a device it serves).
//
//   unshare -m --propagation private node apply-child.js '{"device":…,"mountpoint":…,"input":…}'
//   unshare -m --propagation private node apply-child.js --serve   (one request per stdin line, one
//     reply line each: `obdconv --turbo-oci` keeps one child for all its layers, see apply-worker.ts)
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import readline from 'node:readline';
import { convertApplyTar, ext4MarkExtentsWritten, type ApplyTarLimits, type ApplyTarStats } from '../addon';

export interface ApplyChildRequest {
  device: string;
  mountpoint: string;
  input: string; // layer blob file (compressed or not)
  /** TurboOCI: `input` is the uncompressed tar stream (compression is not looked for) */
  plainTar?: boolean;
  fstype: string;
  mountOptions: string;
  limits?: ApplyTarLimits;
  targetRunsOut?: string; // TurboOCI: where file data sits on the device and in the tar
}

/** What the child spent its time on (ms), for obdconv's phase breakdown. */
export type ApplyChildPhases = Record<'mount' | 'apply' | 'umount' | 'markWritten', number>;

function applyTar(req: ApplyChildRequest): ApplyTarStats {
  const fd = fs.openSync(req.input, 'r');
  try {
    return convertApplyTar({ inputFd: fd, root: req.mountpoint, limits: req.limits, targetRunsOut: req.targetRunsOut, plainTar: req.plainTar });
  } finally {
    fs.closeSync(fd);
  }
}

/** One request: mount, apply, unmount, mark the preallocated extents written; its reply. */
function applyOne(req: ApplyChildRequest): { ok: true; stats: ApplyTarStats; phases: ApplyChildPhases } {
  let t = Date.now();
  const phases: ApplyChildPhases = { mount: 0, apply: 0, umount: 0, markWritten: 0 };
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
    return { ok: true, stats, phases };
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

function failure(err: unknown): { ok: false; error: string; code: string } {
  const e = err as Error & { code?: string; stderr?: Buffer };
  const detail = e.stderr && e.stderr.length ? `: ${e.stderr.toString().trim()}` : '';
  return { ok: false, error: `${e.message}${detail}`, code: e.code ?? '' };
}

async function serve(): Promise<void> {
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (!line.trim()) continue;
    let reply: object;
    try {
      reply = applyOne(JSON.parse(line) as ApplyChildRequest);
    } catch (err) {
      reply = failure(err);
    }
    process.stdout.write(JSON.stringify(reply) + '\n');
  }
}

function main(): void {
  process.umask(0o022);
  if (process.argv[2] === '--serve') {
    serve().catch((err) => {
      process.stderr.write(`apply child: ${(err as Error).message}\n`);
      process.exitCode = 1;
    });
    return;
  }
  process.stdout.write(JSON.stringify(applyOne(JSON.parse(process.argv[2] ?? '{}') as ApplyChildRequest)) + '\n');
}

try {
  main();
} catch (err) {
  process.stdout.write(JSON.stringify(failure(err)) + '\n');
  process.exitCode = 1;
}
