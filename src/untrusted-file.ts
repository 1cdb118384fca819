// Files that a layer's tar may have put in place (anything under a snapshot's fs/) are untrusted: a
// FIFO would block a plain open forever, a symlink would point obd (root) at any host file. They are
// opened here without following a final symlink and without blocking, and accepted only when the
// opened object is a regular file; the caller keeps working on that descriptor, never the path.
import fs from 'node:fs';

const { O_RDONLY, O_NOFOLLOW, O_NONBLOCK } = fs.constants;
const FLAGS = O_RDONLY | O_NOFOLLOW | O_NONBLOCK; // libuv adds O_CLOEXEC

export class UntrustedFileError extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'UntrustedFileError';
  }
}

function reasonOf(err: NodeJS.ErrnoException): string {
  if (err.code === 'ELOOP') return 'is a symbolic link (not followed)';
  return err.message;
}

/** Opens `file` (async, off the event loop); undefined if it does not exist; throws if it is not a regular file. */
export async function openRegularFile(file: string): Promise<fs.promises.FileHandle | undefined> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, FLAGS);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return undefined;
    throw new UntrustedFileError(file, reasonOf(e));
  }
  const st = await fh.stat().catch(async (err: Error) => {
    await fh.close();
    throw err;
  });
  if (!st.isFile()) {
    await fh.close();
    throw new UntrustedFileError(file, 'is not a regular file');
  }
  return fh;
}

/** The first `n` bytes of a regular file (fewer if it is shorter); undefined if it is missing or not a regular file. */
export async function readHeadOfRegularFile(file: string, n: number): Promise<Buffer | undefined> {
  let fh: fs.promises.FileHandle | undefined;
  try {
    fh = await openRegularFile(file);
  } catch (err) {
    if (err instanceof UntrustedFileError) return undefined;
    throw err;
  }
  if (!fh) return undefined;
  try {
    const b = Buffer.alloc(n);
    const { bytesRead } = await fh.read(b, 0, n, 0);
    return b.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** Synchronous twin of openRegularFile for deviced's attach path: a descriptor of a regular file, or an error. */
export function openRegularFileSync(file: string): number | undefined {
  let fd: number;
  try {
    fd = fs.openSync(file, FLAGS);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT') return undefined;
    throw new UntrustedFileError(file, reasonOf(e));
  }
  let ok = false;
  try {
    ok = fs.fstatSync(fd).isFile();
  } finally {
    if (!ok) fs.closeSync(fd);
  }
  if (!ok) throw new UntrustedFileError(file, 'is not a regular file');
  return fd;
}

/** A path that opens exactly the file behind `fd` (for code that can only take a path, e.g. the addon). */
export function pathOfFd(fd: number): string {
  return `/proc/self/fd/${fd}`;
}
