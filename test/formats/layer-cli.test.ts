// `obd layer …` as a user runs it: a child process per command, exit codes and one-line errors.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileSha256, fixture, makeTempDir, MiB, stackSha256, withStack } from './lsmt-support';
import { obdBin } from '../helpers/bin';

const tmp = makeTempDir('obd-layer-cli-');
after(() => tmp.cleanup());

const obdJs = obdBin();
function obd(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [obdJs, 'layer', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
function ok(...args: string[]): string {
  const r = obd(...args);
  assert.equal(r.code, 0, `obd layer ${args.join(' ')} failed: ${r.err}`);
  return r.out;
}
function failsWithOneLine(args: string[], pattern: RegExp): void {
  const r = obd(...args);
  assert.notEqual(r.code, 0, `expected failure: obd layer ${args.join(' ')}`);
  const lines = r.err.trim().split('\n');
  assert.equal(lines.length, 1, `one-line error, got:\n${r.err}`);
  assert.match(lines[0], pattern);
}

describe('obd layer CLI', () => {
  it('every command has --help', () => {
    for (const cmd of ['create', 'commit', 'info', 'export', 'zfile', 'unzfile']) {
      const out = ok(cmd, '--help');
      assert.match(out, new RegExp(`Usage: obd layer ${cmd}`));
    }
  });

  it('create → info → commit (uuid, parent, tag) → info', () => {
    const data = tmp.join('c.data');
    const index = tmp.join('c.index');
    const uuid = ok('create', data, index, '--vsize', '64M', '--uuid', '0a0a0a0a-0000-4000-8000-000000000003').trim();
    assert.equal(uuid, '0A0A0A0A-0000-4000-8000-000000000003');
    assert.equal(fileSha256(data), fileSha256(fixture('a_empty/a3_api_64m.rw.data')));
    const info = JSON.parse(ok('info', '--json', data));
    assert.equal(info.type, 'lsmt-rw-data');
    assert.equal(info.virtualSize, 64 * MiB);
    assert.equal(info.extentCount, null, 'a data file has no index of its own');
    assert.equal(JSON.parse(ok('info', '--json', index)).extentCount, 0);
    const out = tmp.join('c.lsmt');
    ok('commit', '--uuid', '0a0a0a0a-0000-4000-8000-0000000000c3', data, index, out);
    assert.equal(fileSha256(out), '77c5879c5fe1ec314b57e7f415dad1edabc1d574d118b64144c546e438262247');
    const text = ok('info', out);
    assert.match(text, /^type:\s+lsmt-sealed$/m);
    assert.match(text, /^uuid:\s+0A0A0A0A-0000-4000-8000-0000000000C3$/m);
    assert.match(text, /^virtual size:\s+64 MiB/m);
  });

  it('commit of the fixture b layer with -m is byte-identical to overlaybd-commit', () => {
    const out = tmp.join('b.lsmt');
    ok('commit', '--uuid', 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeee01', '-m', 'fixture b base layer', fixture('b_patterns/b.rw.data'), fixture('b_patterns/b.rw.index'), out);
    assert.equal(fileSha256(out), 'e06d416ed5dfcb75ffc7f516f4a1174da0ca16b4f1a6bd58ea900537b4dd5c03');
  });

  it('commit --zfile --algorithm zstd --bs 64k writes a ZFile that info describes', () => {
    const out = tmp.join('b.zfile');
    ok('commit', '--zfile', '--algorithm', 'zstd', '--bs', '64k', fixture('d_stack/d.rw.data'), fixture('d_stack/d.rw.index'), out);
    const info = JSON.parse(ok('info', '--json', out));
    assert.equal(info.type, 'zfile+lsmt-sealed');
    assert.equal(info.compression, 'zstd');
    assert.equal(info.blockSize, 65536);
    assert.equal(info.extentCount, 5);
    assert.equal(info.parentUuid, 'AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEE01', 'parent copied from the writable layer');
  });

  it('info on a tar-wrapped ZFile names every wrapper', () => {
    const info = JSON.parse(ok('info', '--json', fixture('c_zfile/c.lz4_bs4k.zfile.tar')));
    assert.equal(info.type, 'tar-wrapped+zfile+lsmt-sealed');
    assert.equal(info.uuid, 'AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEE01');
    assert.equal(info.compression, 'lz4');
    assert.equal(info.checksums, true);
  });

  it('export flattens lowers + a writable upper into a sparse raw image', () => {
    const data = tmp.join('up.data');
    const index = tmp.join('up.index');
    fs.copyFileSync(fixture('d_stack/d.rw.data'), data);
    fs.copyFileSync(fixture('d_stack/d.rw.index'), index);
    const raw = tmp.join('merged.raw');
    ok('export', fixture('b_patterns/b.commit.lsmt'), '--upper', `${data},${index}`, '-o', raw);
    assert.equal(fs.statSync(raw).size, 64 * MiB);
    assert.equal(fileSha256(raw), 'a1e74b4005af3039798892054881f3daa310db281d52157e6dd0bdb65f5bc65d');
    assert.ok(fs.statSync(raw).blocks * 512 < 4 * MiB, 'holes are not written');
    withStack({ lowers: [fixture('b_patterns/b.commit.lsmt'), fixture('d_stack/d.commit.lsmt')] }, (s) =>
      assert.equal(stackSha256(s), fileSha256(raw)),
    );
  });

  it('bad arguments and bad files give one-line errors and a non-zero exit', () => {
    failsWithOneLine(['create', tmp.join('x.data'), tmp.join('x.index')], /required option '--vsize/);
    failsWithOneLine(['create', tmp.join('x.data'), tmp.join('x.index'), '--vsize', '12Q'], /--vsize/);
    failsWithOneLine(['create', tmp.join('x.data'), tmp.join('x.index'), '--vsize', '1G', '--uuid', 'nope'], /invalid uuid 'nope'/);
    failsWithOneLine(['commit', '--bs', '8k', 'a', 'b', 'c'], /--algorithm and --bs need --zfile/);
    failsWithOneLine(['commit', '--zfile', '--bs', '3k', 'a', 'b', 'c'], /block size/);
    failsWithOneLine(['commit', tmp.join('missing.data'), tmp.join('missing.index'), tmp.join('o')], /missing\.data: open: No such file/);
    failsWithOneLine(['info', tmp.join('nothing')], /nothing: open: No such file/);
    failsWithOneLine(['export', fixture('b_patterns/b.rw.data'), '-o', tmp.join('o.raw')], /b\.rw\.data: trailer/);
    failsWithOneLine(['export', fixture('b_patterns/b.commit.lsmt'), '--upper', 'onlyone', '-o', tmp.join('o.raw')], /expected <data>,<index>/);
    failsWithOneLine(['export', fixture('b_patterns/b.commit.lsmt')], /required option '-o/);
    failsWithOneLine(['frobnicate'], /unknown command/);
  });
});
