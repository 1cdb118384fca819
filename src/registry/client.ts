// OCI distribution client on undici: /v2/ ping, manifests and indexes (OCI + Docker v2, platform
// selection), blob HEAD/GET, range readers, uploads (monolithic and chunked), cross-repository
// mount, manifest PUT. One undici Agent per client: a pool per origin with a connection limit and
// keep-alive, header/body timeouts. Pulls try the mirrors in order, then the origin (hosts.ts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import { Agent, interceptors, type Dispatcher } from 'undici';
import { AuthHandler, repositoryScope } from './auth';
import { CredentialStore } from './credentials';
import {
  RegistryArgumentError, RegistryAuthError, RegistryError, RegistryHttpError, RegistryNetworkError,
  RegistryNotFoundError, RegistryProtocolError, isTransportError,
} from './errors';
import { Hosts, type Endpoint, type HostsOptions } from './hosts';
import { RangeReader, type RangeReaderOptions } from './range-reader';
import { RetryHandler, parseRetryAfter, type RetryOptions } from './retry';

export const MediaTypes = {
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
} as const;
const manifestAccept = [MediaTypes.ociManifest, MediaTypes.dockerManifest, MediaTypes.ociIndex, MediaTypes.dockerList].join(', ');

export interface RegistryClientOptions extends HostsOptions {
  credentials?: CredentialStore;
  userAgent?: string;
  connectionsPerHost?: number; // default 8
  keepAliveTimeoutMs?: number; // default 30 s
  requestTimeoutMs?: number;   // undici headers/body timeout per request, default 30 s
  operationDeadlineMs?: number; // one operation incl. retries (manifest, HEAD, one range read), default 30 s
  retry?: RetryOptions;
  dispatcher?: Dispatcher;     // injected (tests); the client then does not own it
}

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
}

export interface ImageManifest {
  schemaVersion: number;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  annotations?: Record<string, string>;
}

export interface FetchedManifest {
  mediaType: string;
  digest: string;
  body: Buffer;
  manifest: ImageManifest;
  /** The index it was selected from, when the reference named an index. */
  index?: { digest: string; mediaType: string };
}

export interface SendRequest {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  path: string; // path + query on ep.origin, or an absolute URL on the same origin
  scope: string;
  headers?: Record<string, string>;
  body?: Buffer;
  signal?: AbortSignal;
  followRedirects?: boolean;
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

export function sha256Digest(data: Uint8Array): string {
  return 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
}

export class RegistryClient {
  readonly hosts: Hosts;
  readonly auth: AuthHandler;
  readonly retry: RetryHandler;
  readonly dispatcher: Dispatcher;
  private readonly following: Dispatcher;
  private readonly ownsDispatcher: boolean;
  readonly operationDeadlineMs: number;
  readonly userAgent: string;
  requests = 0; // HTTP requests sent (metrics, tests)

  constructor(readonly opts: RegistryClientOptions = {}) {
    this.hosts = new Hosts(opts);
    this.ownsDispatcher = !opts.dispatcher;
    this.dispatcher = opts.dispatcher ?? new Agent({
      connections: opts.connectionsPerHost ?? 8,
      keepAliveTimeout: opts.keepAliveTimeoutMs ?? 30_000,
      headersTimeout: opts.requestTimeoutMs ?? 30_000,
      bodyTimeout: opts.requestTimeoutMs ?? 30_000,
      connect: { timeout: Math.min(10_000, opts.requestTimeoutMs ?? 10_000) },
    });
    // undici's redirect interceptor drops Authorization when the origin changes.
    this.following = this.dispatcher.compose(interceptors.redirect({ maxRedirections: 5 }));
    this.retry = new RetryHandler(opts.retry);
    this.userAgent = opts.userAgent ?? 'obd/0.1.0';
    this.auth = new AuthHandler({ credentials: opts.credentials, dispatcher: this.dispatcher, userAgent: this.userAgent });
    this.operationDeadlineMs = opts.operationDeadlineMs ?? 30_000;
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcher.close();
  }

  /** GET /v2/ on the origin: checks reachability and credentials. */
  async ping(host: string, signal?: AbortSignal): Promise<void> {
    const ep = this.hosts.endpoint(host);
    await this.withRetry(ep, 'GET /v2/', signal, async (sig) => {
      const res = await this.send(ep, '', { method: 'GET', path: '/v2/', scope: '', signal: sig });
      if (res.statusCode !== 200) await this.fail(res, ep, 'GET /v2/');
      await res.body.dump();
    });
  }

