// Registry client against a real docker-registry on 127.0.0.1: plain HTTP, htpasswd Basic, Bearer
// tokens, manifests/indexes, uploads, mounts, mirrors.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  CredentialStore, MediaTypes, RegistryAuthError, RegistryClient, RegistryNotFoundError, parseChallenge, parseReference,
} from '../../src/registry';
import { sha256 } from '../../src/digest';
import { FaultProxy, isBlobGet } from '../helpers/fault-proxy';
import { TestRegistry, freePort } from '../helpers/registry';
import { TokenServer } from '../helpers/token-server';

const blob = crypto.randomBytes(3 << 20);

describe('registry client: plain HTTP', () => {
  const reg = new TestRegistry();
  let client: RegistryClient;
  before(async () => {
    await reg.start();
    client = new RegistryClient({ plainHttpHosts: [reg.host] });
  });
  after(async () => {
    await client?.close();
    await reg.stop();
  });

  it('pings /v2/', async () => {
    await client.ping(reg.host);
  });

  it('uploads monolithically and chunked, then reads byte ranges back', async () => {
    const d1 = await client.uploadBlob(reg.host, 'lib/mono', blob);
    const other = crypto.randomBytes(1_000_003);
    const d2 = await client.uploadBlob(reg.host, 'lib/chunked', other, { chunkSize: 256 << 10 });
    assert.equal(d1, sha256(blob));
    assert.equal((await client.headBlob(reg.host, 'lib/chunked', d2)).size, other.length);
    const r = client.blobReader(reg.host, 'lib/chunked', d2);
    assert.equal(await r.size(), other.length);
    assert.deepEqual(await r.read(12345, 70000), other.subarray(12345, 12345 + 70000));
    assert.deepEqual(await r.read(other.length - 10, 100), other.subarray(other.length - 10));
    assert.equal((await r.read(other.length, 5)).length, 0);
    assert.deepEqual(await client.getBlob(reg.host, 'lib/chunked', d2), other);
  });

  it('uploads a file in chunks with bounded memory', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-upload-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'layer');
    const content = crypto.randomBytes(2 * 1024 * 1024 + 17);
    fs.writeFileSync(file, content);
    const { digest, size } = await client.uploadBlobFromFile(reg.host, 'lib/file', file, { chunkSize: 512 * 1024 });
    assert.equal(digest, sha256(content));
    assert.equal(size, content.length);
    assert.deepEqual(await client.getBlob(reg.host, 'lib/file', digest), content);
  });

  it('mounts a blob across repositories', async () => {
    const d = await client.uploadBlob(reg.host, 'lib/src', Buffer.from('mount me'));
    assert.equal(await client.mountBlob(reg.host, 'lib/dst', d, 'lib/src'), true);
    assert.equal((await client.headBlob(reg.host, 'lib/dst', d)).size, 8);
  });

  it('puts manifests and resolves an index for the wanted platform (OCI and Docker types)', async () => {
    const cfg = Buffer.from('{"architecture":"amd64","os":"linux"}');
    const cd = await client.uploadBlob(reg.host, 'lib/img', cfg);
    const ld = await client.uploadBlob(reg.host, 'lib/img', blob);
    const mk = (mt: string, lmt: string) => ({ schemaVersion: 2, mediaType: mt,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cd, size: cfg.length },
      layers: [{ mediaType: lmt, digest: ld, size: blob.length, annotations: { 'containerd.io/snapshot/overlaybd/blob-digest': ld } }] });
    const amd = await client.putManifest(reg.host, 'lib/img', 'amd', mk(MediaTypes.ociManifest, 'application/vnd.oci.image.layer.v1.tar'));
    const armBody = Buffer.from(JSON.stringify({ ...mk(MediaTypes.dockerManifest, 'application/vnd.docker.image.rootfs.diff.tar.gzip'),
      config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: cd, size: cfg.length } }));
    const arm = await client.putManifest(reg.host, 'lib/img', 'arm', armBody, MediaTypes.dockerManifest);
    const index = { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [
      { mediaType: MediaTypes.dockerManifest, digest: arm, size: armBody.length, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { mediaType: MediaTypes.ociManifest, digest: amd, size: 0, platform: { os: 'linux', architecture: 'amd64' } },
    ] };
    const idx = await client.putManifest(reg.host, 'lib/img', 'multi', index);
    const gotAmd = await client.getManifest(`${reg.host}/lib/img:multi`, { platform: { os: 'linux', architecture: 'amd64' } });
    assert.equal(gotAmd.digest, amd);
    assert.equal(gotAmd.index?.digest, idx);
    assert.equal(gotAmd.manifest.layers[0].digest, ld);
    const gotArm = await client.getManifest(`${reg.host}/lib/img:multi`, { platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } });
    assert.equal(gotArm.digest, arm);
    assert.equal(gotArm.mediaType, MediaTypes.dockerManifest);
    await assert.rejects(client.getManifest(`${reg.host}/lib/img:multi`, { platform: { os: 'linux', architecture: 's390x' } }),
      (e: Error) => e instanceof RegistryNotFoundError && /has no manifest for linux\/s390x \(has linux\/arm64\/v8, linux\/amd64\)/.test(e.message));
    const byDigest = await client.getManifest({ host: reg.host, repo: 'lib/img', digest: amd });
    assert.equal(byDigest.digest, amd);
  });

  it('reports a missing blob as not found, naming the registry', async () => {
    const missing = sha256(Buffer.from('nope'));
    await assert.rejects(client.blobReader(reg.host, 'lib/mono', missing).read(0, 10),
      (e: Error) => e instanceof RegistryNotFoundError && e.message.includes(reg.host) && e.message.includes('404'));
  });
});

