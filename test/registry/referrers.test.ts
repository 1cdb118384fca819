// Referrers against a small OCI 1.1 registry served here (node http on 127.0.0.1: manifests in
// memory, GET /v2/<repo>/referrers/<digest>, `OCI-Subject` on PUT), switchable to a registry without
// the referrers API (404 there, as docker-registry 2.8). The API is asked first and the referrers tag
// only when it answers 404; a push the registry indexed itself writes no tag; the tag fallback is
// read-modify-write; `obd rpull`'s resolution finds the overlaybd image through the API.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, it } from 'node:test';
import { sha256 } from '../../src/digest';
import { listReferrers, pushReferrer, referrersTag, RegistryClient, type Descriptor } from '../../src/registry';
import { resolveOverlaybdImage } from '../../src/rpull/resolve';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const NATIVE = 'application/vnd.containerd.overlaybd.native.v1+json';

/** An in-memory registry: manifests by digest and tag, and (when `api`) the referrers API over them. */
class ReferrersRegistry {
  api = true;
  readonly hits: string[] = [];
  private readonly manifests = new Map<string, { body: Buffer; mediaType: string }>();
  private readonly tags = new Map<string, string>();
  private server?: http.Server;
  host = '';

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => this.handle(req, Buffer.concat(chunks), res));
    });
    await new Promise<void>((r) => this.server!.listen(0, '127.0.0.1', r));
    this.host = `127.0.0.1:${(this.server!.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }

  reset(api: boolean): void {
    this.api = api;
    this.hits.length = 0;
    this.manifests.clear();
    this.tags.clear();
  }

  put(body: Buffer, mediaType: string, tag?: string): Descriptor {
    const digest = sha256(body);
    this.manifests.set(digest, { body, mediaType });
    if (tag) this.tags.set(tag, digest);
    return { mediaType, digest, size: body.length };
  }

  tagged(tag: string): { manifests: Descriptor[] } | undefined {
    const d = this.tags.get(tag);
    return d ? JSON.parse(this.manifests.get(d)!.body.toString()) : undefined;
  }

  private handle(req: http.IncomingMessage, body: Buffer, res: http.ServerResponse): void {
    this.hits.push(`${req.method} ${req.url}`);
    const url = new URL(req.url!, 'http://x');
    if (url.pathname === '/v2/') return void res.writeHead(200).end('{}');
    const ref = /^\/v2\/(.+)\/referrers\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    if (ref) {
      if (!this.api) return void res.writeHead(404, { 'content-type': 'text/plain' }).end('404 page not found');
      const want = url.searchParams.get('artifactType');
      const list = this.referrersOf(ref[2]).filter((d) => !want || d.artifactType === want);
      const out = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: list }));
      return void res.writeHead(200, { 'content-type': OCI_INDEX, ...(want ? { 'oci-filters-applied': 'artifactType' } : {}) }).end(out);
    }
    const man = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname);
    if (!man) return void res.writeHead(404).end();
    if (req.method === 'PUT') {
      const subject = (JSON.parse(body.toString()) as { subject?: Descriptor }).subject;
      const d = this.put(body, String(req.headers['content-type']), man[2].startsWith('sha256:') ? undefined : man[2]);
      return void res.writeHead(201, { 'docker-content-digest': d.digest, ...(this.api && subject ? { 'oci-subject': subject.digest } : {}) }).end();
    }
    const m = this.manifests.get(this.tags.get(man[2]) ?? man[2]);
    if (!m) return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}');
    res.writeHead(200, { 'content-type': m.mediaType, 'docker-content-digest': sha256(m.body) }).end(req.method === 'HEAD' ? undefined : m.body);
  }

  private referrersOf(subject: string): Descriptor[] {
    const out: Descriptor[] = [];
    for (const [digest, m] of this.manifests) {
      const j = JSON.parse(m.body.toString()) as { subject?: Descriptor; artifactType?: string; config?: Descriptor };
      if (j.subject?.digest === subject) out.push({ mediaType: m.mediaType, digest, size: m.body.length, artifactType: j.artifactType ?? j.config?.mediaType });
    }
    return out;
  }
}

function image(layers: Descriptor[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256('{}'), size: 2 }, layers, ...extra }));
}

const plainLayer: Descriptor = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: sha256('plain'), size: 5 };
const obdLayer: Descriptor = { mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256('obd'), size: 3,
  annotations: { 'containerd.io/snapshot/overlaybd/blob-digest': sha256('obd'), 'containerd.io/snapshot/overlaybd/blob-size': '3' } };

describe('referrers: API first, referrers tag on 404', { timeout: 60_000 }, () => {
  const reg = new ReferrersRegistry();
  let client: RegistryClient;
  before(async () => {
    await reg.start();
    client = new RegistryClient({ plainHttpHosts: [reg.host] });
  });
  after(async () => {
    await client.close();
    await reg.stop();
  });
  beforeEach(() => reg.reset(true));

  it('the referrers tag of a digest: algorithm, "-", encoded part (each truncated), other characters as "-"', () => {
    assert.equal(referrersTag(`sha256:${'a'.repeat(64)}`), `sha256-${'a'.repeat(64)}`);
    assert.equal(referrersTag(`sha512:${'b'.repeat(128)}`), `sha512-${'b'.repeat(64)}`);
    assert.equal(referrersTag(`x+y:${'C'.repeat(10)}=`), `x-y-${'C'.repeat(10)}-`);
  });

  it('lists referrers through the API and never reads the referrers tag', async () => {
    const subject = reg.put(image([plainLayer]), OCI_MANIFEST, 'v1');
    const ref = reg.put(image([obdLayer], { artifactType: NATIVE, subject }), OCI_MANIFEST);
    reg.put(image([], { artifactType: 'application/vnd.example.sbom', subject }), OCI_MANIFEST);
    const all = await listReferrers(client, reg.host, 'lib/app', subject.digest);
    assert.equal(all.via, 'api');
    assert.equal(all.manifests.length, 2);
    const native = await listReferrers(client, reg.host, 'lib/app', subject.digest, { artifactType: NATIVE });
    assert.deepEqual(native.manifests.map((d) => d.digest), [ref.digest]);
    assert.ok(!reg.hits.some((h) => h.includes(referrersTag(subject.digest))), reg.hits.join('\n'));
  });

  it('a push the registry indexed (OCI-Subject) writes no referrers tag', async () => {
    const subject = reg.put(image([plainLayer]), OCI_MANIFEST, 'v1');
    const r = await pushReferrer(client, reg.host, 'lib/app', image([obdLayer], { artifactType: NATIVE, subject }), OCI_MANIFEST, subject);
    assert.equal(r.via, 'api');
    assert.equal(reg.tagged(referrersTag(subject.digest)), undefined);
    assert.deepEqual((await listReferrers(client, reg.host, 'lib/app', subject.digest)).manifests.map((d) => d.digest), [r.digest]);
  });

  it('without the API: the referrers tag is read, extended and written back; a second push of the same manifest adds nothing', async () => {
    reg.reset(false);
    const subject = reg.put(image([plainLayer]), OCI_MANIFEST, 'v1');
    const other: Descriptor = { mediaType: OCI_MANIFEST, digest: sha256('someone else'), size: 12, artifactType: 'application/vnd.example.sig' };
    reg.put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [other] })), OCI_INDEX, referrersTag(subject.digest));
    const body = image([obdLayer], { artifactType: NATIVE, subject, annotations: { note: 'kept in the list' } });
    const r = await pushReferrer(client, reg.host, 'lib/app', body, OCI_MANIFEST, subject);
    assert.equal(r.via, 'tag');
    const want = { mediaType: OCI_MANIFEST, digest: r.digest, size: body.length, artifactType: NATIVE, annotations: { note: 'kept in the list' } };
    assert.deepEqual(reg.tagged(referrersTag(subject.digest))!.manifests, [other, want]);
    await pushReferrer(client, reg.host, 'lib/app', body, OCI_MANIFEST, subject);
    assert.deepEqual(reg.tagged(referrersTag(subject.digest))!.manifests, [other, want]);
    const listed = await listReferrers(client, reg.host, 'lib/app', subject.digest, { artifactType: NATIVE });
    assert.deepEqual(listed, { via: 'tag', manifests: [want] });
  });

  it('rpull resolution: a plain image leads to its overlaybd referrer through the API; an overlaybd image is its own', async () => {
    const subject = reg.put(image([plainLayer]), OCI_MANIFEST, 'v1');
    reg.put(image([], { artifactType: 'application/vnd.example.sbom', subject }), OCI_MANIFEST);
    const obd = reg.put(image([obdLayer], { artifactType: NATIVE, subject }), OCI_MANIFEST);
    const lines: string[] = [];
    const r = await resolveOverlaybdImage(client, { host: reg.host, repo: 'lib/app', tag: 'v1' }, undefined, (l) => lines.push(l));
    assert.equal(r.digest, obd.digest);
    assert.deepEqual(r.referrer, { subject: subject.digest, via: 'api' });
    assert.match(lines.join('\n'), /found through the referrers API/);
    assert.ok(!reg.hits.some((h) => h.includes(referrersTag(subject.digest))), 'no fallback when the API answers');

    reg.put(image([obdLayer]), OCI_MANIFEST, 'obd');
    const own = await resolveOverlaybdImage(client, { host: reg.host, repo: 'lib/app', tag: 'obd' }, undefined);
    assert.equal(own.referrer, undefined);
    assert.ok(!reg.hits.some((h) => h.includes('/referrers/' + own.digest)), 'an overlaybd image needs no referrers');
  });

  it('rpull resolution: when only the index has an overlaybd referrer (an index referrer), the platform is chosen from that index', async () => {
    const amd64 = { os: 'linux', architecture: 'amd64' };
    const plain = reg.put(image([plainLayer]), OCI_MANIFEST);
    const plainIndex = reg.put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ ...plain, platform: amd64 }] })), OCI_INDEX, 'v1');
    const obd = reg.put(image([obdLayer]), OCI_MANIFEST);
    const obdIndex = reg.put(Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, artifactType: NATIVE,
      manifests: [{ ...obd, platform: amd64 }], subject: plainIndex })), OCI_INDEX);
    const r = await resolveOverlaybdImage(client, { host: reg.host, repo: 'lib/app', tag: 'v1' }, amd64);
    assert.equal(r.digest, obd.digest);
    assert.deepEqual(r.referrer, { subject: plainIndex.digest, via: 'api' });
    assert.equal(r.index?.digest, obdIndex.digest);
    const asked = reg.hits.filter((h) => h.includes('/referrers/')).map((h) => h.split('/referrers/')[1]);
    assert.deepEqual(asked, [plain.digest, plainIndex.digest], 'the platform manifest first, then the index');
  });
});