  /** Resolves a reference to an image manifest; indexes are resolved for `platform`. */
  async getManifest(ref: Reference | string, opts: { platform?: Platform; signal?: AbortSignal } = {}): Promise<FetchedManifest> {
    const r = typeof ref === 'string' ? parseReference(ref) : ref;
    const first = await this.fetchManifestRaw(r.host, r.repo, r.digest ?? r.tag ?? 'latest', opts.signal);
    if (first.mediaType !== MediaTypes.ociIndex && first.mediaType !== MediaTypes.dockerList) {
      return { ...first, manifest: first.json as ImageManifest };
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
    return { mediaType: child.mediaType, digest: child.digest, body: child.body, manifest: child.json as ImageManifest,
      index: { digest: first.digest, mediaType: first.mediaType } };
  }

  private async fetchManifestRaw(host: string, repo: string, reference: string, signal?: AbortSignal) {
    const what = `manifest ${repo}:${reference}`;
    return this.pull(host, what, signal, async (ep, sig) => {
      const res = await this.send(ep, repo, {
        method: 'GET', path: `/v2/${repo}/manifests/${reference}`, scope: repositoryScope(repo, 'pull'),
        headers: { accept: manifestAccept }, signal: sig, followRedirects: true,
      });
      if (res.statusCode !== 200) await this.fail(res, ep, `GET ${what}`);
      const body = await readAll(res.body, 16 << 20, ep.host, what);
      const digest = sha256Digest(body);
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
      return { mediaType, digest, body, json };
    });
  }

  /** HEAD a blob: its size, or RegistryNotFoundError. */
  async headBlob(host: string, repo: string, digest: string, signal?: AbortSignal): Promise<{ size: number }> {
    checkDigest(digest, host);
    const what = `HEAD blob ${repo}@${digest}`;
    return this.pull(host, what, signal, async (ep, sig) => {
      const res = await this.send(ep, repo, { method: 'HEAD', path: `/v2/${repo}/blobs/${digest}`, scope: repositoryScope(repo, 'pull'),
        signal: sig, followRedirects: true });
      if (res.statusCode !== 200) await this.fail(res, ep, what);
      await res.body.dump();
      const size = Number(res.headers['content-length']);
      if (!Number.isSafeInteger(size) || size < 0) throw new RegistryProtocolError(`${ep.host}: ${what}: no Content-Length`, { registry: ep.host });
      return { size };
    });
  }

  /** Whole blob into memory, digest verified (configs, small blobs). */
  async getBlob(host: string, repo: string, digest: string, opts: { maxBytes?: number; signal?: AbortSignal } = {}): Promise<Buffer> {
    checkDigest(digest, host);
    const what = `GET blob ${repo}@${digest}`;
    return this.pull(host, what, opts.signal, async (ep, sig) => {
      const res = await this.send(ep, repo, { method: 'GET', path: `/v2/${repo}/blobs/${digest}`, scope: repositoryScope(repo, 'pull'),
        signal: sig, followRedirects: true });
      if (res.statusCode !== 200) await this.fail(res, ep, what);
      const body = await readAll(res.body, opts.maxBytes ?? 64 << 20, ep.host, what);
      if (sha256Digest(body) !== digest) throw new RegistryProtocolError(`${ep.host}: ${what}: content does not match digest`, { registry: ep.host });
      return body;
    });
  }

  /** A random-access reader of one blob (lazy data path). */
  blobReader(host: string, repo: string, digest: string, opts: RangeReaderOptions = {}): RangeReader {
    checkDigest(digest, host);
    return new RangeReader(this, host, repo, digest, opts);
  }

  /** Uploads a blob (monolithic, or chunked when chunkSize is set and smaller than the blob). */
  async uploadBlob(host: string, repo: string, data: Buffer, opts: { chunkSize?: number; signal?: AbortSignal } = {}): Promise<string> {
    const digest = sha256Digest(data);
    const chunk = opts.chunkSize && opts.chunkSize < data.length ? opts.chunkSize : 0;
    await this.upload(host, repo, digest, data.length, chunk, async (off, len) => data.subarray(off, off + len), opts.signal);
    return digest;
  }

  /**
   * Uploads a local file in chunks (default 16 MiB) with bounded memory: one pass to hash it,
   * one to send it; every chunk is retried on its own.
   */
  async uploadBlobFromFile(host: string, repo: string, file: string, opts: { chunkSize?: number; signal?: AbortSignal } = {}): Promise<{ digest: string; size: number }> {
    const fh = await fs.promises.open(file, 'r');
    try {
      const size = (await fh.stat()).size;
      const hash = crypto.createHash('sha256');
      for await (const c of fh.createReadStream({ autoClose: false, start: 0 })) hash.update(c as Buffer);
      const digest = 'sha256:' + hash.digest('hex');
      const chunk = Math.max(1, opts.chunkSize ?? 16 << 20);
      await this.upload(host, repo, digest, size, size > chunk ? chunk : 0, async (off, len) => {
        const buf = Buffer.allocUnsafe(len);
        const { bytesRead } = await fh.read(buf, 0, len, off);
        if (bytesRead !== len) throw new RegistryArgumentError(`${file}: changed while uploading`, { registry: host });
        return buf;
      }, opts.signal);
      return { digest, size };
    } finally {
      await fh.close();
    }
  }

  private async upload(host: string, repo: string, digest: string, size: number, chunk: number,
    read: (off: number, len: number) => Promise<Buffer>, signal?: AbortSignal): Promise<void> {
    const ep = this.hosts.endpoint(host);
    const scope = repositoryScope(repo, 'pull,push');
    const exists = await this.headBlob(host, repo, digest, signal).then(() => true, () => false);
    if (exists) return;
    let location = await this.startUpload(ep, repo, scope, signal);
    if (chunk) {
      for (let off = 0; off < size; off += chunk) {
        const part = await read(off, Math.min(chunk, size - off));
        const what = `PATCH upload ${repo} bytes ${off}-${off + part.length - 1}`;
        location = await this.withRetry(ep, what, signal, async (sig) => {
          const res = await this.send(ep, repo, { method: 'PATCH', path: location, scope, signal: sig, body: part, headers: {
            'content-type': 'application/octet-stream', 'content-range': `${off}-${off + part.length - 1}`, 'content-length': String(part.length) } });
          if (res.statusCode !== 202) await this.fail(res, ep, what);
          await res.body.dump();
          return String(res.headers.location ?? location);
        });
      }
    }
    const done = new URL(location, ep.origin);
    done.searchParams.set('digest', digest);
    const body = chunk ? Buffer.alloc(0) : await read(0, size);
    const what = `PUT blob ${repo}@${digest}`;
    await this.withRetry(ep, what, signal, async (sig) => {
      const res = await this.send(ep, repo, { method: 'PUT', path: done.pathname + done.search, scope, signal: sig, body,
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(body.length) } });
      if (res.statusCode !== 201) await this.fail(res, ep, what);
      await res.body.dump();
    });
  }

