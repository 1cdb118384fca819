// Kernel features obd needs, read from /proc and /sys under a root directory ("/" on a node; a
// captured tree in tests). A feature is present when the kernel has it now (built in or loaded), or
// when `modprobe -n` finds its module (only on the real root: deviced's unit loads them at start).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Check } from './report';

export interface KernelView {
  root: string;
}

function read(view: KernelView, rel: string): string | undefined {
  try {
    return fs.readFileSync(path.join(view.root, rel), 'utf8');
  } catch {
    return undefined;
  }
}

function exists(view: KernelView, rel: string): boolean {
  return fs.existsSync(path.join(view.root, rel));
}

function filesystems(view: KernelView): Set<string> {
  const text = read(view, 'proc/filesystems') ?? '';
  return new Set(text.split('\n').map((l) => l.trim().split(/\s+/).pop() ?? '').filter(Boolean));
}

function loadable(view: KernelView, module: string): boolean {
  if (path.resolve(view.root) !== '/') return false;
  return spawnSync('modprobe', ['-n', '-q', module], { stdio: 'ignore' }).status === 0;
}

interface Feature {
  name: string;
  module: string;
  kconfig: string;
  present: (v: KernelView, fss: Set<string>) => boolean;
  why: string;
}

const FEATURES: Feature[] = [
  {
    name: 'loop',
    module: 'loop',
    kconfig: 'CONFIG_BLK_DEV_LOOP',
    present: (v) => exists(v, 'sys/module/loop') || exists(v, 'dev/loop-control'),
    why: 'the fuse-loop transport and obdconv attach files as loop devices',
  },
  {
    name: 'FUSE',
    module: 'fuse',
    kconfig: 'CONFIG_FUSE_FS',
    present: (v, fss) => fss.has('fuse') || exists(v, 'sys/module/fuse'),
    why: 'the fuse-loop transport serves each device as a FUSE file',
  },
  {
    name: 'overlayfs',
    module: 'overlay',
    kconfig: 'CONFIG_OVERLAY_FS',
    present: (v, fss) => fss.has('overlay'),
    why: 'container snapshots (rwMode overlayfs) and plain OCI images are overlay mounts',
  },
  {
    name: 'ext4',
    module: 'ext4',
    kconfig: 'CONFIG_EXT4_FS',
    present: (v, fss) => fss.has('ext4'),
    why: 'overlaybd images hold an ext4 filesystem',
  },
];

/** loop, FUSE, overlayfs and ext4 (blockers when missing), erofs and FUSE over io_uring (reported). */
export function kernelChecks(view: KernelView, needs: { fuseLoop: boolean; fuseIoUring?: boolean }): Check[] {
  const fss = filesystems(view);
  const out: Check[] = [];
  for (const f of FEATURES) {
    const name = `kernel: ${f.name}`;
    if (f.present(view, fss)) out.push({ name, status: 'ok', detail: 'present' });
    else if (loadable(view, f.module)) out.push({ name, status: 'ok', detail: `module ${f.module} is available and loaded on demand` });
    else if (!needs.fuseLoop && (f.name === 'loop' || f.name === 'FUSE'))
      out.push({ name, status: 'info', detail: `missing (module ${f.module}, ${f.kconfig}); not needed by the tcmu transport` });
    else out.push({ name, status: 'blocker', detail: `missing: load module ${f.module} or build the kernel with ${f.kconfig}; ${f.why}` });
  }
  out.push(
    fss.has('erofs') || exists(view, 'sys/module/erofs') || loadable(view, 'erofs')
      ? { name: 'kernel: erofs', status: 'ok', detail: 'present (not needed by obd’s ext4 images)' }
      : { name: 'kernel: erofs', status: 'info', detail: 'missing (CONFIG_EROFS_FS); obd’s images are ext4, so nothing depends on it' },
  );
  out.push(withFusePath(fuseUringCheck(view), needs));
  return out;
}

/** Which FUSE path new fuse-loop devices take: io_uring needs the kernel's switch and `fuseIoUring`. */
function withFusePath(c: Check, needs: { fuseLoop: boolean; fuseIoUring?: boolean }): Check {
  if (!needs.fuseLoop) return c;
  const path = c.status === 'ok' && needs.fuseIoUring ? 'io_uring' : `/dev/fuse${needs.fuseIoUring ? '' : ' (fuseIoUring is off)'}`;
  return { ...c, detail: `${c.detail}; new fuse-loop devices use ${path}` };
}

/** FUSE over io_uring: compiled in (the parameter exists) and switched on (enable_uring = Y). */
export function fuseUringCheck(view: KernelView): Check {
  const name = 'kernel: FUSE over io_uring';
  const param = read(view, 'sys/module/fuse/parameters/enable_uring');
  if (param === undefined)
    return { name, status: 'info', detail: 'not in this kernel (CONFIG_FUSE_IO_URING, Linux ≥ 6.14): FUSE requests go through /dev/fuse reads' };
  if (/^[Y1]/.test(param.trim())) return { name, status: 'ok', detail: 'enabled (/sys/module/fuse/parameters/enable_uring = Y)' };
  return {
    name,
    status: 'info',
    detail: 'available but off: `echo Y > /sys/module/fuse/parameters/enable_uring` turns it on for FUSE mounts made afterwards',
  };
}
