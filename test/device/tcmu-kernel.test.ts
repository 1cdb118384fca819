// The TCMU transport on the real kernel: a TCMU device (configfs backstore + tcm_loop LUN → /dev/sdX)
// over a sparse file, mkfs.ext4, mount, write, remount, read back, tear down. Kernels without
// target_core_user (like our CI's) report this test as skipped with the missing module, never as passed.
import assert from 'node:assert/strict';
import { ChildProcess, execFileSync, spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import { test } from 'node:test';
import { tcmuSupported } from '../../src/addon';
import { makeTempDir } from '../helpers/tmp';
import { tcmuProgram } from './tcmu-support';

function firstLine(child: ChildProcess, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const timer = setTimeout(() => reject(new Error(`no output from the TCMU server in ${timeoutMs} ms: ${buf}`)), timeoutMs);
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      const nl = buf.indexOf('\n');
      if (nl >= 0) {
        clearTimeout(timer);
        resolve(buf.slice(0, nl));
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`TCMU server exited with ${code}: ${buf}`));
    });
  });
}

test('tcmuSupported names the missing kernel module when TCMU is unavailable', () => {
  const s = tcmuSupported(false);
  if (s.ok) {
    assert.equal(s.reason, '');
  } else {
    assert.match(s.reason, /target_core_user|target_core_mod|tcm_loop|uio|sd_mod|configfs/);
    assert.match(s.reason, /CONFIG_[A-Z_0-9]+|configfs/);
  }
});

test('TCMU device on the real kernel: mkfs.ext4, mount, write, remount, read back', async (t) => {
  const program = tcmuProgram();
  const probe = spawnSync(program, ['--probe', '--load'], { encoding: 'utf8' });
  if (probe.status === 77) {
    t.skip(`not run: ${probe.stdout.trim().replace(/^unsupported: /, '')}`);
    return;
  }
  assert.equal(probe.status, 0, probe.stdout + probe.stderr);

  const tmp = makeTempDir('obd-tcmu-');
  const mnt = tmp.join('mnt');
  fs.mkdirSync(mnt);
  const server = spawn(program, ['--serve', tmp.join('disk.img'), '128'], { stdio: ['pipe', 'pipe', 'inherit'] });
  let mounted = false;
  try {
    const line = await firstLine(server, 30_000);
    const m = /^device (\/dev\/\S+)$/.exec(line);
    assert.ok(m, `unexpected server output: ${line}`);
    const dev = m[1];
    execFileSync('mkfs.ext4', ['-q', '-F', dev]);
    execFileSync('mount', [dev, mnt]);
    mounted = true;
    const data = crypto.randomBytes(8 << 20);
    fs.writeFileSync(`${mnt}/blob`, data);
    execFileSync('sync', ['-f', `${mnt}/blob`]);
    execFileSync('umount', [mnt]);
    mounted = false;
    execFileSync('mount', ['-o', 'ro', dev, mnt]);
    mounted = true;
    assert.ok(fs.readFileSync(`${mnt}/blob`).equals(data), 'file read back through TCMU differs');
    execFileSync('umount', [mnt]);
    mounted = false;
    const exited = new Promise<number | null>((resolve) => server.once('exit', resolve));
    let out = '';
    server.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    server.stdin!.end();
    assert.equal(await exited, 0, out);
    assert.match(out, /^closed$/m);
    assert.ok(!fs.existsSync(dev) || !fs.readdirSync('/sys/block').includes(dev.replace('/dev/', '')), `${dev} still exists`);
  } finally {
    if (mounted) spawnSync('umount', ['-l', mnt]);
    if (server.exitCode === null) {
      // Closing stdin makes the server remove its LUN and backstore; SIGKILL only as a last resort.
      const gone = new Promise((resolve) => server.once('exit', resolve));
      server.stdin!.end();
      await Promise.race([gone, new Promise((resolve) => setTimeout(resolve, 20_000))]);
      if (server.exitCode === null) server.kill('SIGKILL');
    }
    tmp.cleanup();
  }
});
