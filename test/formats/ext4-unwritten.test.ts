// ext4MarkExtentsWritten (TurboOCI meta layers, docs/formats.md): obdconv preallocates file blocks
// without writing them and then clears the unwritten flag of those extents, in the inode and in
// extent blocks, leaving everything else of the filesystem as it was. Images are made with
// mkfs.ext4 (obdconv's options) and debugfs, which can preallocate unwritten extents itself, so
// no mount is needed. Wrong input is an error naming it.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { ext4MarkExtentsWritten } from '../../src/addon';
import { mkfsArgs } from '../../src/convert/layer-builder';
import { makeTempDir, type TempDir } from '../helpers/tmp';

const debugfs = (img: string, cmds: string[], write = false) =>
  execFileSync('debugfs', [...(write ? ['-w'] : []), '-f', '-', img], { input: cmds.join('\n') + '\n', encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });

/** `ex FILE` leaf rows: [logical start, physical start, length, flags] (index rows have no physical range). */
function extents(img: string, file: string): string[][] {
  return debugfs(img, [`ex ${file}`]).split('\n')
    .map((l) => /^\s*\d+\/\s*\d+\s+\d+\/\s*\d+\s+(\d+)\s*-\s*\d+\s+(\d+)\s*-\s*\d+\s+(\d+)\s*(\S*)/.exec(l))
    .filter((m): m is RegExpExecArray => m !== null).map((m) => [m[1], m[2], m[3], m[4]]);
}

const inodeOf = (img: string, file: string) => Number(/Inode: (\d+)/.exec(debugfs(img, [`stat ${file}`]))![1]);

describe('ext4MarkExtentsWritten', () => {
  let tmp: TempDir;
  let img: string;

  before(() => {
    tmp = makeTempDir('obd-ext4-unwritten-');
    img = tmp.join('disk.img');
    fs.writeFileSync(img, '');
    fs.truncateSync(img, 64 << 20);
    const [cmd, args] = mkfsArgs('ext4', img, '11111111-2222-3333-4444-555555555555');
    execFileSync(cmd, args);
    // one extent in the inode; 21 extents (a depth-1 tree: an extent block); one file left alone
    const frag = Array.from({ length: 21 }, (_, i) => `fallocate frag ${2 * i} ${2 * i}`);
    // (sizes as a file's would be: written extents past i_size would be an fsck error)
    debugfs(img, ['write /dev/null one', 'fallocate one 0 299', `sif one size ${300 * 4096}`, 'write /dev/null frag', ...frag,
      `sif frag size ${41 * 4096}`, 'write /dev/null other', 'fallocate other 0 9'], true);
  });
  after(() => tmp?.cleanup());

  test('clears the unwritten flag of every extent of the given inodes, in the inode and in extent blocks', () => {
    const before = { one: extents(img, 'one'), frag: extents(img, 'frag'), other: extents(img, 'other') };
    assert.equal(before.frag.length, 21, '21 leaf extents (more than the inode holds: in an extent block)');
    assert.match(debugfs(img, ['ex frag']), /^\s*0\/\s*1\s/m, 'a depth-1 tree');
    assert.ok([...before.one, ...before.frag].every((e) => e[3] === 'Uninit'));
    const changed = ext4MarkExtentsWritten(img, [inodeOf(img, 'one'), inodeOf(img, 'frag')]);
    assert.equal(changed, 22);
    const strip = (rows: string[][]) => rows.map((r) => r.slice(0, 3));
    for (const f of ['one', 'frag'] as const) {
      const now = extents(img, f);
      assert.deepEqual(strip(now), strip(before[f]), `${f}: same blocks, same lengths`);
      assert.ok(now.every((e) => e[3] === ''), `${f}: no extent is unwritten any more`);
    }
    assert.deepEqual(extents(img, 'other'), before.other, 'inodes not named are not touched');
    execFileSync('e2fsck', ['-fn', img], { stdio: 'pipe' }); // the filesystem stays consistent
    assert.equal(ext4MarkExtentsWritten(img, [inodeOf(img, 'one')]), 0, 'a second pass has nothing to do');
  });

  test('what is not an ext4 it can patch is an error naming the device or the inode', () => {
    const junk = tmp.join('junk.img');
    fs.writeFileSync(junk, Buffer.alloc(1 << 20, 0x5a));
    assert.throws(() => ext4MarkExtentsWritten(junk, [12]), /junk\.img: no ext4 superblock/);
    assert.throws(() => ext4MarkExtentsWritten(img, [1 << 30]), /inode 1073741824: out of range/);
    // the superblock and group descriptors, but not the inode tables
    const cut = tmp.join('cut.img');
    fs.writeFileSync(cut, fs.readFileSync(img).subarray(0, 8192));
    assert.throws(() => ext4MarkExtentsWritten(cut, [inodeOf(img, 'one')]), /cut\.img: inode \d+/);
    // an inode whose extent root is damaged
    const bad = tmp.join('bad.img');
    fs.copyFileSync(img, bad);
    const ino = inodeOf(bad, 'other');
    const m = /located at block (\d+), offset 0x([0-9a-f]+)/.exec(debugfs(bad, [`imap <${ino}>`]))!;
    const fd = fs.openSync(bad, 'r+');
    fs.writeSync(fd, Buffer.from([0xde, 0xad]), 0, 2, Number(m[1]) * 4096 + parseInt(m[2], 16) + 0x28);
    fs.closeSync(fd);
    assert.throws(() => ext4MarkExtentsWritten(bad, [ino]), new RegExp(`inode ${ino}: bad extent header`));
    assert.throws(() => ext4MarkExtentsWritten(tmp.join('missing.img'), [12]), /missing\.img/);
  });
});
