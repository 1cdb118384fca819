// The path Kubernetes takes: a CRI client (what the kubelet says) drives a private containerd whose
// CRI plugin unpacks with `snapshotter = "obd"` and passes snapshot annotations. Host-network pods,
// so no CNI; the pause image is a tiny local one pushed to the private registry. The overlaybd image
// must come up lazily (bytes received from the registry far below the image size), a plain image
// must work as well, and tearing the pod down and removing the images must leave nothing behind.
// Registries that require credentials: containerd gets the kubelet's, deviced reads layers with
// its own credentialFile; without an entry there the error names the registry and that file.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CriClient, CriError, hostNetworkPod } from '../helpers/cri';
import { busyboxTestImage, ImageSpec, pushOciLayout, TarEntry, writeOciLayout } from '../helpers/images';
import { fdsUnder } from '../helpers/proc-fds';
import { TestRegistry } from '../helpers/registry';
import { makeTempDir } from '../helpers/tmp';
import { LazyEnv } from '../lazy/env';

const STEP = { timeout: 180_000 };
const CACHE_BYTES = 32 << 20; // cacheSizeGB of this deviced: above what the lazy run reads

/** Disk space the files under `dir` take (sparse cache files count what they hold). */
function allocatedBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) n += fs.statSync(path.join(e.parentPath ?? e.path, e.name)).blocks * 512;
  }
  return n;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function pauseSpec(): ImageSpec {
  const busybox = fs.readFileSync('/bin/busybox');
  return {
    layers: [[
      { path: 'bin', type: 'dir' },
      { path: 'bin/busybox', type: 'file', mode: 0o755, data: busybox },
      { path: 'bin/sleep', type: 'symlink', target: 'busybox' },
    ]],
    cmd: ['/bin/sleep', '86400'],
  };
}

function skopeoCopy(from: string, to: string, creds?: { username: string; password: string }): Promise<void> {
  const args = ['copy', '--quiet', '--dest-tls-verify=false', ...(creds ? ['--dest-creds', `${creds.username}:${creds.password}`] : []), from, to];
  return new Promise((resolve, reject) => {
    execFile('skopeo', args, { timeout: 120_000 }, (err, _o, stderr) => (err ? reject(new Error(`skopeo ${to}: ${stderr || err.message}`)) : resolve()));
  });
}

async function waitFor<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, ms = 30_000): Promise<T> {
  const deadline = Date.now() + ms;
  let v = await probe();
  while (!ok(v)) {
    if (Date.now() > deadline) assert.fail(`${what}: still ${JSON.stringify(v)} after ${ms} ms`);
    await sleep(200);
    v = await probe();
  }
  return v;
}