  /** Cross-repository mount; true if mounted, false if the registry refused (then upload instead). */
  async mountBlob(host: string, repo: string, digest: string, fromRepo: string, signal?: AbortSignal): Promise<boolean> {
    checkDigest(digest, host);
    const ep = this.hosts.endpoint(host);
    const scope = repositoryScope(repo, 'pull,push', `repository:${fromRepo}:pull`);
    const what = `mount ${digest} from ${fromRepo} into ${repo}`;
    return this.withRetry(ep, what, signal, async (sig) => {
      const res = await this.send(ep, repo, { method: 'POST', scope, signal: sig,
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
          const cancel = await this.send(ep, repo, { method: 'DELETE', path: String(loc), scope, signal: sig }).catch(() => undefined);
          await cancel?.body.dump();
        }
        return false;
      }
      return this.fail(res, ep, what);
    });
  }

  async putManifest(host: string, repo: string, reference: string, body: Buffer | object, mediaType?: string,
    signal?: AbortSignal): Promise<string> {
    const buf = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const mt = mediaType ?? (Buffer.isBuffer(body) ? undefined : (body as { mediaType?: string }).mediaType) ?? MediaTypes.ociManifest;
    const ep = this.hosts.endpoint(host);
    const what = `PUT manifest ${repo}:${reference}`;
    await this.withRetry(ep, what, signal, async (sig) => {
      const res = await this.send(ep, repo, { method: 'PUT', path: `/v2/${repo}/manifests/${reference}`, scope: repositoryScope(repo, 'pull,push'),
        signal: sig, body: buf, headers: { 'content-type': mt, 'content-length': String(buf.length) } });
      if (res.statusCode !== 201) await this.fail(res, ep, what);
      await res.body.dump();
    });
    return sha256Digest(buf);
  }

  private async startUpload(ep: Endpoint, repo: string, scope: string, signal?: AbortSignal): Promise<string> {
    const what = `POST upload ${repo}`;
    return this.withRetry(ep, what, signal, async (sig) => {
      const res = await this.send(ep, repo, { method: 'POST', path: `/v2/${repo}/blobs/uploads/`, scope, signal: sig,
        headers: { 'content-length': '0' } });
      if (res.statusCode !== 202) await this.fail(res, ep, what);
      await res.body.dump();
      const loc = res.headers.location;
      if (!loc) throw new RegistryProtocolError(`${ep.host}: ${what}: no Location`, { registry: ep.host });
      return String(loc);
    });
  }

  // ---- plumbing shared with RangeReader ----

