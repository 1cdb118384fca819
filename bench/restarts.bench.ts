// `npm run bench -- restarts`: the restart acceptance suite at full length — 20 rounds each of
// kill -9 and SIGTERM of deviced under a verifying overlayfs-mode reader and dir-mode writer in
// containers (npm test runs 5 of each), and 5 crashes in the middle of a remote fetch. Prints the
// stall each restart caused inside the containers and its median and max.
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const suite = path.join(__dirname, '..', 'test', 'lazy', 'restarts.test.js');
const r = spawnSync(process.execPath, ['--test', '--test-reporter=spec', suite], {
  stdio: 'inherit',
  env: { ...process.env, OBD_RESTART_ROUNDS: '20' },
});
process.exit(r.status ?? 1);
