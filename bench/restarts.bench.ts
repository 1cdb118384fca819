// `npm run bench -- restarts`: the restart acceptance suites, printing their numbers — 20 rounds each
// of kill -9 and SIGTERM of deviced under a verifying overlayfs-mode reader and dir-mode writer in
// containers, 20 crashes in the middle of a remote fetch (stall min/median/max, deviced start-up
// steps), and the snapshotter's restart window with and without socket activation (connections
// refused; a Prepare through containerd mid-restart).
import path from 'node:path';
import { spawnSync } from 'node:child_process';

const suites = ['lazy/restarts.test.js', 'snapshotter/socket-activation.test.js'].map((s) => path.join(__dirname, '..', 'test', s));
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...suites], { stdio: 'inherit' });
process.exit(r.status ?? 1);
