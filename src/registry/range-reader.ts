// Random-access reads of one blob with HTTP Range requests — the lazy data path. Each read is one
// operation with its own deadline (retries with backoff inside it). Blob redirects (object stores)
// are resolved by hand rather than with undici's redirect interceptor because the target URL is
// worth keeping: later reads go straight to it, without Authorization, until it expires; a refusal
// from it (403/404/410) drops it and the next attempt asks the registry again.
import type { Dispatcher } from 'undici';
import type { BlobRoute } from '../addon';
import { repositoryScope } from './auth';
import { RegistryError, RegistryProtocolError, RegistrySizeMismatchError } from './errors';
import type { Endpoint } from './hosts';
import { redirectTarget, wrapTransport, type RegistryTransport } from './transport';

export interface RangeReaderOptions {
  size?: number;             // known blob size (labels/manifest); else probed with bytes=0-0
  readDeadlineMs?: number;   // per read() including retries; default: client's operationDeadlineMs
  redirectTtlMs?: number;    // reuse of a redirect without an expiry in its URL, default 300 s
  /** every body byte as it arrives, also of bodies that are retried or cut short (honest accounting) */
  onBytes?: (n: number) => void;
  /** every failed attempt that is retried (metrics: registry errors by kind, also when a retry succeeds) */
  onRetriedError?: (err: unknown) => void;
}

interface Location {
  url: URL;
  expiresAt: number;
}

export interface RangeReaderStats {
  reads: number;
  requests: number;
  bytes: number;     // bytes of complete answers
  received: number;  // every body byte received, including retried and cut-short bodies
  redirects: number;
}

export class RangeReader {
  private location?: Location;
  private endpointIndex = 0;
  private readonly endpoints: Endpoint[];
  private knownSize?: number;
  readonly stats: RangeReaderStats = { reads: 0, requests: 0, bytes: 0, received: 0, redirects: 0 };

  constructor(private readonly transport: RegistryTransport, readonly host: string, readonly repo: string, readonly digest: string,
    private readonly opts: RangeReaderOptions = {}) {
    this.endpoints = transport.hosts.pullEndpoints(host);
    this.knownSize = opts.size;
  }

  get registry(): string {
    return this.endpoints[this.endpointIndex].host;
  }

  /** Whether reads go to a redirect target (an object store) rather than to the registry itself. */
  get redirected(): boolean {
    return this.liveLocation() !== undefined;
  }

  /** The redirect target reads go to, while it has not expired. */
  private liveLocation(): Location | undefined {
    return this.location && this.location.expiresAt > Date.now() ? this.location : undefined;
  }

  async size(signal?: AbortSignal): Promise<number> {
    if (this.knownSize === undefined) {
      const r = await this.run(0, 1, signal, true);
      this.knownSize = r.total;
    }
    return this.knownSize!;
  }