describe('registry client: htpasswd Basic auth', () => {
  const reg = new TestRegistry({ basic: { users: { alice: 'right-pw' } } });
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-cred-'));
  before(() => reg.start());
  after(async () => {
    await reg.stop();
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('uses credentials from a docker config.json (base64 auth)', async () => {
    const file = path.join(tmp, 'config.json');
    fs.writeFileSync(file, JSON.stringify({ auths: { [`http://${reg.host}/v1/`]: { auth: Buffer.from('alice:right-pw').toString('base64') } } }));
    const client = new RegistryClient({ credentials: CredentialStore.fromFile(file) });
    try {
      const d = await client.uploadBlob(reg.host, 'team/app', blob);
      assert.deepEqual(await client.blobReader(reg.host, 'team/app', d).read(100, 1000), blob.subarray(100, 1100));
    } finally {
      await client.close();
    }
  });

  it('wrong credentials give an auth error naming the registry and the status', async () => {
    const client = new RegistryClient({ credentials: new CredentialStore({ [reg.host]: { username: 'alice', password: 'wrong' } }) });
    try {
      await assert.rejects(client.ping(reg.host), (e: Error) =>
        e instanceof RegistryAuthError && e.status === 401 && e.message.includes(reg.host) && /401/.test(e.message));
    } finally {
      await client.close();
    }
  });

  it('follows a blob redirect to another host without sending the registry credentials there', async (t) => {
    const digest = await reg.pushBlob('team/redir', blob);
    const proxy = await FaultProxy.inFrontOf(reg.host);
    t.after(() => proxy.stop());
    proxy.storeAuth = 'Basic ' + Buffer.from('alice:right-pw').toString('base64'); // the store's own access
    const client = new RegistryClient({ credentials: new CredentialStore({ [proxy.host]: { username: 'alice', password: 'right-pw' } }) });
    t.after(() => client.close());
    proxy.inject({ kind: 'redirect' }, 1, (req) => isBlobGet(req) && !!req.headers.authorization); // as a registry does
    const r = client.blobReader(proxy.host, 'team/redir', digest, { size: blob.length });
    assert.deepEqual(await r.read(1000, 5000), blob.subarray(1000, 6000));
    assert.deepEqual(await r.read(9000, 10), blob.subarray(9000, 9010));
    const toRegistry = proxy.seen.filter((s) => s.server === 'proxy' && s.method === 'GET');
    const toStore = proxy.seen.filter((s) => s.server === 'store');
    assert.ok(toRegistry.some((s) => s.authorization?.startsWith('Basic ')));
    assert.equal(toStore.length, 2);
    assert.ok(toStore.every((s) => s.authorization === undefined));
  });

  it('keeps at most connectionsPerHost connections to one registry', async (t) => {
    const d = await reg.pushBlob('team/conn', blob);
    const proxy = await FaultProxy.inFrontOf(reg.host);
    t.after(() => proxy.stop());
    const client = new RegistryClient({ connectionsPerHost: 2,
      credentials: new CredentialStore({ [proxy.host]: { username: 'alice', password: 'right-pw' } }) });
    t.after(() => client.close());
    const r = client.blobReader(proxy.host, 'team/conn', d, { size: blob.length });
    await Promise.all(Array.from({ length: 12 }, (_, i) => r.read(i * 100_000, 100_000)));
    assert.ok(proxy.maxConnections <= 2, `saw ${proxy.maxConnections} connections at once`);
    assert.ok(proxy.totalConnections <= 4, `opened ${proxy.totalConnections} connections (keep-alive)`);
  });

  it('no credentials: an auth error that says so', async () => {
    const client = new RegistryClient();
    try {
      await assert.rejects(client.headBlob(reg.host, 'team/app', sha256(blob)),
        (e: Error) => e instanceof RegistryAuthError && e.message.includes('no credentials configured'));
    } finally {
      await client.close();
    }
  });
});

describe('registry client: Bearer tokens', () => {
  const ts = new TokenServer({ users: { bob: 'pw' }, anonymousPull: true });
  let reg: TestRegistry;
  let proxy: FaultProxy;
  let digest = '';
  before(async () => {
    await ts.start();
    reg = new TestRegistry({ token: { server: ts, user: 'bob', password: 'pw' } });
    await reg.start();
    digest = await reg.pushBlob('lib/tok', blob);
    proxy = await FaultProxy.inFrontOf(reg.host);
  });
  after(async () => {
    await proxy?.stop();
    await reg?.stop();
    await ts.stop();
  });

  it('pulls anonymously with a per-repository token, cached across reads', async () => {
    const client = new RegistryClient();
    try {
      const before = ts.requests.length;
      const r = client.blobReader(reg.host, 'lib/tok', digest);
      for (let i = 0; i < 5; i++) assert.deepEqual(await r.read(i * 1000, 500), blob.subarray(i * 1000, i * 1000 + 500));
      const mine = ts.requests.slice(before);
      assert.equal(mine.length, 1);
      assert.deepEqual(mine[0], { user: '', scopes: ['repository:lib/tok:pull'], status: 200 });
    } finally {
      await client.close();
    }
  });

  it('pushes with credentials and refreshes the token when the registry answers 401', async () => {
    const client = new RegistryClient({ credentials: new CredentialStore({ [proxy.host]: { username: 'bob', password: 'pw' } }) });
    try {
      const other = crypto.randomBytes(5000);
      const d = await client.uploadBlob(proxy.host, 'lib/pushed', other);
      const r = client.blobReader(proxy.host, 'lib/pushed', d);
      assert.deepEqual(await r.read(0, 10), other.subarray(0, 10));
      const tokensBefore = client.auth.tokenRequests;
      const challenge = `Bearer realm="${ts.realm}",service="${ts.service}",scope="repository:lib/pushed:pull"`;
      proxy.inject({ kind: 'status', status: 401, headers: { 'www-authenticate': challenge } });
      assert.deepEqual(await r.read(10, 10), other.subarray(10, 20));
      assert.equal(client.auth.tokenRequests, tokensBefore + 1);
    } finally {
      await client.close();
    }
  });

  it('a wrong password is an auth error naming the registry and the status', async () => {
    const client = new RegistryClient({ credentials: new CredentialStore({ [reg.host]: { username: 'bob', password: 'nope' } }) });
    try {
      await assert.rejects(client.blobReader(reg.host, 'lib/tok', digest).read(0, 1),
        (e: Error) => e instanceof RegistryAuthError && e.status === 401 && e.message.includes(reg.host));
    } finally {
      await client.close();
    }
  });
});

describe('registry client: mirrors', () => {
  const origin = new TestRegistry();
  const mirror = new TestRegistry();
  before(async () => {
    await Promise.all([origin.start(), mirror.start()]);
  });
  after(async () => {
    await Promise.all([origin.stop(), mirror.stop()]);
  });

  it('tries mirrors in order (a dead one, one without the blob), then the origin', async () => {
    const onlyOrigin = crypto.randomBytes(10000);
    const d = await origin.pushBlob('lib/m', onlyOrigin);
    const both = crypto.randomBytes(10000);
    const d2 = await origin.pushBlob('lib/m', both);
    await mirror.pushBlob('lib/m', both);
    const dead = `127.0.0.1:${await freePort()}`;
    const client = new RegistryClient({ mirrors: [{ host: dead, insecure: true }, { host: mirror.host, insecure: true }] });
    try {
      const r = client.blobReader(origin.host, 'lib/m', d);
      assert.deepEqual(await r.read(5, 100), onlyOrigin.subarray(5, 105));
      assert.equal(r.registry, origin.host);
      const r2 = client.blobReader(origin.host, 'lib/m', d2);
      assert.deepEqual(await r2.read(5, 100), both.subarray(5, 105));
      assert.equal(r2.registry, mirror.host);
    } finally {
      await client.close();
    }
  });
});

describe('registry client: parsing', () => {
  it('parses references', () => {
    assert.deepEqual(parseReference('redis'), { host: 'docker.io', repo: 'library/redis', tag: 'latest', digest: undefined });
    assert.deepEqual(parseReference('127.0.0.1:5000/a/b:v1'), { host: '127.0.0.1:5000', repo: 'a/b', tag: 'v1', digest: undefined });
    const d = sha256(Buffer.from('x'));
    assert.deepEqual(parseReference(`ghcr.io/o/r@${d}`), { host: 'ghcr.io', repo: 'o/r', tag: undefined, digest: d });
  });
  it('parses challenges', () => {
    assert.deepEqual(parseChallenge('Bearer realm="https://a/token",service="reg",scope="repository:x:pull,push"'),
      { scheme: 'bearer', params: { realm: 'https://a/token', service: 'reg', scope: 'repository:x:pull,push' } });
    assert.deepEqual(parseChallenge('Basic realm="r"'), { scheme: 'basic', params: { realm: 'r' } });
  });
  it('looks credentials up by host and repository prefix, first entry wins', () => {
    const s = new CredentialStore({ 'reg.io/team': { username: 'a', password: '1' }, 'reg.io': { auth: Buffer.from('b:2').toString('base64') },
      'https://index.docker.io/v1/': { username: 'hub', password: 'h' } });
    assert.equal(s.lookup('reg.io', 'team/app')?.username, 'a');
    assert.equal(s.lookup('reg.io', 'other/app')?.username, 'b');
    assert.equal(s.lookup('registry-1.docker.io', 'library/redis')?.username, 'hub');
    assert.equal(s.lookup('else.io', 'x'), undefined);
  });
});
