// OCI distribution client: /v2/ ping, manifests and indexes (OCI + Docker v2, platform selection),
// blob HEAD/GET, range readers, uploads (monolithic and chunked), cross-repository mount, manifest
// PUT. How requests travel (connections, auth, retries, mirrors) is transport.ts.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { Dispatcher } from 'undici';
import { sha256 } from '../digest';
import { repositoryScope, type AuthHandler } from './auth';
import { RegistryArgumentError, RegistryNotFoundError, RegistryProtocolError } from './errors';
import type { Endpoint, Hosts } from './hosts';
import { RangeReader, type RangeReaderOptions } from './range-reader';
import type { RetryHandler } from './retry';
import { readAll, RegistryTransport, type RegistryClientOptions } from './transport';

export type { RegistryClientOptions } from './transport';

export const MediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;
const manifestAccept = [MediaTypes.ociManifest, MediaTypes.dockerManifest, MediaTypes.ociIndex, MediaTypes.dockerList].join(', ');

export interface Reference {
  host: string;
  repo: string;
  tag?: string;
  digest?: string;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
  platform?: Platform;
  urls?: string[];
  /** OCI 1.1: what an artifact manifest is (referrers lists carry it). */
  artifactType?: string;
}

export interface ImageManifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

/** A manifest or an index as the registry returned it (media type from the body, else the header). */
export interface RawManifest {
  mediaType: string;
  digest: string;
  body: Buffer;
  json: { mediaType?: string; manifests?: Descriptor[]; layers?: Descriptor[]; [k: string]: unknown };
}

export interface FetchedManifest {
  mediaType: string;
  digest: string;
  body: Buffer;
  manifest: ImageManifest;
  /** The index it was selected from, when the reference named an index. */
  index?: { digest: string; mediaType: string };
}

const digestRe = /^sha256:[a-f0-9]{64}$/;

export function parseReference(ref: string): Reference {
  let rest = ref.trim();
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!digestRe.test(digest)) throw new RegistryArgumentError(`reference "${ref}": bad digest`, { registry: '' });
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const slash = rest.indexOf('/');
  let host = 'docker.io';
  let repo = rest;
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes('.') || first.includes(':') || first === 'localhost') {
      host = first;
      repo = rest.slice(slash + 1);
    }
  }
  if (host === 'docker.io' && !repo.includes('/')) repo = `library/${repo}`;
  if (!repo || !/^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$/.test(repo)) {
    throw new RegistryArgumentError(`reference "${ref}": bad repository name "${repo}"`, { registry: host });
  }
  if (!tag && !digest) tag = 'latest';
  return { host, repo, tag, digest };
}

export function defaultPlatform(): Platform {
  const arch: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x' };
  return { os: 'linux', architecture: arch[process.arch] ?? process.arch, ...(process.arch === 'arm64' ? { variant: 'v8' } : {}) };
}

export class RegistryClient {
  private readonly transport: RegistryTransport;

  constructor(opts: RegistryClientOptions = {}) {
    this.transport = new RegistryTransport(opts);
  }

  /** Where pulls and pushes of a host go (observable by tests and tools). */
  get hosts(): Hosts {
    return this.transport.hosts;
  }

  /** Token and challenge state (counts token requests). */
  get auth(): AuthHandler {
    return this.transport.auth;
  }

  /** Retry policy and its counters. */
  get retry(): RetryHandler {
    return this.transport.retry;
  }

  async close(): Promise<void> {
    await this.transport.close();
  }

  /** GET /v2/ on the origin: checks reachability and credentials. */
  async ping(host: string, signal?: AbortSignal): Promise<void> {
    const ep = this.hosts.endpoint(host);
    await this.transport.withRetry(ep, 'GET /v2/', signal, async (sig) => {
      const res = await this.transport.send(ep, '', { method: 'GET', path: '/v2/', scope: '', signal: sig });
      if (res.statusCode !== 200) await this.transport.fail(res, ep, 'GET /v2/');
      await res.body.dump();
    });
  }