  /** Exactly `length` bytes at `offset` (clamped to the blob's end). */
  async read(offset: number, length: number, signal?: AbortSignal): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new RangeError(`${this.digest}: bad range ${offset}+${length}`);
    }
    const size = await this.size(signal);
    const n = Math.max(0, Math.min(length, size - offset));
    if (n === 0) return Buffer.alloc(0);
    this.stats.reads++;
    return (await this.run(offset, n, signal, false)).data;
  }

  private async run(offset: number, length: number, signal: AbortSignal | undefined, probe: boolean) {
    const what = `GET blob ${this.repo}@${this.digest} bytes ${offset}-${offset + length - 1}`;
    const deadline = Date.now() + (this.opts.readDeadlineMs ?? this.transport.operationDeadlineMs);
    return this.transport.retry.run((sig) => this.attempt(offset, length, sig, probe, what), {
      deadline, signal, registry: this.host, what,
      onRetry: (err) => {
        this.opts.onRetriedError?.(err);
        if (err instanceof RegistryError && err.status !== undefined && err.status !== 429 && err.status < 500) this.location = undefined;
        if (err instanceof RegistryProtocolError) this.location = undefined;
      },
    });
  }

  private async attempt(offset: number, length: number, signal: AbortSignal, probe: boolean, what: string) {
    for (;;) {
      const ep = this.endpoints[this.endpointIndex];
      try {
        const res = await this.request(ep, offset, length, signal);
        return await this.take(res, ep, offset, length, probe, what);
      } catch (err) {
        // A mirror that fails is left for the rest of this reader's life; the origin gets retries.
        if (!ep.mirror || signal.aborted) throw err;
        this.endpointIndex++;
        this.location = undefined;
      }
    }
  }

  private async request(ep: Endpoint, offset: number, length: number, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    const range = `bytes=${offset}-${offset + length - 1}`;
    const loc = this.liveLocation();
    if (loc) return this.requestLocation(loc.url, ep, range, signal);
    this.location = undefined;
    this.stats.requests++;
    const res = await this.transport.send(ep, this.repo, { method: 'GET', path: `/v2/${this.repo}/blobs/${this.digest}`,
      scope: repositoryScope(this.repo, 'pull'), headers: { range }, signal });
    if (res.statusCode < 300 || res.statusCode >= 400 || !res.headers.location) return res;
    await res.body.dump().catch(() => undefined);
    const url = redirectTarget(new URL(ep.origin), String(res.headers.location), ep.host);
    this.location = { url, expiresAt: redirectExpiry(url, this.opts.redirectTtlMs ?? 300_000) };
    this.stats.redirects++;
    return this.requestLocation(url, ep, range, signal);
  }

  private async requestLocation(url: URL, ep: Endpoint, range: string, signal: AbortSignal): Promise<Dispatcher.ResponseData> {
    this.stats.requests++;
    // Same origin as the registry: it is the registry's own URL, so it keeps our credentials.
    if (url.origin === ep.origin) {
      return this.transport.send(ep, this.repo, { method: 'GET', path: url.pathname + url.search, scope: repositoryScope(this.repo, 'pull'),
        headers: { range }, signal });
    }
    return this.transport.getForeign(url, { range }, signal, `GET redirected blob ${this.digest}`);
  }

  /**
   * Where the next read of this blob would go and what it would send, for a native fetcher to
   * read from directly: a redirect target (object store) without credentials, or the registry's
   * URL with the Authorization header now in use. Known once a read has succeeded; the caller drops
   * it on any failure and comes back here.
   */
  async route(signal?: AbortSignal): Promise<BlobRoute | undefined> {
    if (this.knownSize === undefined) return undefined;
    const ep = this.endpoints[this.endpointIndex];
    const loc = this.liveLocation();
    const url = loc?.url ?? new URL(`/v2/${this.repo}/blobs/${this.digest}`, ep.origin);
    const headers = [`User-Agent: ${this.transport.userAgent}`];
    if (url.origin === ep.origin) {
      const auth = await this.transport.auth.headerFor(ep.origin, ep.host, this.repo, repositoryScope(this.repo, 'pull'), signal);
      if (auth) headers.push(`Authorization: ${auth}`);
    }
    return { url: url.href, headers, size: this.knownSize, expiresInMs: loc ? Math.max(1, loc.expiresAt - Date.now()) : undefined };
  }

  private received(n: number): void {
    this.stats.received += n;
    this.opts.onBytes?.(n);
  }

  private async take(res: Dispatcher.ResponseData, ep: Endpoint, offset: number, length: number, probe: boolean, what: string) {
    const host = ep.host;
    if (res.statusCode === 200) {
      const cl = Number(res.headers['content-length']);
      if (offset !== 0 || !(cl === length || probe)) {
        discard(res.body);
        throw new RegistryProtocolError(`${host}: ${what}: server ignored Range (200 with ${res.headers['content-length'] ?? '?'} bytes)`, { registry: host, status: 200 });
      }
      if (probe) {
        discard(res.body);
        if (!Number.isSafeInteger(cl)) throw new RegistryProtocolError(`${host}: ${what}: no size in answer`, { registry: host, status: 200 });
        return { data: Buffer.alloc(0), total: cl };
      }
      const data = await readExactly(res.body, length, host, what, (n) => this.received(n));
      this.stats.bytes += data.length;
      return { data, total: cl };
    }
    if (res.statusCode !== 206) {
      if (this.location && res.statusCode !== 429 && res.statusCode < 500) {
        this.location = undefined; // the redirect target refused: resolve again next attempt
        await res.body.dump().catch(() => undefined);
        throw new RegistryProtocolError(`${host}: ${what}: redirect target answered ${res.statusCode}`, { registry: host, status: res.statusCode });
      }
      return this.transport.fail(res, ep, what);
    }
    const cr = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
    if (!cr || Number(cr[1]) !== offset || Number(cr[2]) !== offset + length - 1) {
      discard(res.body);
      throw new RegistryProtocolError(`${host}: ${what}: wrong Content-Range "${res.headers['content-range'] ?? ''}"`, { registry: host, status: 206 });
    }
    const total = cr[3] === '*' ? undefined : Number(cr[3]);
    if (total !== undefined && this.knownSize !== undefined && total !== this.knownSize) {
      discard(res.body);
      throw new RegistrySizeMismatchError(`${host}: ${what}: blob size is ${total}, expected ${this.knownSize}`, { registry: host, status: 206 });
    }
    const data = await readExactly(res.body, length, host, what, (n) => this.received(n));
    this.stats.bytes += data.length;
    return { data, total: total ?? this.knownSize ?? offset + length };
  }
}

/** Drops a body we will not read (an error event on it must not become an uncaught error). */
function discard(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => undefined);
  body.destroy();
}

/** Reads exactly n bytes; fewer (truncated) or more is a protocol error, which is retried. */
async function readExactly(body: Dispatcher.ResponseData['body'], n: number, host: string, what: string,
  onBytes: (n: number) => void): Promise<Buffer> {
  const out = Buffer.allocUnsafe(n);
  let got = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      onBytes(chunk.length);
      if (got + chunk.length > n) {
        body.destroy();
        throw new RegistryProtocolError(`${host}: ${what}: more bytes than requested`, { registry: host });
      }
      chunk.copy(out, got);
      got += chunk.length;
    }
  } catch (err) {
    if (err instanceof RegistryError) throw err;
    throw wrapTransport(err, host, `${what} (after ${got} of ${n} bytes)`);
  }
  if (got !== n) throw new RegistryProtocolError(`${host}: ${what}: truncated body (${got} of ${n} bytes)`, { registry: host });
  return out;
}

/** When a presigned URL stops working: X-Amz-Date+X-Amz-Expires, Expires (epoch s), se (ISO). */
export function redirectExpiry(url: URL, fallbackMs: number, now = Date.now()): number {
  const q = url.searchParams;
  const margin = 30_000;
  let at: number | undefined;
  const amzDate = q.get('X-Amz-Date');
  const amzExp = q.get('X-Amz-Expires');
  if (amzDate && amzExp) {
    const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(amzDate);
    if (m) at = Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) + Number(amzExp) * 1000;
  } else if (q.get('Expires') && /^\d+$/.test(q.get('Expires')!)) {
    at = Number(q.get('Expires')) * 1000;
  } else if (q.get('se')) {
    const t = Date.parse(q.get('se')!);
    if (!Number.isNaN(t)) at = t;
  }
  if (at === undefined) return now + fallbackMs;
  return Math.min(now + fallbackMs, at - margin);
}
