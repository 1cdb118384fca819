// TurboOCI through the rest of the container flow: rwMode dir and dev on a TurboOCI image (write,
// read back, a dev snapshot committed into a layer), `obd record-trace` and trace prefetch with
// the data coming from the original gzip layers, and a gzip layer blob used both by a plain OCI
// image and, by digest, as a TurboOCI target in the same repository: each image sees its own tree.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { parseTrace } from '../../src/trace/trace';
import { obdBin, obdconvBin } from '../helpers/bin';
import { busyboxTestImage, pushOciLayout, type TarEntry, writeOciLayout } from '../helpers/images';
import { execNode, LazyEnv } from './env';

const WRITABLE = 'containerd.io/snapshot/overlaybd.writable';
const TRACE = 'containerd.io/snapshot/overlaybd/record-trace-path';

describe('TurboOCI: rwMode dir/dev, record-trace + prefetch, layers shared with a plain image', { timeout: 900_000 }, () => {
  // No read-ahead: the prefetch check below counts exactly what the workload fetches itself.
  const env = new LazyEnv({ config: { cacheConfig: { readAheadSize: 0 } } });
  const img = busyboxTestImage();
  const big: TarEntry[] = [{ path: 'big', type: 'dir' }];
  for (let i = 0; i < 8; i++) big.push({ path: `big/f${i}`, type: 'file', data: crypto.randomBytes(2 << 20) });
  const md5 = (i: number) => crypto.createHash('md5').update((big[i + 1] as { data: Buffer }).data).digest('hex');
  let plainRef = '';
  let turboRef = '';
  let bigTarget = '';

  before(async () => {
    await env.start();
    const layout = writeOciLayout(env.tmp.join('oci'), 'v1', { layers: [...(img.spec.layers as TarEntry[][]), big], cmd: ['/bin/sh'] });
    plainRef = await pushOciLayout(layout, env.registry.host, 'flow/app');
    turboRef = `${env.registry.host}/flow/app:turbo`;
    // Same repository: the turbo image's targets are the plain image's layer blobs, by digest.
    await execNode([obdconvBin(), plainRef, turboRef, '--turbo-oci', '--plain-http', '--cache-dir', env.tmp.join('conv'), '--json'], 600_000);
    const m = await (await fetch(`${env.registry.url}/v2/flow/app/manifests/turbo`, {
      headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
    })).json() as { layers: { annotations: Record<string, string> }[] };
    bigTarget = m.layers[m.layers.length - 1].annotations['containerd.io/snapshot/overlaybd/turbo-oci/target-digest'];
    await env.rpull(turboRef);
  });
  after(() => env.stop());

  const ctr = (args: string[]) => env.containerd.ctr(args);
  // ctr (containerd 1.6) cancels its output readers when it deletes an exited task, so the last
  // output of a task that exits right after printing is sometimes lost (upstream fixed the same in
  // `ctr exec`: drain output before cleanup). The workloads here print, then linger a moment.
  const lingering = (cmd: string) => `{ ${cmd}; }; rc=$?; sleep 0.5; exit $rc`;
  const run = (ref: string, id: string, cmd: string, labels: Record<string, string> = {}, snapshotter = 'obd') =>
    ctr(['run', '--runc-root', env.containerd.runcRoot, '--snapshotter', snapshotter,
      ...Object.entries(labels).flatMap(([k, v]) => ['--snapshotter-label', `${k}=${v}`]), ref, id, '/bin/sh', '-c', lingering(cmd)]);
  const mountOf = async (key: string) => {
    const line = (await ctr(['snapshots', '--snapshotter', 'obd', 'mounts', '/target', key])).stdout.trim();
    const m = /^mount -t (\S+) (\S+) \/target -o (\S+)$/.exec(line);
    assert.ok(m, `unexpected mounts output: ${line}`);
    return { type: m[1], source: m[2], options: m[3].split(',') };
  };

  it('dir: a container writes to its private device and reads the image files from the original layers', async () => {
    const out = (await run(turboRef, 'dirc', 'echo dir-data > /written; md5sum /big/f3 | cut -d" " -f1; cat /written', { [WRITABLE]: 'dir' })).stdout;
    assert.equal(out, `${md5(3)}\ndir-data\n`);
    const m = await mountOf('dirc');
    assert.equal(m.type, 'bind');
    assert.equal(fs.readFileSync(path.join(m.source, 'written'), 'utf8'), 'dir-data\n');
    assert.equal(crypto.createHash('md5').update(fs.readFileSync(path.join(m.source, 'big/f4'))).digest('hex'), md5(4));
    await ctr(['containers', 'rm', 'dirc']);
  });

  it('dev: writes go to the handed-out device; committed, they are a layer over the TurboOCI layers', async () => {
    const out = (await run(turboRef, 'devc', 'echo dev-data > /written; md5sum /big/f2 | cut -d" " -f1', { [WRITABLE]: 'dev' })).stdout;
    assert.equal(out, `${md5(2)}\n`);
    assert.equal((await mountOf('devc')).type, 'ext4');
    await ctr(['snapshots', '--snapshotter', 'obd', 'commit', 'devc-layer', 'devc']);
    await ctr(['snapshots', '--snapshotter', 'obd', 'prepare', 'devc-child', 'devc-layer']);
    const cm = await mountOf('devc-child');
    const rootfs = env.tmp.join('child-rootfs');
    fs.mkdirSync(rootfs);
    execFileSync('mount', ['-t', cm.type, cm.source, rootfs, '-o', cm.options.join(',')]);
    try {
      const r = await ctr(['run', '--rm', '--runc-root', env.containerd.runcRoot, '--rootfs', rootfs, 'childc', '/bin/sh', '-c',
        lingering('cat /written; md5sum /big/f2 /big/f6 | cut -d" " -f1')]);
      assert.equal(r.stdout, `dev-data\n${md5(2)}\n${md5(6)}\n`);
    } finally {
      execFileSync('umount', [rootfs]);
    }
    await ctr(['snapshots', '--snapshotter', 'obd', 'rm', 'devc-child']);
    await ctr(['containers', 'rm', 'devc']).catch(() => undefined); // its snapshot is committed already
  });

  it('record-trace names the original gzip layer; a container with the trace gets it prefetched', async (t) => {
    const trace = path.join(env.snapshotter.root, 'traces', 'turbo.trace');
    const out = await execNode([obdBin(), 'record-trace', '--address', env.containerd.address, '--namespace', env.containerd.namespace,
      '--no-pull', '--runc-root', env.containerd.runcRoot, '--time', '60', '-o', trace, turboRef, '--',
      '/bin/sh', '-c', lingering('cat /big/f1 /big/f5 > /dev/null; echo READY')], 180_000);
    assert.equal(out, `READY\n${trace}\n`);
    const ranges = parseTrace(fs.readFileSync(trace, 'utf8'));
    const traced = ranges.filter((r) => r.digest === bigTarget).reduce((n, r) => n + r.length, 0);
    t.diagnostic(`trace: ${ranges.length} ranges, ${traced} bytes of ${bigTarget}`);
    assert.ok(traced >= 4 << 20, `both files (4 MiB, incompressible) are in the trace as ranges of the original layer (${traced})`);
    assert.ok(traced < 12 << 20, 'files the workload did not read are not');

    const fetched = async () => (await env.deviceStats()).reduce((n, s) => n + s.fetchedBytes, 0);
    await ctr(['run', '-d', '--runc-root', env.containerd.runcRoot, '--snapshotter', 'obd',
      '--snapshotter-label', `${TRACE}=${trace}`, turboRef, 'replay', '/bin/sleep', '100000']);
    let prefetched = 0;
    for (let i = 0; i < 200 && prefetched < traced; i++) {
      await new Promise((r) => setTimeout(r, 100));
      prefetched = (await env.deviceStats()).reduce((n, s) => n + s.prefetchedBytes, 0);
    }
    assert.ok(prefetched >= traced, `prefetched ${prefetched} of ${traced} traced bytes`);
    let before = await fetched();
    for (let i = 0; i < 50; i++) {
      await new Promise((r) => setTimeout(r, 300));
      const now = await fetched();
      if (now === before) break;
      before = now;
    }
    const r = await ctr(['task', 'exec', '--exec-id', 'x1', 'replay', '/bin/sh', '-c', lingering('md5sum /big/f1 /big/f5 | cut -d" " -f1')]);
    assert.equal(r.stdout, `${md5(1)}\n${md5(5)}\n`);
    const extra = (await fetched()) - before;
    assert.ok(extra < traced / 10, `the workload's reads came from the prefetched cache (fetched ${extra} more bytes)`);
    await ctr(['task', 'kill', '-s', 'SIGKILL', 'replay']).catch(() => undefined);
    await ctr(['task', 'delete', '-f', 'replay']).catch(() => undefined);
    await ctr(['containers', 'rm', 'replay']).catch(() => undefined);
  });

  it('the same gzip blob as a plain image layer and as a TurboOCI target: each image sees its own tree', async () => {
    // The plain image unpacked by containerd into the obd snapshotter, next to the TurboOCI snapshots.
    await ctr(['image', 'pull', '--plain-http', '--snapshotter', 'obd', plainRef]);
    // (an ext4 root has lost+found, as in the tree-equality test it is not compared)
    const script = `${img.script}; md5sum /big/f7 | cut -d" " -f1; ls / | grep -v '^lost+found$'`;
    const plain = (await run(plainRef, 'plainc', script)).stdout;
    const turbo = (await run(turboRef, 'turboc', script)).stdout;
    assert.equal(turbo, plain);
    assert.ok(plain.startsWith(`${img.expectedOutput}${md5(7)}\n`), plain);
    assert.ok(!/ext4\.fs\.meta|gzip\.meta|turbo\.ociv1/.test(plain + turbo), 'no meta blob member shows up in either tree');
    await ctr(['containers', 'rm', 'plainc', 'turboc']);
    // Removing the plain image leaves the TurboOCI image's data reachable (its target blob stays in the registry).
    await ctr(['image', 'rm', '--sync', plainRef]);
    assert.equal((await run(turboRef, 'turboc2', 'md5sum /big/f0 | cut -d" " -f1')).stdout, `${md5(0)}\n`);
    await ctr(['containers', 'rm', 'turboc2']);
  });
});
