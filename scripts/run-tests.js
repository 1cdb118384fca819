#!/usr/bin/env node
// Runs the compiled test files (dist/test/**/*.test.js) with node's built-in runner.
// Usage: npm test [-- name-filter...]   e.g. `npm test -- lsmt zfile` runs files whose path contains one of them.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const root = path.join(__dirname, '..');
const testDir = path.join(root, 'dist', 'test');
if (!fs.existsSync(testDir)) {
  console.error('dist/test is missing: run `npm run build` (scripts/test.sh does it for you)');
  process.exit(2);
}
if (process.getuid && process.getuid() !== 0) {
  console.error('tests need root (loop devices, mounts, containerd): run them as root');
  process.exit(2);
}

function collect(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return collect(p);
    return e.name.endsWith('.test.js') ? [p] : [];
  });
}

const filters = process.argv.slice(2);
const files = collect(testDir)
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ')}`);
  process.exit(2);
}
// Files run one at a time: many of them start containerd, registries and loop devices, and the
// machines have two cores. Tests inside a file may still run concurrently where they say so.
const r = spawnSync(process.execPath, ['--test', '--test-concurrency=1', '--test-reporter=spec', ...files], {
  stdio: 'inherit',
  cwd: root,
});
process.exit(r.status === null ? 1 : r.status);
