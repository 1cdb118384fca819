// End to end with a real containerd (+ runc) using obd as its proxy snapshotter, and a private
// docker-registry holding the multi-layer busybox test image (test/helpers/images.ts).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { CtrError, TestContainerd } from '../helpers/containerd';
import { busyboxTestImage, pushOciLayout, writeOciLayout } from '../helpers/images';
import { TestRegistry } from '../helpers/registry';
import { SnapshotsClient, TestSnapshotter } from '../helpers/snapshotter';
import { makeTempDir } from '../helpers/tmp';

const LOWER_LABEL = 'containerd.io/snapshot/overlay-custom-add-lower.paths';

describe('obd as containerd proxy snapshotter', { timeout: 600_000 }, () => {
  const tmp = makeTempDir('obd-e2e-');
  const image = busyboxTestImage();
  const allowed = tmp.join('allowed');
  let reg: TestRegistry;
  let sn: TestSnapshotter;
  let ctd: TestContainerd;
  let ref = '';

  const obd = (args: string[]) => ctd.ctr(['snapshots', '--snapshotter', 'obd', ...args]);
  const diag = () => `\n--- containerd log:\n${ctd.tailLog()}\n--- obd log:\n${sn.tailLog()}`;

  before(async () => {
    fs.mkdirSync(path.join(allowed, 'extra'), { recursive: true });
    fs.writeFileSync(path.join(allowed, 'extra', 'from-host.txt'), 'host file\n');
    reg = new TestRegistry();
    await reg.start();
    sn = new TestSnapshotter({ allowedLowerPrefixes: [allowed], verbose: 'debug' });
    await sn.start();
    ctd = new TestContainerd({ proxySnapshotters: { obd: sn.address } });
    await ctd.start();
    const layout = writeOciLayout(tmp.join('oci'), 'v1', image.spec);
    ref = await pushOciLayout(layout, reg.host, 'obd/busybox-layers');
  });
  after(async () => {
    await ctd?.stop();
    await sn?.cleanup();
    await reg?.stop();
    tmp.cleanup();
  });

  test('ctr images pull --snapshotter obd unpacks every layer as a committed obd snapshot', async () => {
    await ctd.ctr(['images', 'pull', '--plain-http', '--snapshotter', 'obd', ref]).catch((e: Error) => assert.fail(e.message + diag()));
    const ls = (await obd(['ls'])).stdout.trim().split('\n').slice(1);
    assert.equal(ls.length, 3, ls.join('\n'));
    for (const line of ls) assert.match(line, /^sha256:[0-9a-f]{64}\s+(sha256:[0-9a-f]{64}\s+)?Committed\s*$/);
    // what containerd recorded agrees with obd's own records
    const c = new SnapshotsClient(sn.address);
    try {
      const own = await c.list();
      assert.equal(own.filter((i) => i.kind === 'COMMITTED').length, 3);
      assert.ok(own.every((i) => /^obdtest\/[0-9]+\/sha256:/.test(i.name)), 'containerd namespaces backend keys');
    } finally {
      c.close();
    }
  });

  test('ctr run --snapshotter obd: layers are merged (overwrites, whiteout, opaque dir, symlinks, hardlink)', async () => {
    const out = await ctd.run(ref, 'run-1', ['sh', '-c', image.script], ['--snapshotter', 'obd']).catch((e: Error) =>
      assert.fail(e.message + diag()),
    );
    assert.equal(out, image.expectedOutput);
  });

  test('ctr snapshots ls | info | usage | rm work against obd', async () => {
    const top = (await obd(['ls'])).stdout.split('\n').slice(1).map((l) => l.split(/\s+/)).filter((f) => f[0]);
    const parents = new Set(top.map((f) => f[1]));
    const leaf = top.find((f) => !parents.has(f[0]))![0];
    const info = JSON.parse((await obd(['info', leaf])).stdout) as { Name: string; Kind: string; Parent: string };
    assert.equal(info.Name, leaf);
    assert.equal(info.Kind, 'Committed');
    assert.match(info.Parent, /^sha256:/);
    const usage = (await obd(['usage'])).stdout;
    assert.match(usage, new RegExp(leaf));
    const base = top.find((f) => f[1] === 'Committed')?.[0]; // no PARENT column
    assert.ok(base, 'the base layer has no parent');
    const baseUsage = usage.split('\n').find((l) => l.startsWith(base!))!;
    assert.match(baseUsage, /\s[0-9.]+ ?[KM]i?B\s+[0-9]+/, 'busybox layer has a size and inodes');
    await obd(['prepare', 'work-1', leaf]);
    const mounts = (await obd(['mounts', '/mnt', 'work-1'])).stdout;
    assert.match(mounts, /mount -t overlay overlay .*lowerdir=/);
    await assert.rejects(obd(['rm', leaf]), (e: CtrError) => /cannot remove snapshot/.test(e.stderr));
    await obd(['rm', 'work-1']);
    assert.doesNotMatch((await obd(['ls'])).stdout, /work-1/);
  });

  test('the custom lower label adds an allowed host dir to the container; a disallowed one is refused', async () => {
    const out = await ctd.run(ref, 'lower-1', ['cat', '/from-host.txt', '/etc/msg'], [
      '--snapshotter', 'obd', '--snapshotter-label', `${LOWER_LABEL}=${path.join(allowed, 'extra')}`,
    ]);
    assert.equal(out, 'host file\nlayer3\n');
    await assert.rejects(
      ctd.run(ref, 'lower-2', ['true'], ['--snapshotter', 'obd', '--snapshotter-label', `${LOWER_LABEL}=/etc`]),
      (e: CtrError) => /\/etc.*not under an allowed prefix/.test(e.stderr),
    );
  });

  test('concurrent Prepare of one key through containerd\'s snapshot service: exactly one succeeds', async () => {
    const top = (await obd(['ls'])).stdout.split('\n').slice(1).map((l) => l.split(/\s+/)).filter((f) => f[0]);
    const parents = new Set(top.map((f) => f[1]));
    const leaf = top.find((f) => !parents.has(f[0]))![0];
    const c = new SnapshotsClient(ctd.address, 'obd', ctd.namespace);
    try {
      const gcRoot = { 'containerd.io/gc.root': 'race' }; // else containerd's GC may collect it before Stat
      const results = await Promise.allSettled(Array.from({ length: 8 }, () => c.prepare('race-key', leaf, gcRoot)));
      const ok = results.filter((r) => r.status === 'fulfilled');
      assert.equal(ok.length, 1, JSON.stringify(results.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : 'ok'))));
      for (const r of results) {
        if (r.status === 'rejected') assert.equal((r.reason as grpc.ServiceError).code, grpc.status.ALREADY_EXISTS);
      }
      assert.equal((await c.stat('race-key')).kind, 'ACTIVE');
      await c.remove('race-key');
    } finally {
      c.close();
    }
  });

  test('restarting the snapshotter between pull and run: containerd reconnects and the container runs', async () => {
    assert.equal(await sn.stop(), 0);
    await sn.start();
    // containerd's proxy client redials with backoff; wait until it is back (bounded)
    const deadline = Date.now() + 20_000;
    for (;;) {
      const ok = await obd(['ls']).then(() => true, () => false);
      if (ok) break;
      if (Date.now() > deadline) assert.fail('containerd did not reconnect to obd within 20 s' + diag());
      await new Promise((r) => setTimeout(r, 200));
    }
    const out = await ctd.run(ref, 'run-2', ['sh', '-c', image.script], ['--snapshotter', 'obd']);
    assert.equal(out, image.expectedOutput);
  });
});