  /** Resolves a reference to an image manifest; indexes are resolved for `platform`. */
  async getManifest(ref: Reference | string, opts: { platform?: Platform; signal?: AbortSignal } = {}): Promise<FetchedManifest> {
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    const first = await this.fetchManifestRaw(r.host, r.repo, r.digest ?? r.tag ?? 'latest', opts.signal);
    if (first.mediaType !== MediaTypes.ociIndex && first.mediaType !== MediaTypes.dockerList) {
      return { ...first, manifest: first.json as unknown as ImageManifest };
    }
    const want = opts.platform ?? defaultPlatform();
    const list = ((first.json as { manifests?: Descriptor[] }).manifests ?? []);
    const pick = selectPlatform(list, want);
    if (!pick) {
      const have = list.map((d) => d.platform && `${d.platform.os}/${d.platform.architecture}${d.platform.variant ? '/' + d.platform.variant : ''}`).filter(Boolean);
      throw new RegistryNotFoundError(`${r.host}/${r.repo}: index ${first.digest} has no manifest for ${want.os}/${want.architecture} (has ${have.join(', ') || 'none'})`,
        { registry: r.host });
    }
    const child = await this.fetchManifestRaw(r.host, r.repo, pick.digest, opts.signal);
    return { mediaType: child.mediaType, digest: child.digest, body: child.body, manifest: child.json as unknown as ImageManifest,
      index: { digest: first.digest, mediaType: first.mediaType } };
  }

  /** One manifest or index by tag or digest, not resolved further (digest verified when the reference is one). */
  async getManifestRaw(host: string, repo: string, reference: string, signal?: AbortSignal): Promise<RawManifest> {
    return this.fetchManifestRaw(host, repo, reference, signal);
  }

  /**
   * GET /v2/<repo>/referrers/<digest> (OCI distribution 1.1): the referrers index, or undefined when
   * the registry answers 404 (no referrers API: the caller falls back to the referrers tag).
   */
  async getReferrers(host: string, repo: string, digest: string, opts: { artifactType?: string; signal?: AbortSignal } = {}):
    Promise<{ manifests: Descriptor[]; filtered: boolean } | undefined> {
    checkDigest(digest, host);
    const what = `GET referrers ${repo}@${digest}`;
    const query = opts.artifactType ? `?artifactType=${encodeURIComponent(opts.artifactType)}` : '';
    return this.transport.pull(host, what, opts.signal, async (ep, sig) => {
      const res = await this.transport.send(ep, repo, { method: 'GET', path: `/v2/${repo}/referrers/${digest}${query}`,
        scope: repositoryScope(repo, 'pull'), headers: { accept: MediaTypes.ociIndex }, signal: sig, followRedirects: true });
      if (res.statusCode === 404) {
        await res.body.dump();
        return undefined;
      }
      if (res.statusCode !== 200) await this.transport.fail(res, ep, what);
      const body = await readAll(res.body, 4 << 20, ep.host, what);
      let json: { manifests?: unknown };
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch {
        throw new RegistryProtocolError(`${ep.host}: ${what}: not JSON`, { registry: ep.host });
      }
      if (!Array.isArray(json.manifests)) throw new RegistryProtocolError(`${ep.host}: ${what}: not an image index`, { registry: ep.host });
      const filtered = String(res.headers['oci-filters-applied'] ?? '').split(',').map((s) => s.trim()).includes('artifactType');
      return { manifests: json.manifests as Descriptor[], filtered };
    });
  }

