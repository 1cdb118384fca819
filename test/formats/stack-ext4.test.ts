// Block level: the e_ext4 fixture stack (upstream base layer ext4_64 + two layers made by
// overlaybd-apply) exported to a raw image is a valid ext4 filesystem with the expected files,
// whiteouts applied. Real loop device and mount; both are undone in `after`, also on failure.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { LayerStack } from '../../src/addon';
import { obdBin } from '../helpers/bin';
import { attachLoop, Cleanup, loopsBackedBy, mount } from '../helpers/loop';
import { ext4_64, fixture, makeTempDir, MiB, withStack } from './lsmt-support';

const tmp = makeTempDir('obd-ext4-');
const cleanup = new Cleanup();
after(() => {
  try {
    cleanup.run();
  } finally {
    assert.deepEqual(loopsBackedBy(tmp.path), [], 'no loop device left behind');
    tmp.cleanup();
  }
});

const obd = obdBin();
const E1 = fixture('e_ext4/e1.commit.lz4_bs4k.zfile');
const E2 = fixture('e_ext4/e2.commit.lz4_bs4k.zfile');
const fileSha = (p: string) => crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');

/** sha256 of the whole virtual disk; holes are hashed from one zero buffer instead of being read. */
function wholeDiskSha256(s: LayerStack): string {
  const h = crypto.createHash('sha256');
  const zero = Buffer.alloc(16 * MiB);
  const feedZeros = (n: number) => {
    for (; n > 0; n -= Math.min(n, zero.length)) h.update(zero.subarray(0, Math.min(n, zero.length)));
  };
  let pos = 0;
  for (const e of s.extents()) {
    feedZeros(e.offset - pos);
    if (e.zeroed) feedZeros(e.length);
    else for (let off = e.offset; off < e.offset + e.length; off += 16 * MiB) h.update(s.read(off, Math.min(16 * MiB, e.offset + e.length - off)));
    pos = e.offset + e.length;
  }
  feedZeros(s.size() - pos);
  return h.digest('hex');
}

function exportWithCli(lowers: string[], out: string): void {
  const r = execFileSync(process.execPath, [obd, 'layer', 'export', ...lowers, '-o', out], { encoding: 'utf8' });
  assert.match(r, /68719476736 bytes virtual/);
}

describe('ext4 image from the e_ext4 stack', () => {
  let mnt = '';
  before(() => {
    const raw = tmp.join('e12.raw');
    exportWithCli([ext4_64(), E1, E2], raw);
    const st = fs.statSync(raw);
    assert.equal(st.size, 64 * 1024 * MiB);
    assert.ok(st.blocks * 512 < 256 * MiB, `export is sparse (${st.blocks * 512} bytes allocated)`);
    const dev = attachLoop(cleanup, raw, { readOnly: true });
    execFileSync('fsck.ext4', ['-n', '-f', dev], { stdio: 'pipe' }); // throws on a non-zero exit
    mnt = tmp.join('mnt');
    fs.mkdirSync(mnt);
    mount(cleanup, dev, mnt, { type: 'ext4', options: 'ro,noload' });
  });

  it('the root holds the directories of e1', () => {
    assert.deepEqual(fs.readdirSync(mnt).sort(), ['bin', 'empty_dir', 'etc', 'lost+found', 'opaque']);
    assert.deepEqual(fs.readdirSync(path.join(mnt, 'empty_dir')), []);
  });

  it('e2 whiteouts applied: etc/to_delete.txt gone, opaque/ holds only new.txt', () => {
    assert.deepEqual(fs.readdirSync(path.join(mnt, 'etc')).sort(), ['empty.txt', 'hello.hardlink', 'hello.txt']);
    assert.deepEqual(fs.readdirSync(path.join(mnt, 'opaque')), ['new.txt']);
    assert.equal(fileSha(path.join(mnt, 'opaque/new.txt')), 'efa5bb3a69ff2c9f61facb77b94c2723f32736db903de9f2f4c4142cbc3c9cc4');
  });

  it('files have the contents, modes and links MANIFEST lists', () => {
    const hardlink = fs.statSync(path.join(mnt, 'etc/hello.hardlink'));
    const hello = fs.statSync(path.join(mnt, 'etc/hello.txt'));
    assert.equal(hardlink.nlink, 1, 'e2 replaced hello.txt, so the old hard link is alone');
    assert.notEqual(hello.ino, hardlink.ino);
    assert.equal(fileSha(path.join(mnt, 'etc/hello.hardlink')), '9d6744993335a398041d0fd78dd6faae2b3a50ec1c00c4cd66c7fd4c176e8c03');
    assert.equal(fileSha(path.join(mnt, 'etc/hello.txt')), '7758c833cd7223ea1daac0da4c211b83831fca98e6a72a42e27899d23d16ebdc');
    const empty = fs.statSync(path.join(mnt, 'etc/empty.txt'));
    assert.equal(empty.size, 0);
    assert.equal(empty.mode & 0o777, 0o600);
    const data = fs.statSync(path.join(mnt, 'bin/data.bin'));
    assert.equal(data.size, 100000);
    assert.equal(data.mode & 0o777, 0o755);
    assert.equal(data.mtimeMs, 1700000000 * 1000);
    assert.equal(fileSha(path.join(mnt, 'bin/data.bin')), '96ad0ddabe9c733d4550fde750255a94806811029be67504bd9bd68e556686b9');
    assert.equal(fs.readlinkSync(path.join(mnt, 'bin/link_to_data')), 'data.bin');
  });
});

describe('ext4 image from base + e1 only', () => {
  it('still has the files e2 later removes (debugfs on the exported image)', () => {
    const raw = tmp.join('e1.raw');
    exportWithCli([ext4_64(), E1], raw);
    execFileSync('fsck.ext4', ['-n', '-f', raw], { stdio: 'pipe' });
    const ls = execFileSync('debugfs', ['-R', 'ls -l /etc', raw], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    assert.match(ls, /to_delete\.txt/);
    const opaque = execFileSync('debugfs', ['-R', 'ls /opaque', raw], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    assert.match(opaque, /old\.txt/);
    fs.rmSync(raw);
  });
});

describe('whole 64 GiB disk hashes as MANIFEST lists', () => {
  it('base + e1 + e2 = e3e9d6c9… (holes hashed, not read)', { timeout: 600_000 }, () => {
    withStack({ lowers: [ext4_64(), E1, E2] }, (s) =>
      assert.equal(wholeDiskSha256(s), 'e3e9d6c949a3c37926c27f60272a191a17b699e3f2bba2d3a73dfb7fd65815ad'),
    );
  });
});
