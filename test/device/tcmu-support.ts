// Shared by the TCMU tests: the simulator/serve program built next to the addon (CMake target
// tcmu_sim_test), rebuilt through `npm run build:addon` when its sources are newer than it.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const ROOT = path.join(__dirname, '..', '..', '..');
export const TCMU_PROGRAM = path.join(ROOT, 'build', 'Release', 'tcmu_sim_test');

function newestSource(): number {
  let newest = 0;
  for (const dir of ['addon/src/transport/tcmu', 'addon/test/tcmu']) {
    for (const f of fs.readdirSync(path.join(ROOT, dir))) newest = Math.max(newest, fs.statSync(path.join(ROOT, dir, f)).mtimeMs);
  }
  return newest;
}

/** Makes sure the program exists and is not older than its sources; returns its path. */
export function tcmuProgram(): string {
  const stale = !fs.existsSync(TCMU_PROGRAM) || fs.statSync(TCMU_PROGRAM).mtimeMs < newestSource();
  if (stale) {
    const r = spawnSync('npm', ['run', 'build:addon'], { cwd: ROOT, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`npm run build:addon failed:\n${r.stdout}\n${r.stderr}`);
  }
  return TCMU_PROGRAM;
}