  private async fetchManifestRaw(host: string, repo: string, reference: string, signal?: AbortSignal): Promise<RawManifest> {
    const what = `manifest ${repo}:${reference}`;
    return this.transport.pull(host, what, signal, async (ep, sig) => {
      const res = await this.transport.send(ep, repo, {
        method: 'GET', path: `/v2/${repo}/manifests/${reference}`, scope: repositoryScope(repo, 'pull'),
        headers: { accept: manifestAccept }, signal: sig, followRedirects: true,
      });
      if (res.statusCode !== 200) await this.transport.fail(res, ep, `GET ${what}`);
      const body = await readAll(res.body, 16 << 20, ep.host, what);
      const digest = sha256(body);
      if (digestRe.test(reference) && digest !== reference) {
        throw new RegistryProtocolError(`${ep.host}: ${what}: content digest is ${digest}`, { registry: ep.host });
      }
      let json: { mediaType?: string; manifests?: unknown; layers?: unknown };
      try {
        json = JSON.parse(body.toString('utf8'));
      } catch {
        throw new RegistryProtocolError(`${ep.host}: ${what}: not JSON`, { registry: ep.host });
      }
      const header = String(res.headers['content-type'] ?? '').split(';')[0].trim();
      const mediaType = json.mediaType ?? (header || (json.manifests ? MediaTypes.ociIndex : MediaTypes.ociManifest));
      if (!json.manifests && !Array.isArray(json.layers)) {
        throw new RegistryProtocolError(`${ep.host}: ${what}: unsupported manifest (media type ${mediaType})`, { registry: ep.host });
      }
      return { mediaType, digest, body, json: json as RawManifest['json'] };
    });
  }

  /** HEAD a blob: its size, or RegistryNotFoundError. */
  async headBlob(host: string, repo: string, digest: string, signal?: AbortSignal): Promise<{ size: number }> {
    checkDigest(digest, host);
    const what = `HEAD blob ${repo}@${digest}`;
    return this.transport.pull(host, what, signal, async (ep, sig) => {
      const res = await this.transport.send(ep, repo, { method: 'HEAD', path: `/v2/${repo}/blobs/${digest}`, scope: repositoryScope(repo, 'pull'),
        signal: sig, followRedirects: true });
      if (res.statusCode !== 200) await this.transport.fail(res, ep, what);
      await res.body.dump();
      const size = Number(res.headers['content-length']);
      if (!Number.isSafeInteger(size) || size < 0) throw new RegistryProtocolError(`${ep.host}: ${what}: no Content-Length`, { registry: ep.host });
      return { size };
    });
  }

  /** Whole blob into memory, digest verified (configs, small blobs). */
  async getBlob(host: string, repo: string, digest: string, opts: { maxBytes?: number; signal?: AbortSignal } = {}): Promise<Buffer> {
    const what = `GET blob ${repo}@${digest}`;
    return this.streamBlob(host, repo, digest, async (res, from) => {
      const body = await readAll(res, opts.maxBytes ?? 64 << 20, from, what);
      if (sha256(body) !== digest) throw new RegistryProtocolError(`${from}: ${what}: content does not match digest`, { registry: from });
      return body;
    }, opts.signal);
  }

  /**
   * The whole blob as a stream handed to `consume` with the host that answered; consume reads it
   * to the end (and checks its digest). A mirror that fails moves on to the next endpoint, and the
   * attempt is retried.
   */
  async streamBlob<T>(host: string, repo: string, digest: string, consume: (body: Dispatcher.ResponseData['body'], from: string) => Promise<T>,
    signal?: AbortSignal): Promise<T> {
    checkDigest(digest, host);
    const what = `GET blob ${repo}@${digest}`;
    return this.transport.pull(host, what, signal, async (ep, sig) => {
      const res = await this.transport.send(ep, repo, { method: 'GET', path: `/v2/${repo}/blobs/${digest}`, scope: repositoryScope(repo, 'pull'),
        signal: sig, followRedirects: true });
      if (res.statusCode !== 200) await this.transport.fail(res, ep, what);
      return consume(res.body, ep.host);
    });
  }

  /** A random-access reader of one blob (lazy data path). */
  blobReader(host: string, repo: string, digest: string, opts: RangeReaderOptions = {}): RangeReader {
    checkDigest(digest, host);
    return new RangeReader(this.transport, host, repo, digest, opts);
  }

