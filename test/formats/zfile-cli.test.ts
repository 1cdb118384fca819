// `obd layer zfile|unzfile` as a user runs them: real process, exit codes, one-line errors.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { zfileInspect } from '../../src/addon';
import { obdBin } from '../helpers/bin';
import { fixture, repoRoot, sha256, tempDir } from './zfile-support';

const obd = obdBin();
const B = fixture('b_patterns/b.commit.lsmt');
const B_SHA = 'e06d416ed5dfcb75ffc7f516f4a1174da0ca16b4f1a6bd58ea900537b4dd5c03';

function run(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [obd, 'layer', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

function failsWith(r: ReturnType<typeof run>, pattern: RegExp): void {
  assert.notEqual(r.code, 0, 'non-zero exit');
  assert.equal(r.stderr.trim().split('\n').length, 1, `one-line error, got:\n${r.stderr}`);
  assert.match(r.stderr, pattern);
}

describe('obd layer zfile', () => {
  const dir = tempDir();

  it('defaults (lz4, 4k, checksums) give exactly what overlaybd-zfile wrote', () => {
    const out = path.join(dir, 'b.zfile');
    const r = run('zfile', B, out);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha256(fs.readFileSync(out)), sha256(fs.readFileSync(fixture('c_zfile/c.lz4_bs4k.zfile'))));
  });

  it('--overwrite-header gives exactly what overlaybd-commit -z wrote', () => {
    const out = path.join(dir, 'b.commit_z.zfile');
    assert.equal(run('zfile', B, out, '--overwrite-header').code, 0);
    assert.equal(sha256(fs.readFileSync(out)), sha256(fs.readFileSync(fixture('c_zfile/c.commit_z_lz4_bs4k.zfile'))));
  });

  it('--algorithm zstd --bs 64k --no-verify; --bs also takes upstream KiB numbers and bytes', () => {
    for (const [bs, expected] of [['64k', 65536], ['16K', 16384], ['8', 8192], ['32768', 32768]] as const) {
      const out = path.join(dir, `b.${bs}.zfile`);
      const r = run('zfile', B, out, '--algorithm', 'zstd', '--bs', bs, '--no-verify');
      assert.equal(r.code, 0, r.stderr);
      const info = zfileInspect(out);
      assert.equal(info.algorithm, 'zstd');
      assert.equal(info.blockSize, expected);
      assert.equal(info.verify, false);
    }
  });

  it('bad arguments: one line, non-zero exit', () => {
    failsWith(run('zfile', B, path.join(dir, 'x'), '--bs', '3k'), /block size must be a power of two from 4k to 64k, got '3k'/);
    failsWith(run('zfile', B, path.join(dir, 'x'), '--bs', '128k'), /block size must be a power of two from 4k to 64k/);
    failsWith(run('zfile', B, path.join(dir, 'x'), '--bs', 'big'), /expected 4k\.\.64k, got 'big'/);
    failsWith(run('zfile', B, path.join(dir, 'x'), '--algorithm', 'gzip'), /Allowed choices are lz4, zstd/);
    failsWith(run('zfile', B), /missing required argument 'out'/);
    failsWith(run('zfile', path.join(dir, 'missing'), path.join(dir, 'x')), /missing: no such file/);
    failsWith(run('zfile', B, B), /output must not be the input file/);
    failsWith(run('zfile', B, path.join(dir, 'no-such-dir', 'x')), /no-such-dir\/x: create: No such file or directory/);
  });

  it('--help exits 0', () => {
    const r = run('zfile', '--help');
    assert.equal(r.code, 0);
    assert.match(r.stdout, /--algorithm/);
  });
});

describe('obd layer unzfile', () => {
  const dir = tempDir();

  it('every upstream ZFile variant decompresses to the original layer', () => {
    for (const f of fs.readdirSync(fixture('c_zfile')).filter((x) => x.endsWith('.zfile'))) {
      const out = path.join(dir, `${f}.raw`);
      const r = run('unzfile', fixture(`c_zfile/${f}`), out);
      assert.equal(r.code, 0, `${f}: ${r.stderr}`);
      assert.equal(sha256(fs.readFileSync(out)), B_SHA, f);
    }
  });

  it('a corrupt block: the error names the file and the block, and no partial output is left', () => {
    const bad = path.join(dir, 'bad.zfile');
    const buf = fs.readFileSync(fixture('c_zfile/c.lz4_bs4k.zfile'));
    buf[600] ^= 0xff; // inside block 0 (139 stored bytes from offset 512)
    fs.writeFileSync(bad, buf);
    const out = path.join(dir, 'bad.raw');
    failsWith(run('unzfile', bad, out), /bad\.zfile: block 0 \(stored at offset 512, 139 bytes\): checksum mismatch/);
    assert.equal(fs.existsSync(out), false, 'no partial output');
    fs.writeFileSync(out, 'previous contents');
    failsWith(run('unzfile', bad, out), /checksum mismatch/);
    assert.equal(fs.readFileSync(out, 'utf8'), 'previous contents', 'an existing output is left untouched');
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.partial-')), [], 'no temp files left');
    // --no-verify skips the block checksums: lz4 still notices or the data comes out (no crash).
    const r = run('unzfile', bad, out, '--no-verify');
    assert.ok(r.code === 0 || /lz4 data/.test(r.stderr), r.stderr);
  });

  it('not a ZFile / missing input', () => {
    failsWith(run('unzfile', B, path.join(dir, 'x')), /b\.commit\.lsmt: header: bad magic \(not a ZFile\)/);
    failsWith(run('unzfile', path.join(dir, 'missing'), path.join(dir, 'x')), /missing: no such file/);
    failsWith(run('unzfile'), /missing required argument 'in'/);
  });
});
