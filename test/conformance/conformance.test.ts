// containerd's own snapshotter conformance suite (snapshots/testsuite of containerd 1.6, Debian's
// golang-github-containerd-containerd-dev) against `obd snapshotter`, through containerd's proxy
// snapshotter client — the same code containerd uses for a proxy plugin. The Go harness is
// conformance_test.go next to this file; it is built once into /var/tmp (rebuilt when it changes)
// and starts one snapshotter per test with a fresh config.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { obdBin } from '../helpers/bin';

const WORK = process.env.OBD_CONFORMANCE_DIR ?? '/var/tmp/obd-conformance-main';
const GOPATH_SRC = '/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite';
const EXPECTED = [
  'Basic', 'StatActive', 'StatComitted', 'TransitivityTest', 'PreareViewFailingtest', 'Update', 'Remove', 'Walk',
  'LayerFileupdate', 'RemoveDirectoryInLowerLayer', 'Chown', 'DirectoryPermissionOnCommit', 'RemoveIntermediateSnapshot',
  'DeletedFilesInChildSnapshot', 'MoveFileFromLowerLayer', 'Rename', 'ViewReadonly', 'StatInWalk', 'CloseTwice',
  'RootPermission', '128LayersMount',
];

function harnessSource(): string {
  for (let dir = __dirname; path.dirname(dir) !== dir; dir = path.dirname(dir)) {
    const p = path.join(dir, 'test', 'conformance', 'conformance_test.go');
    if (fs.existsSync(p)) return p;
  }
  throw new Error('test/conformance/conformance_test.go not found');
}

/** Builds the Go harness in GOPATH mode (as Go 1.19 needs it), cached. */
function buildHarness(): string {
  const src = harnessSource();
  const bin = path.join(WORK, 'conformance.test');
  const pkg = path.join(WORK, 'src', 'obdconformance');
  const copy = path.join(pkg, 'conformance_test.go');
  const same = fs.existsSync(bin) && fs.existsSync(copy) && fs.readFileSync(copy).equals(fs.readFileSync(src));
  if (same) return bin;
  fs.mkdirSync(pkg, { recursive: true });
  fs.copyFileSync(src, copy);
  execFileSync('go', ['test', '-c', '-o', bin, '.'], {
    cwd: pkg,
    env: { ...process.env, GOPATH: `${WORK}:/usr/share/gocode`, GO111MODULE: 'off', GOFLAGS: '', GOCACHE: path.join(WORK, 'cache') },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return bin;
}

test('containerd snapshotter conformance suite passes (all 21, or all but Rename as overlayfs)', { timeout: 30 * 60_000 }, async () => {
  assert.ok(fs.existsSync(GOPATH_SRC), 'needs golang-github-containerd-containerd-dev (scripts/install-deps.sh)');
  const bin = buildHarness();
  const cmd = `${process.execPath} ${obdBin()} snapshotter --config {config}`;
  const out = await new Promise<string>((resolve) => {
    execFile(
      bin,
      ['-test.root', '-test.v', '-test.timeout', '20m', '-test.parallel', '2'],
      { cwd: WORK, env: { ...process.env, OBD_SNAPSHOTTER_CMD: cmd }, maxBuffer: 256 << 20, timeout: 25 * 60_000 },
      (_err, stdout, stderr) => resolve(stdout + stderr),
    );
  });
  const result = new Map<string, string>();
  for (const m of out.matchAll(/--- (PASS|FAIL|SKIP): TestSnapshotterConformance\/(\S+)/g)) result.set(m[2], m[1]);
  const failed = EXPECTED.filter((t) => result.get(t) !== 'PASS' && !(t === 'Rename' && result.get(t) !== undefined));
  const summary = EXPECTED.map((t) => `${t}=${result.get(t) ?? 'missing'}`).join(' ');
  assert.deepEqual(failed, [], `conformance: ${summary}\n${out.split('\n').filter((l) => /FAIL|Error|error/.test(l)).slice(0, 40).join('\n')}`);
  const passed = EXPECTED.filter((t) => result.get(t) === 'PASS').length;
  console.log(`conformance: ${passed}/21 passed; Rename ${result.get('Rename')}`);
  assert.ok(passed >= 20);
});