  /** Uploads a blob (monolithic, or chunked when chunkSize is set and smaller than the blob). */
  async uploadBlob(host: string, repo: string, data: Buffer, opts: { chunkSize?: number; signal?: AbortSignal } = {}): Promise<string> {
    const digest = sha256(data);
    const chunk = opts.chunkSize && opts.chunkSize < data.length ? opts.chunkSize : 0;
    await this.upload(host, repo, digest, data.length, chunk, async (off, len) => data.subarray(off, off + len), opts.signal);
    return digest;
  }

  /**
   * Uploads a local file in chunks (default 16 MiB) with bounded memory: one pass to hash it (unless
   * the caller knows the digest; the registry checks it), one to send it; every chunk is retried on
   * its own. `progress` hears the bytes of each chunk sent.
   */
  async uploadBlobFromFile(host: string, repo: string, file: string,
    opts: { chunkSize?: number; signal?: AbortSignal; digest?: string; progress?: (bytes: number) => void } = {}): Promise<{ digest: string; size: number }> {
    const fh = await fs.promises.open(file, 'r');
    try {
      const size = (await fh.stat()).size;
      let digest = opts.digest;
      if (digest === undefined) {
        const hash = crypto.createHash('sha256');
        for await (const c of fh.createReadStream({ autoClose: false, start: 0 })) hash.update(c as Buffer);
        digest = 'sha256:' + hash.digest('hex');
      }
      checkDigest(digest, host);
      const chunk = Math.max(1, opts.chunkSize ?? 16 << 20);
      await this.upload(host, repo, digest, size, size > chunk ? chunk : 0, async (off, len) => {
        const buf = Buffer.allocUnsafe(len);
        const { bytesRead } = await fh.read(buf, 0, len, off);
        if (bytesRead !== len) throw new RegistryArgumentError(`${file}: changed while uploading`, { registry: host });
        return buf;
      }, opts.signal, opts.progress);
      return { digest, size };
    } finally {
      await fh.close();
    }
  }

