// Files that readers must see whole or not at all, and that survive a crash once written: write a
// temp file next to the target, fsync it, rename it over the target, fsync the directory (the
// rename is durable only once the directory entry is).
import fs from 'node:fs';
import path from 'node:path';

/** fsyncs a file or a directory (a directory after a rename or unlink in it makes that durable). */
export function fsyncPath(p: string): void {
  const fd = fs.openSync(p, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o644): void {
  const tmp = `${file}.tmp-${process.pid}`;
  try {
    fs.writeFileSync(tmp, data, { mode });
    fsyncPath(tmp);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
  fsyncPath(path.dirname(file));
}

/** JSON with two-space indent and a final newline. */
export function writeJsonAtomic(file: string, value: unknown, mode = 0o644): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n', mode);
}