  /** One request with authentication: on 401 it answers the challenge and sends once more. */
  async send(ep: Endpoint, repo: string, req: SendRequest): Promise<Dispatcher.ResponseData> {
    const url = new URL(req.path, ep.origin);
    if (url.origin !== ep.origin) throw new RegistryProtocolError(`${ep.host}: refusing to send credentials to ${url.origin}`, { registry: ep.host });
    let auth = await this.auth.headerFor(ep.origin, ep.host, repo, req.scope, req.signal);
    const dispatcher = req.followRedirects ? this.following : this.dispatcher;
    for (let round = 0; ; round++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
      if (auth) headers.authorization = auth;
      this.requests++;
      let res: Dispatcher.ResponseData;
      try {
        res = await dispatcher.request({ origin: ep.origin, path: url.pathname + url.search, method: req.method, headers,
          body: req.body, signal: req.signal });
      } catch (err) {
        throw wrapTransport(err, ep.host, `${req.method} ${url.pathname}`);
      }
      if (res.statusCode !== 401 || round === 1) return res;
      await res.body.dump().catch(() => undefined);
      auth = await this.auth.onUnauthorized(ep.origin, ep.host, repo, req.scope, headerString(res.headers['www-authenticate']), auth, req.signal);
    }
  }

  /** Consumes the body of an unexpected answer and throws the matching error. */
  async fail(res: Dispatcher.ResponseData, ep: Endpoint, what: string): Promise<never> {
    const text = await res.body.text().catch(() => '');
    const detail = registryErrorDetail(text);
    const s = res.statusCode;
    const msg = `${ep.host}: ${what}: ${s} ${statusText(s)}${detail ? ` (${detail})` : ''}`;
    const opts = { registry: ep.host, status: s, retryAfterMs: parseRetryAfter(res.headers['retry-after']) };
    if (s === 401 || s === 403) throw new RegistryAuthError(msg, opts);
    if (s === 404) throw new RegistryNotFoundError(msg, opts);
    throw new RegistryHttpError(msg, opts);
  }

  async withRetry<T>(ep: Endpoint, what: string, signal: AbortSignal | undefined, fn: (sig: AbortSignal) => Promise<T>): Promise<T> {
    return this.retry.run((sig) => fn(sig), { deadline: Date.now() + this.operationDeadlineMs, signal, registry: ep.host, what });
  }

  /** Runs fn on each pull endpoint (mirrors first); a mirror's failure moves on to the next one. */
  async pull<T>(host: string, what: string, signal: AbortSignal | undefined, fn: (ep: Endpoint, sig: AbortSignal) => Promise<T>): Promise<T> {
    const eps = this.hosts.pullEndpoints(host);
    let lastErr: unknown;
    for (const ep of eps) {
      try {
        return await this.withRetry(ep, what, signal, (sig) => fn(ep, sig));
      } catch (err) {
        lastErr = err;
        if (!ep.mirror || signal?.aborted) throw err;
      }
    }
    throw lastErr;
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

export async function readAll(body: Dispatcher.ResponseData['body'], maxBytes: number, host: string, what: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of body) {
      n += chunk.length;
      if (n > maxBytes) {
        body.destroy();
        throw new RegistryProtocolError(`${host}: ${what}: body larger than ${maxBytes} bytes`, { registry: host });
      }
      parts.push(chunk);
    }
  } catch (err) {
    if (err instanceof RegistryError) throw err;
    throw wrapTransport(err, host, what);
  }
  return Buffer.concat(parts, n);
}

export function wrapTransport(err: unknown, host: string, what: string): unknown {
  if (err instanceof RegistryError) return err;
  const e = err as Error & { code?: string; name?: string };
  if (e?.name === 'AbortError' || e?.name === 'TimeoutError' || e?.code === 'UND_ERR_ABORTED') return err;
  if (isTransportError(err)) return new RegistryNetworkError(`${host}: ${what}: ${e.code ?? ''} ${e.message}`.trim(), { registry: host, cause: err });
  return new RegistryNetworkError(`${host}: ${what}: ${e?.message ?? String(err)}`, { registry: host, cause: err });
}

function headerString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

function registryErrorDetail(text: string): string {
  try {
    const j = JSON.parse(text) as { errors?: { code?: string; message?: string }[] };
    return (j.errors ?? []).map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ').slice(0, 300);
  } catch {
    return text.slice(0, 200).trim();
  }
}

function statusText(s: number): string {
  const t: Record<number, string> = { 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
    416: 'Range Not Satisfiable', 429: 'Too Many Requests', 500: 'Internal Server Error', 502: 'Bad Gateway',
    503: 'Service Unavailable', 504: 'Gateway Timeout' };
  return t[s] ?? '';
}