  private async upload(host: string, repo: string, digest: string, size: number, chunk: number,
    read: (off: number, len: number) => Promise<Buffer>, signal?: AbortSignal, progress?: (bytes: number) => void): Promise<void> {
    const ep = this.hosts.endpoint(host);
    const scope = repositoryScope(repo, 'pull,push');
    const exists = await this.headBlob(host, repo, digest, signal).then(() => true, () => false);
    if (exists) return;
    let location = await this.startUpload(ep, repo, scope, signal);
    if (chunk) {
      for (let off = 0; off < size; off += chunk) {
        const part = await read(off, Math.min(chunk, size - off));
        const what = `PATCH upload ${repo} bytes ${off}-${off + part.length - 1}`;
        location = await this.transport.withRetry(ep, what, signal, async (sig) => {
          const res = await this.transport.send(ep, repo, { method: 'PATCH', path: location, scope, signal: sig, body: part, headers: {
            'content-type': 'application/octet-stream', 'content-range': `${off}-${off + part.length - 1}`, 'content-length': String(part.length) } });
          if (res.statusCode !== 202) await this.transport.fail(res, ep, what);
          await res.body.dump();
          return String(res.headers.location ?? location);
        });
        progress?.(part.length);
      }
    }
    const done = new URL(location, ep.origin);
    done.searchParams.set('digest', digest);
    const body = chunk ? Buffer.alloc(0) : await read(0, size);
    const what = `PUT blob ${repo}@${digest}`;
    await this.transport.withRetry(ep, what, signal, async (sig) => {
      const res = await this.transport.send(ep, repo, { method: 'PUT', path: done.pathname + done.search, scope, signal: sig, body,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) } });
      if (res.statusCode !== 201) await this.transport.fail(res, ep, what);
      await res.body.dump();
    });
    if (!chunk) progress?.(body.length);
  }

  /** Cross-repository mount; true if mounted, false if the registry refused (then upload instead). */
  async mountBlob(host: string, repo: string, digest: string, fromRepo: string, signal?: AbortSignal): Promise<boolean> {
    checkDigest(digest, host);
    const ep = this.hosts.endpoint(host);
    const scope = repositoryScope(repo, 'pull,push', `repository:${fromRepo}:pull`);
    const what = `mount ${digest} from ${fromRepo} into ${repo}`;
    return this.transport.withRetry(ep, what, signal, async (sig) => {
      const res = await this.transport.send(ep, repo, { method: 'POST', scope, signal: sig,
        path: `/v2/${repo}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(fromRepo)}`,
        headers: { 'content-length': '0' } });
      if (res.statusCode === 201) {
        await res.body.dump();
        return true;
      }
      if (res.statusCode === 202) {
        await res.body.dump();
        const loc = res.headers.location;
        if (loc) {
          const cancel = await this.transport.send(ep, repo, { method: 'DELETE', path: String(loc), scope, signal: sig }).catch(() => undefined);
          await cancel?.body.dump();
        }
        return false;
      }
      return this.transport.fail(res, ep, what);
    });
  }

  async putManifest(host: string, repo: string, reference: string, body: Buffer | object, mediaType?: string,
    signal?: AbortSignal): Promise<string> {
    return (await this.putManifestDetailed(host, repo, reference, body, mediaType, signal)).digest;
  }

  /** PUT a manifest; `subject` is the registry's OCI-Subject answer (it indexed the manifest's subject itself). */
  async putManifestDetailed(host: string, repo: string, reference: string, body: Buffer | object, mediaType?: string,
    signal?: AbortSignal): Promise<{ digest: string; subject?: string }> {
    const buf = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const mt = mediaType ?? (Buffer.isBuffer(body) ? undefined : (body as { mediaType?: string }).mediaType) ?? MediaTypes.ociManifest;
    const ep = this.hosts.endpoint(host);
    const what = `PUT manifest ${repo}:${reference}`;
    const subject = await this.transport.withRetry(ep, what, signal, async (sig) => {
      const res = await this.transport.send(ep, repo, { method: 'PUT', path: `/v2/${repo}/manifests/${reference}`, scope: repositoryScope(repo, 'pull,push'),
        signal: sig, body: buf, headers: { 'content-type': mt, 'content-length': String(buf.length) } });
      if (res.statusCode !== 201) await this.transport.fail(res, ep, what);
      await res.body.dump();
      const h = res.headers['oci-subject'];
      return h === undefined ? undefined : String(h);
    });
    return { digest: sha256(buf), ...(subject ? { subject } : {}) };
  }

  private async startUpload(ep: Endpoint, repo: string, scope: string, signal?: AbortSignal): Promise<string> {
    const what = `POST upload ${repo}`;
    return this.transport.withRetry(ep, what, signal, async (sig) => {
      const res = await this.transport.send(ep, repo, { method: 'POST', path: `/v2/${repo}/blobs/uploads/`, scope, signal: sig,
        headers: { 'content-length': '0' } });
      if (res.statusCode !== 202) await this.transport.fail(res, ep, what);
      await res.body.dump();
      const loc = res.headers.location;
      if (!loc) throw new RegistryProtocolError(`${ep.host}: ${what}: no Location`, { registry: ep.host });
      return String(loc);
    });
  }
}

export function selectPlatform(list: Descriptor[], want: Platform): Descriptor | undefined {
  const ok = list.filter((d) => d.platform && d.platform.os === want.os && d.platform.architecture === want.architecture
    && d.annotations?.['vnd.docker.reference.type'] !== 'attestation-manifest');
  if (want.variant) return ok.find((d) => d.platform!.variant === want.variant) ?? ok.find((d) => !d.platform!.variant);
  return ok[0];
}

function checkDigest(digest: string, host: string): void {
  if (!digestRe.test(digest)) throw new RegistryArgumentError(`${host}: "${digest}" is not a sha256 digest`, { registry: host });
}
