// The compiled CLI entry points the tests run as child processes.
import fs from 'node:fs';
import path from 'node:path';

/** dist/src/cli/obd.js (or src/cli/obd.ts's compiled twin) found from this file's location. */
export function obdBin(): string {
  for (let dir = __dirname; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    const js = path.join(dir, 'dist', 'src', 'cli', 'obd.js');
    if (fs.existsSync(js)) return js;
    const sibling = path.join(dir, 'src', 'cli', 'obd.js');
    if (fs.existsSync(sibling) && fs.existsSync(path.join(dir, 'src', 'snapshotter', 'service.js'))) return sibling;
  }
  throw new Error('obd.js not found: run `npx tsc -p .`');
}

/** obdconv.js, next to obd.js. */
export function obdconvBin(): string {
  return path.join(path.dirname(obdBin()), 'obdconv.js');
}
