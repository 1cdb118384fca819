// Loop devices and mounts for block-level tests. Every attach/mount registers its undo in a
// Cleanup; `await cleanup.run()` (call it in `after`) undoes everything in reverse order and keeps
// going past failures, and anything still attached at process exit is detached synchronously.
//
//   const cleanup = new Cleanup();
//   after(() => cleanup.run());
//   const dev = attachLoop(cleanup, 'disk.raw', { readOnly: true });
//   mount(cleanup, dev, dir, { type: 'ext4', options: 'ro,noload' });
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';

type Undo = { what: string; fn: () => void };

const pending = new Set<Undo>();
process.once('exit', () => {
  for (const u of [...pending].reverse()) {
    try {
      u.fn();
    } catch {
      // best effort at exit
    }
  }
});

export class Cleanup {
  private undos: Undo[] = [];

  add(what: string, fn: () => void): void {
    const u = { what, fn };
    this.undos.push(u);
    pending.add(u);
  }

  /** Undoes everything (last first); throws one error listing what could not be undone. */
  run(): void {
    const failed: string[] = [];
    while (this.undos.length > 0) {
      const u = this.undos.pop()!;
      pending.delete(u);
      try {
        u.fn();
      } catch (err) {
        failed.push(`${u.what}: ${(err as Error).message}`);
      }
    }
    if (failed.length > 0) throw new Error(`cleanup failed: ${failed.join('; ')}`);
  }
}

function run(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** Attaches a file to a free loop device (`losetup -f --show`), detached by the cleanup. */
export function attachLoop(cleanup: Cleanup, file: string, opts: { readOnly?: boolean } = {}): string {
  const dev = run('losetup', ['-f', '--show', ...(opts.readOnly ? ['-r'] : []), file]);
  cleanup.add(`detach ${dev}`, () => detachLoop(dev));
  return dev;
}

export function detachLoop(dev: string): void {
  for (let i = 0; ; i++) {
    try {
      run('losetup', ['-d', dev]);
      return;
    } catch (err) {
      if (i >= 10) throw err;
      execFileSync('sleep', ['0.2']); // udev may still hold the device briefly after umount
    }
  }
}

/** Mounts a device on an existing dir; unmounted by the cleanup (lazily if busy). */
export function mount(cleanup: Cleanup, dev: string, dir: string, opts: { type?: string; options?: string } = {}): void {
  const args = [...(opts.type ? ['-t', opts.type] : []), ...(opts.options ? ['-o', opts.options] : []), dev, dir];
  run('mount', args);
  cleanup.add(`umount ${dir}`, () => unmount(dir));
}

export function unmount(dir: string): void {
  try {
    run('umount', [dir]);
  } catch (err) {
    if (!isMounted(dir)) return;
    run('umount', ['-l', dir]);
  }
}

export function isMounted(dir: string): boolean {
  const real = fs.existsSync(dir) ? fs.realpathSync(dir) : dir;
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[4] === real);
}

/** Loop devices whose backing file is at or under `dir` (to assert that nothing leaked). */
export function loopsBackedBy(dir: string): string[] {
  const out = run('losetup', ['-a', '-n', '-O', 'NAME,BACK-FILE', '--raw']);
  return out
    .split('\n')
    .filter((l) => l.includes(' '))
    .map((l) => l.split(' '))
    .filter(([, back]) => back === dir || back.startsWith(dir + '/'))
    .map(([name]) => name);
}

/** Every mountpoint at or under `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => unescape(l.split(' ')[4]))
    .filter((m) => m === dir || m.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
}

/** Lazily unmounts everything at or under `dir` (deepest first). */
export function unmountUnder(dir: string): void {
  for (let round = 0; round < 5; round++) {
    const ms = mountsUnder(dir);
    if (ms.length === 0) return;
    for (const m of ms) {
      try {
        execFileSync('umount', ['-l', m], { stdio: 'ignore' });
      } catch {
        /* raced with another unmount */
      }
    }
  }
}