describe('CRI: a kubelet-like client through containerd to obd', { timeout: 900_000 }, () => {
  const authRegistry = new TestRegistry({ basic: { users: { kube: 'pull-secret' } } });
  let env: LazyEnv;
  let cri: CriClient;
  let lazyRef = '';
  let lazyImageBytes = 0;
  let plainRef = '';
  let authRef = '';
  let privateLazyRef = ''; // overlaybd, on the auth registry, in deviced's credentialFile
  let unlistedLazyRef = ''; // overlaybd, on the auth registry, not in deviced's credentialFile
  const kubeAuth = { username: 'kube', password: 'pull-secret' };
  const credsDir = makeTempDir('obd-cri-creds-');
  const img = busyboxTestImage();
  const pod = hostNetworkPod('obd-pod');
  let podId = '';
  const containers: string[] = [];

  before(async () => {
    await authRegistry.start();
    // deviced reads blobs itself: it has credentials for the repositories under obd-private/ only.
    const credentialFile = credsDir.join('config.json');
    const basic = Buffer.from(`${kubeAuth.username}:${kubeAuth.password}`).toString('base64');
    fs.writeFileSync(credentialFile, JSON.stringify({ auths: { [`${authRegistry.host}/obd-private`]: { auth: basic } } }));
    env = new LazyEnv({
      config: { cacheConfig: { cacheSizeGB: CACHE_BYTES / 2 ** 30 }, credentialFile },
      cri: (reg) => ({ snapshotter: 'obd', sandboxImage: `${reg.host}/pause:1`, plainHttpRegistries: [reg.host, authRegistry.host] }),
    });
    await env.start();
    cri = new CriClient(env.containerd.address);
    const pause = writeOciLayout(env.tmp.join('oci-pause'), '1', pauseSpec());
    await pushOciLayout(pause, env.registry.host, 'pause');
    const plain = writeOciLayout(env.tmp.join('oci-plain'), 'v1', { ...img.spec, cmd: ['/bin/sleep', '86400'] });
    plainRef = await pushOciLayout(plain, env.registry.host, 'plain/busybox');
    authRef = `${authRegistry.host}/private/busybox:v1`;
    await skopeoCopy(`oci:${plain.dir}:v1`, `docker://${authRef}`, authRegistry.credentials);
    // The lazy image: the busybox layers and 48 MiB of random files of which a container reads one.
    const big: TarEntry[] = [{ path: 'big', type: 'dir' }];
    for (let i = 0; i < 24; i++) big.push({ path: `big/f${i}`, type: 'file', data: crypto.randomBytes(2 << 20) });
    lazyRef = await env.convertImage({ layers: [...(img.spec.layers as TarEntry[][]), big], cmd: ['/bin/sleep', '86400'] }, 'lazy/busybox');
    const manifest = (await (await fetch(`${env.registry.url}/v2/lazy/busybox/manifests/latest`, {
      headers: { accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' },
    })).json()) as { layers: { size: number }[] };
    lazyImageBytes = manifest.layers.reduce((n, l) => n + l.size, 0);
    // Images on the auth registry share no layer chain with the others (containerd would reuse those
    // snapshots, whose devices read another registry): a first layer of their own, their own big files.
    const privateSpec = (name: string): ImageSpec => {
      const files: TarEntry[] = [{ path: 'big', type: 'dir' }];
      for (let i = 0; i < 8; i++) files.push({ path: `big/f${i}`, type: 'file', data: crypto.randomBytes(2 << 20) });
      return { layers: [[{ path: 'image-name', type: 'file', data: `${name}\n` }], ...(img.spec.layers as TarEntry[][]), files], cmd: ['/bin/sleep', '86400'] };
    };
    const user = ['-u', `${kubeAuth.username}:${kubeAuth.password}`];
    privateLazyRef = await env.convertImage(privateSpec('private'), 'obd-private/busybox', 'v1', user, authRegistry.host);
    unlistedLazyRef = await env.convertImage(privateSpec('unlisted'), 'unlisted/busybox', 'v1', user, authRegistry.host);
  });

  after(async () => {
    cri?.close();
    await env?.stop();
    await authRegistry.stop();
    credsDir.cleanup();
  });

  it('speaks runtime.v1 to containerd 1.6', STEP, async () => {
    const v = await cri.version();
    assert.equal(v.runtime_name, 'containerd');
    assert.equal(v.runtime_api_version, 'v1');
  });

  it('RunPodSandbox starts a host-network pod from the local pause image', STEP, async () => {
    podId = await cri.runPodSandbox(pod);
    const pods = await cri.listPodSandbox();
    assert.deepEqual(pods.map((p) => [p.id, p.state]), [[podId, 0]], 'one pod, SANDBOX_READY');
  });

  it('PullImage of an overlaybd image is lazy; a container of it runs and ExecSync reads its files', STEP, async () => {
    const before = await env.deviceTotals();
    const imageRef = await cri.pullImage(lazyRef);
    assert.match(imageRef, /^sha256:[0-9a-f]{64}$/);
    const snaps = (await env.containerd.ctr(['snapshots', '--snapshotter', 'obd', 'ls'], { namespace: 'k8s.io' })).stdout;
    assert.ok(snaps.includes('Committed'), `layers are committed snapshots of obd:\n${snaps}`);
    const id = await cri.createContainer(podId, pod, 'lazy', lazyRef, ['/bin/sleep', '86400']);
    containers.push(id);
    await cri.startContainer(id);
    const keep = await cri.execSync(id, ['/bin/cat', '/data/keep.txt']);
    assert.deepEqual(keep, { stdout: 'keep\n', stderr: '', exitCode: 0 });
    const script = await cri.execSync(id, ['/bin/sh', '-c', img.script]);
    assert.equal(script.stdout, img.expectedOutput, script.stderr);
    const one = await cri.execSync(id, ['/bin/sh', '-c', 'cat /big/f7 | wc -c']);
    assert.equal(one.stdout.trim(), String(2 << 20));
    const after = await env.deviceTotals();
    const received = after.receivedBytes - before.receivedBytes;
    console.log(`# CRI lazy pull + run: received ${received} of ${lazyImageBytes} bytes (${((100 * received) / lazyImageBytes).toFixed(1)}%)`);
    assert.ok(received > 0, 'the container read blocks from the registry');
    assert.ok(received < lazyImageBytes / 4, `received ${received} bytes of a ${lazyImageBytes}-byte image: not lazy`);
  });

  it('PullImage of a plain OCI image; a container of it runs', STEP, async () => {
    await cri.pullImage(plainRef);
    const id = await cri.createContainer(podId, pod, 'plain', plainRef, ['/bin/sleep', '86400']);
    containers.push(id);
    await cri.startContainer(id);
    const r = await cri.execSync(id, ['/bin/sh', '-c', img.script]);
    assert.equal(r.stdout, img.expectedOutput, r.stderr);
  });

  it('ImageFsInfo reports the usage of obd\'s snapshots', STEP, async () => {
    // The CRI plugin refreshes its snapshot usage from the snapshotter every 10 s.
    const fsInfo = await waitFor('ImageFsInfo used_bytes', () => cri.imageFsInfo(), (f) => (f[0]?.used_bytes?.value ?? 0) > 0, 40_000);
    assert.equal(fsInfo.length, 1);
    assert.match(fsInfo[0].fs_id?.mountpoint ?? '', /io\.containerd\.snapshotter\.v1\.obd$/);
    assert.ok((fsInfo[0].inodes_used?.value ?? 0) > 0, 'inodes counted');
  });

  it('PullImage with the credentials the kubelet passes, from a registry that requires them', STEP, async () => {
    await assert.rejects(cri.pullImage(authRef), (e: CriError) => /401|unauthorized|authoriz/i.test(e.message), 'no credentials: refused');
    const ref = await cri.pullImage(authRef, { username: 'kube', password: 'pull-secret' });
    assert.match(ref, /^sha256:/);
    const status = await cri.imageStatus(authRef);
    assert.ok(status && status.size > 0, 'the image is there');
  });

  it('an overlaybd image from a registry that requires credentials: the kubelet\'s auth pulls it, deviced reads it lazily with its credentialFile', STEP, async () => {
    await assert.rejects(cri.pullImage(privateLazyRef), (e: CriError) => /401|unauthorized|authoriz/i.test(e.message), 'no credentials: refused');
    const before = await env.deviceTotals();
    assert.match(await cri.pullImage(privateLazyRef, kubeAuth), /^sha256:/);
    const id = await cri.createContainer(podId, pod, 'private-lazy', privateLazyRef, ['/bin/sleep', '86400']);
    containers.push(id);
    await cri.startContainer(id);
    const one = await cri.execSync(id, ['/bin/sh', '-c', 'cat /image-name /data/keep.txt; cat /big/f3 | wc -c']);
    assert.deepEqual(one, { stdout: `private\nkeep\n${2 << 20}\n`, stderr: '', exitCode: 0 }, 'files of lower layers');
    const received = (await env.deviceTotals()).receivedBytes - before.receivedBytes;
    const size = 16 << 20; // the big files alone
    assert.ok(received > 0 && received < size / 2, `received ${received} bytes of an image of more than ${size} bytes: not lazy`);
  });

  it('credentials given only to the kubelet: the error names the registry and the missing credential', STEP, async () => {
    const host = authRegistry.host;
    let err: Error | undefined;
    try {
      await cri.pullImage(unlistedLazyRef, kubeAuth);
      const id = await cri.createContainer(podId, pod, 'unlisted-lazy', unlistedLazyRef, ['/bin/sleep', '86400']);
      containers.push(id);
      await cri.startContainer(id);
      const r = await cri.execSync(id, ['/bin/sh', '-c', 'cat /image-name /big/f5 | wc -c']);
      assert.fail(`the container read its image without deviced having credentials: ${JSON.stringify(r)}`);
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      err = e as Error;
    }
    assert.ok(err, 'deviced cannot read the layers without credentials for the registry');
    console.log(`# without deviced credentials: ${err.message}`);
    assert.ok(err.message.includes(host), `names the registry ${host}: ${err.message}`);
    assert.match(err.message, /credentialFile/, 'says where deviced looks for credentials');
  });

  it('StopPodSandbox and RemovePodSandbox leave no container, task or mount behind', STEP, async () => {
    await cri.stopPodSandbox(podId);
    await cri.removePodSandbox(podId);
    assert.deepEqual(await cri.listPodSandbox(), []);
    assert.deepEqual(await cri.listContainers(), []);
    const tasks = (await env.containerd.ctr(['tasks', 'ls', '-q'], { namespace: 'k8s.io' })).stdout.trim();
    assert.equal(tasks, '', 'no task left');
    const active = (await env.containerd.ctr(['snapshots', '--snapshotter', 'obd', 'ls'], { namespace: 'k8s.io' })).stdout
      .split('\n').filter((l) => /\bActive\b/.test(l));
    assert.deepEqual(active, [], 'no container snapshot left');
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(env.containerd.dir));
    assert.deepEqual(mounts, [], 'nothing of the pod mounted under containerd\'s dirs');
  });

  it('RemoveImage releases the image\'s devices, snapshots and mounts', STEP, async () => {
    for (const ref of [lazyRef, plainRef, authRef, privateLazyRef, unlistedLazyRef, `${env.registry.host}/pause:1`]) await cri.removeImage(ref);
    assert.deepEqual(await cri.listImages(), []);
    const devices = await waitFor('devices attached in deviced', () => env.deviceStats(), (d) => d.length === 0);
    assert.deepEqual(devices, []);
    const snaps = await waitFor('obd snapshots', async () =>
      (await env.containerd.ctr(['snapshots', '--snapshotter', 'obd', 'ls'], { namespace: 'k8s.io' })).stdout.trim().split('\n').slice(1),
    (s) => s.length === 0);
    assert.deepEqual(snaps, []);
    const mounts = fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(env.snapshotter.dir));
    assert.deepEqual(mounts, [], 'nothing mounted under the snapshotter root');
    // The block cache keeps the image's units (a cache, bounded by cacheSizeGB) but not its files open.
    const cacheDir = env.tmp.join('cache');
    assert.deepEqual(fdsUnder(env.devicedPid!, cacheDir), [], 'deviced holds no descriptor into the block cache');
    const cached = allocatedBytes(path.join(cacheDir, 'locations'));
    assert.ok(cached > 0, 'the lazy image\'s units stay cached');
    assert.ok(cached <= CACHE_BYTES + (1 << 20), `${cached} bytes cached, more than cacheSizeGB (${CACHE_BYTES}) allows`);
  });
});
