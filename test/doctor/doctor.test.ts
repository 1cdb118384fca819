// `obd doctor`: a healthy node (a real deviced, snapshotter and containerd) has no blocker and exits
// 0; each blocker it names is produced by breaking exactly that thing, and makes it exit non-zero.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as addon from '../../src/addon';
import { runDoctor, type DoctorOptions } from '../../src/doctor/doctor';
import type { Check, DoctorReport } from '../../src/doctor/report';
import { parseToml } from '../../src/doctor/toml';
import { obdBin } from '../helpers/bin';
import { makeTempDir, type TempDir } from '../helpers/tmp';
import { LazyEnv } from '../lazy/env';

function check(r: DoctorReport, name: string): Check {
  const c = r.checks.find((x) => x.name === name);
  assert.ok(c, `no check named ${name}: ${r.checks.map((x) => x.name).join(', ')}`);
  return c;
}

function doctorCli(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [obdBin(), 'doctor', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('obd doctor on a healthy node', () => {
  const env = new LazyEnv();
  let containerdConfig: string;

  before(async () => {
    await env.start();
    containerdConfig = path.join(env.containerd.dir, 'config.toml');
  });
  after(() => env.stop());

  const cliArgs = (config: string) => ['--config', config, '--containerd-config', containerdConfig, '--containerd-address', env.containerd.address];

  it('finds no blocker, exits 0 and reports each part as found', () => {
    const r = doctorCli([...cliArgs(env.configPath), '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const rep = JSON.parse(r.stdout) as DoctorReport;
    assert.equal(rep.ok, true);
    assert.deepEqual(rep.checks.filter((c) => c.status === 'blocker'), []);
    for (const name of ['config', 'kernel: loop', 'kernel: FUSE', 'kernel: overlayfs', 'kernel: ext4', 'containerd: proxy plugin', 'socket: containerd', 'socket: snapshotter', 'socket: deviced', 'cache: directory'])
      assert.equal(check(rep, name).status, 'ok', JSON.stringify(check(rep, name)));
    assert.match(check(rep, 'containerd: proxy plugin').detail, /\[proxy_plugins\.obd\] type = "snapshot"/);
    assert.match(check(rep, 'containerd: CRI').detail, /CRI plugin is disabled/); // the test containerd runs without CRI
    assert.equal(check(rep, 'transport').detail, 'fuse-loop (configured)');
    assert.match(check(rep, 'device cache').detail, /^deviceCache auto: new fuse-loop devices are page-cached when all lowers are local, direct I\/O for lazy/);
    assert.match(check(rep, 'kernel: FUSE over io_uring').detail, /enable_uring|not in this kernel/);
  });

  it('prints a table for people', () => {
    const r = doctorCli(cliArgs(env.configPath));
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.match(r.stdout, /^CHECK +STATUS +DETAIL$/m);
    assert.match(r.stdout, /^socket: deviced +ok +/m);
    assert.match(r.stdout, /no blockers/);
  });

  it('with transport auto, says what deviced would pick and why; warnings alone exit 0', () => {
    const cfg = { ...env.config, transport: 'auto', cacheConfig: { ...(env.config.cacheConfig as object), cacheSizeGB: 1e7 } };
    const file = env.tmp.join('auto.json');
    fs.writeFileSync(file, JSON.stringify(cfg));
    const r = doctorCli([...cliArgs(file), '--json']);
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const rep = JSON.parse(r.stdout) as DoctorReport;
    const tcmu = addon.tcmuSupported(true);
    const t = check(rep, 'transport');
    if (tcmu.ok) assert.equal(t.detail, 'auto picks tcmu: kernel supports tcmu');
    else assert.equal(t.detail, `auto picks fuse-loop: tcmu is not usable (${tcmu.reason})`);
    assert.equal(check(rep, 'cache: free space').status, 'warn');
    assert.match(check(rep, 'cache: free space').detail, /lower cacheConfig\.cacheSizeGB/);
  });
});

describe('obd doctor blockers', () => {
  let tmp: TempDir;
  let sysRoot: string;
  const base = (): DoctorOptions => ({
    configPath: tmp.join('config.json'),
    containerdConfig: tmp.join('containerd.toml'),
    containerdAddress: tmp.join('run', 'containerd.sock'),
    sysRoot,
  });
  const writeConfig = (extra: Record<string, unknown> = {}) =>
    fs.writeFileSync(
      tmp.join('config.json'),
      JSON.stringify({ root: tmp.join('root'), address: tmp.join('run', 'sn.sock'), deviceAddress: tmp.join('run', 'd.sock'), transport: 'fuse-loop', cacheConfig: { cacheDir: tmp.join('cache') }, ...extra }),
    );
  const writeContainerd = (text: string) => fs.writeFileSync(tmp.join('containerd.toml'), text);
  const proxy = () => `[proxy_plugins.obd]\n  type = "snapshot"\n  address = "${tmp.join('run', 'sn.sock')}"\n`;

  /** A captured /proc and /sys with every feature obd needs, minus `without`. */
  function makeSysRoot(name: string, without: string[] = [], uring?: string): string {
    const root = tmp.join(name);
    const fss = ['nodev\tsysfs', 'nodev\tproc', '\text4', 'nodev\tfuse', '\tfuseblk', 'nodev\toverlay', '\terofs'].filter((l) => !without.includes(l.split('\t')[1]));
    fs.mkdirSync(path.join(root, 'proc'), { recursive: true });
    fs.writeFileSync(path.join(root, 'proc', 'filesystems'), fss.join('\n') + '\n');
    for (const m of ['loop', 'fuse'].filter((x) => !without.includes(x))) fs.mkdirSync(path.join(root, 'sys', 'module', m, 'parameters'), { recursive: true });
    if (uring !== undefined) fs.writeFileSync(path.join(root, 'sys', 'module', 'fuse', 'parameters', 'enable_uring'), uring + '\n');
    return root;
  }

  before(() => {
    tmp = makeTempDir('obd-doctor-');
    sysRoot = makeSysRoot('sys-all', [], 'N');
    writeConfig();
    writeContainerd(proxy());
  });
  after(() => tmp.cleanup());

  it('a config with a bad key: blocker naming the key, the rest skipped, the CLI exits 1 with JSON', async () => {
    const file = tmp.join('bad.json');
    fs.writeFileSync(file, JSON.stringify({ cacheConfig: { cacheDir: 'relative/dir' } }));
    const r = await runDoctor({ ...base(), configPath: file });
    assert.equal(r.ok, false);
    assert.equal(r.checks.length, 1);
    assert.match(check(r, 'config').detail, /config key "cacheConfig\.cacheDir": must be an absolute path/);
    const cli = doctorCli(['--config', file, '--json']);
    assert.equal(cli.status, 1);
    assert.equal((JSON.parse(cli.stdout) as DoctorReport).ok, false);
  });

  it('a missing config file is a blocker', async () => {
    const r = await runDoctor({ ...base(), configPath: tmp.join('nope.json') });
    assert.equal(check(r, 'config').status, 'blocker');
    assert.match(check(r, 'config').detail, /does not exist/);
  });

  for (const [feature, name, module, kconfig] of [
    ['loop', 'kernel: loop', 'loop', 'CONFIG_BLK_DEV_LOOP'],
    ['fuse', 'kernel: FUSE', 'fuse', 'CONFIG_FUSE_FS'],
    ['overlay', 'kernel: overlayfs', 'overlay', 'CONFIG_OVERLAY_FS'],
    ['ext4', 'kernel: ext4', 'ext4', 'CONFIG_EXT4_FS'],
  ]) {
    it(`a kernel without ${feature}: blocker naming module ${module} and ${kconfig}`, async () => {
      const r = await runDoctor({ ...base(), sysRoot: makeSysRoot(`sys-no-${feature}`, [feature]) });
      const c = check(r, name);
      assert.equal(c.status, 'blocker');
      assert.match(c.detail, new RegExp(`module ${module} .*${kconfig}`));
      assert.equal(r.ok, false);
    });
  }

  it('the captured tree with every feature has no kernel blocker; erofs and FUSE over io_uring are reported', async () => {
    const r = await runDoctor(base());
    for (const c of r.checks.filter((x) => x.name.startsWith('kernel: '))) assert.notEqual(c.status, 'blocker', JSON.stringify(c));
    assert.match(check(r, 'kernel: FUSE over io_uring').detail, /available but off/);
    const on = await runDoctor({ ...base(), sysRoot: makeSysRoot('sys-uring-on', [], 'Y') });
    assert.equal(check(on, 'kernel: FUSE over io_uring').status, 'ok');
    const none = await runDoctor({ ...base(), sysRoot: makeSysRoot('sys-no-uring', ['erofs']) });
    assert.match(check(none, 'kernel: FUSE over io_uring').detail, /not in this kernel \(CONFIG_FUSE_IO_URING/);
    assert.equal(check(none, 'kernel: erofs').status, 'info');
  });

  it('transport tcmu on a kernel without TCMU: blocker naming the missing modules (the decision deviced makes)', async () => {
    writeConfig({ transport: 'tcmu' });
    try {
      const reason = 'kernel lacks target_core_user (CONFIG_TCM_USER2), tcm_loop (CONFIG_LOOPBACK_TARGET)';
      const r = await runDoctor({ ...base(), tcmu: () => ({ ok: false, reason }) });
      const c = check(r, 'transport');
      assert.equal(c.status, 'blocker');
      assert.match(c.detail, /transport "tcmu" needs target_core_user, tcm_loop .*CONFIG_TCM_USER2/);
      // loop and FUSE are not needed then, TCMU is.
      const ok = await runDoctor({ ...base(), sysRoot: makeSysRoot('sys-tcmu', ['loop', 'fuse']), tcmu: () => ({ ok: true, reason: '' }) });
      assert.equal(check(ok, 'transport').status, 'ok');
      assert.equal(check(ok, 'kernel: loop').status, 'info');
      assert.equal(check(ok, 'kernel: FUSE').status, 'info');
    } finally {
      writeConfig();
    }
  });

  it('containerd config missing or unreadable: blocker', async () => {
    let r = await runDoctor({ ...base(), containerdConfig: tmp.join('none.toml') });
    assert.match(check(r, 'containerd: config').detail, /none\.toml does not exist/);
    assert.equal(check(r, 'containerd: config').status, 'blocker');
    fs.writeFileSync(tmp.join('broken.toml'), 'version = 2\n[plugins\n');
    r = await runDoctor({ ...base(), containerdConfig: tmp.join('broken.toml') });
    assert.equal(check(r, 'containerd: config').status, 'blocker');
    assert.match(check(r, 'containerd: config').detail, /line 2/);
  });

  it('no proxy plugin on the snapshotter socket, or one of the wrong type: blocker saying what to add', async () => {
    writeContainerd('version = 2\n[proxy_plugins.other]\n  type = "snapshot"\n  address = "/run/other.sock"\n');
    let r = await runDoctor(base());
    const c = check(r, 'containerd: proxy plugin');
    assert.equal(c.status, 'blocker');
    assert.match(c.detail, /add \[proxy_plugins\.obd\] type = "snapshot" address = ".*sn\.sock".*found: other → \/run\/other\.sock/);
    writeContainerd(`version = 2\n[proxy_plugins.obd]\n  type = "content"\n  address = "${tmp.join('run', 'sn.sock')}"\n`);
    r = await runDoctor(base());
    assert.match(check(r, 'containerd: proxy plugin').detail, /type = "content": it must be "snapshot"/);
    writeContainerd(proxy());
  });

  it('CRI using obd without snapshot annotations: blocker (v2 and v3 layouts); with them: ok; CRI elsewhere: warning', async () => {
    const cases: Array<[string, RegExp, string]> = [
      [`version = 2\n${proxy()}[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "obd"\n`, /not set \(default true\)/, 'blocker'],
      [`version = 2\n${proxy()}[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "obd"\n  disable_snapshot_annotations = true\n`, /is true/, 'blocker'],
      [`version = 3\n${proxy()}[plugins.'io.containerd.cri.v1.images']\n  snapshotter = 'obd'\n`, /io\.containerd\.cri\.v1\.images/, 'blocker'],
      [`version = 2\n${proxy()}[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "obd"\n  disable_snapshot_annotations = false\n`, /with snapshot annotations/, 'ok'],
      [`version = 3\n${proxy()}[plugins.'io.containerd.cri.v1.images']\n  snapshotter = "obd"\n  disable_snapshot_annotations = false\n`, /with snapshot annotations/, 'ok'],
      [`version = 2\n${proxy()}[plugins."io.containerd.grpc.v1.cri".containerd]\n  snapshotter = "overlayfs"\n`, /pods do not run on obd/, 'warn'],
      [`version = 2\n${proxy()}[plugins."io.containerd.grpc.v1.cri".containerd]\n  disable_snapshot_annotations = false\n  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]\n    snapshotter = "obd"\n`, /with snapshot annotations/, 'ok'],
    ];
    try {
      for (const [toml, detail, status] of cases) {
        writeContainerd(toml);
        const c = check(await runDoctor(base()), 'containerd: CRI');
        assert.equal(c.status, status, `${toml}\n→ ${c.detail}`);
        assert.match(c.detail, detail);
      }
    } finally {
      writeContainerd(proxy());
    }
  });

  it('nothing listening on the sockets: a blocker per socket naming the process to start', async () => {
    const r = await runDoctor(base());
    assert.match(check(r, 'socket: containerd').detail, /containerd\.sock: ENOENT/);
    assert.match(check(r, 'socket: snapshotter').detail, /sn\.sock: ENOENT; start `obd snapshotter`/);
    assert.match(check(r, 'socket: deviced').detail, /deviced at .*d\.sock is not reachable.*start `obd deviced`/);
    for (const n of ['socket: containerd', 'socket: snapshotter', 'socket: deviced']) assert.equal(check(r, n).status, 'blocker');
  });

  it('a cache directory or root that cannot be created: blocker', async () => {
    fs.writeFileSync(tmp.join('a-file'), '');
    writeConfig({ root: tmp.join('a-file', 'root'), cacheConfig: { cacheDir: tmp.join('a-file', 'cache') } });
    try {
      const r = await runDoctor(base());
      assert.equal(check(r, 'cache: directory').status, 'blocker');
      assert.match(check(r, 'cache: directory').detail, /a-file\/cache cannot be created: .*a-file is not a directory/);
      assert.equal(check(r, 'state: root').status, 'blocker');
    } finally {
      writeConfig();
    }
  });
});

describe('the TOML reader', () => {
  it('reads what containerd configs use and names the line of an error', () => {
    const t = parseToml(
      [
        'version = 2 # comment',
        'disabled_plugins = ["a",',
        '  "b"]',
        '[plugins."io.containerd.grpc.v1.cri".containerd]',
        "  snapshotter = 'obd'",
        '  x.y = { z = 1_000, w = [true, false] }',
        '[[a.b]]',
        '  s = """multi',
        'line"""',
        '[[a.b]]',
        '  s = "esc\\"aped\\u00e9"',
      ].join('\n'),
    );
    assert.deepEqual(t, {
      version: 2,
      disabled_plugins: ['a', 'b'],
      plugins: { 'io.containerd.grpc.v1.cri': { containerd: { snapshotter: 'obd', x: { y: { z: 1000, w: [true, false] } } } } },
      a: { b: [{ s: 'multi\nline' }, { s: 'esc"apedé' }] },
    });
    assert.throws(() => parseToml('a = 1\na = 2\n'), /line 2: key a is defined twice/);
    assert.throws(() => parseToml('a = "x\n'), /line 1: unterminated string/);
  });
});
