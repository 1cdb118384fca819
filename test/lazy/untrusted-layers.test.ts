// Plain OCI layers are untrusted input: whatever their tar puts at the root of a layer (fs/) must not
// hang obd or make it open other files. A FIFO named overlaybd.commit used to block the snapshotter's
// event loop forever at Commit; a symlink of that name used to make obd and deviced treat a host file
// as the layer. Each image is pulled by a private containerd (`ctr images pull --snapshotter obd`),
// then run.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { busyboxTestImage, pushOciLayout, TarEntry, writeOciLayout } from '../helpers/images';
import { LazyEnv } from './env';

const LOCAL_COMMIT_LABEL = 'containerd.io/snapshot/overlaybd.localcommitpath';

describe('untrusted plain layers', { timeout: 600_000 }, () => {
  const env = new LazyEnv();
  before(() => env.start());
  after(() => env.stop());

  const base = () => busyboxTestImage().spec.layers[0] as TarEntry[];

  async function pushPlain(repo: string, top: TarEntry[]): Promise<string> {
    const layout = writeOciLayout(env.tmp.join('oci', repo.replace(/\//g, '_')), 'latest', { layers: [base(), top] });
    return pushOciLayout(layout, env.registry.host, repo);
  }

  /** Labels of every snapshot of the obd snapshotter in containerd's namespace. */
  async function snapshotLabels(): Promise<Array<Record<string, string>>> {
    const ls = (await env.containerd.ctr(['snapshots', '--snapshotter', 'obd', 'ls'])).stdout.trim().split('\n').slice(1);
    const out: Array<Record<string, string>> = [];
    for (const row of ls) {
      const key = row.trim().split(/\s+/)[0];
      const info = JSON.parse((await env.containerd.ctr(['snapshots', '--snapshotter', 'obd', 'info', key])).stdout) as { Labels?: Record<string, string> };
      out.push(info.Labels ?? {});
    }
    return out;
  }

  it('a FIFO named overlaybd.commit: the pull finishes, the layer stays plain, later calls answer', async () => {
    const ref = await pushPlain('untrusted/fifo', [{ path: 'overlaybd.commit', type: 'fifo' }, { path: 'etc', type: 'dir' }, { path: 'etc/msg', type: 'file', data: 'fifo-layer\n' }]);
    await env.containerd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'obd', ref], { timeoutMs: 120_000 });
    for (const labels of await snapshotLabels()) assert.equal(labels[LOCAL_COMMIT_LABEL], undefined, 'no layer taken for overlaybd');
    const out = await env.containerd.run(ref, 'fifo', ['/bin/sh', '-c', 'cat /etc/msg; test -p /overlaybd.commit && echo fifo-kept'], ['--snapshotter', 'obd']);
    assert.equal(out, 'fifo-layer\nfifo-kept\n');
  });

  it('a symlink named overlaybd.commit to a host overlaybd file: never followed', async () => {
    // A real overlaybd layer file on the host, outside every snapshot: the symlink must not reach it.
    const hostLayer = env.tmp.join('host-secret.commit');
    fs.copyFileSync(path.join(__dirname, '..', '..', '..', 'test', 'fixtures', 'overlaybd', 'b_patterns', 'b.commit.lsmt'), hostLayer);
    const ref = await pushPlain('untrusted/symlink', [
      { path: 'overlaybd.commit', type: 'symlink', target: hostLayer },
      { path: 'etc', type: 'dir' },
      { path: 'etc/msg', type: 'file', data: 'symlink-layer\n' },
    ]);
    await env.containerd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'obd', ref], { timeoutMs: 120_000 });
    for (const labels of await snapshotLabels()) assert.equal(labels[LOCAL_COMMIT_LABEL], undefined, 'the symlink did not make the layer an overlaybd layer');
    const out = await env.containerd.run(ref, 'symlink', ['/bin/sh', '-c', 'cat /etc/msg; readlink /overlaybd.commit'], ['--snapshotter', 'obd']);
    assert.equal(out, `symlink-layer\n${hostLayer}\n`);
    const devices = await env.deviceStats();
    assert.equal(devices.length, 0, 'no device was attached for a plain image');
  });
});
