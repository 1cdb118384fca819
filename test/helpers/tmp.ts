// Temp dirs for tests: created under os.tmpdir(), removed by the owner (`cleanup()`) or, whatever
// happens, when the test process exits.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const live = new Set<string>();
process.once('exit', () => {
  for (const d of live) fs.rmSync(d, { recursive: true, force: true });
});

export interface TempDir {
  readonly path: string;
  /** Path of a name inside the dir. */
  join(...parts: string[]): string;
  cleanup(): void;
}

export function makeTempDir(prefix = 'obd-test-'): TempDir {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  live.add(dir);
  return {
    path: dir,
    join: (...parts: string[]) => path.join(dir, ...parts),
    cleanup: () => {
      fs.rmSync(dir, { recursive: true, force: true });
      live.delete(dir);
    },
  };
}
