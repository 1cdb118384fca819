// How requests reach a registry, shared by RegistryClient and RangeReader: one undici Agent (a pool
// per origin with a connection limit and keep-alive, header/body timeouts), authentication with
// one answered challenge per request, retries within an operation deadline, mirrors tried in order
// before the origin (hosts.ts), and answers that are not the expected status turned into errors.
import type { Dispatcher } from 'undici';
import { AuthHandler } from './auth';
import type { CredentialStore } from './credentials';
import {
  RegistryAuthError, RegistryError, RegistryHttpError, RegistryNetworkError, RegistryNotFoundError, RegistryProtocolError,
  isTransportError,
} from './errors';
import { Hosts, type Endpoint, type HostsOptions } from './hosts';
import { RetryHandler, parseRetryAfter, type RetryOptions } from './retry';

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

export interface SendRequest {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  path: string; // path + query on ep.origin, or an absolute URL on the same origin
  scope: string;
  headers?: Record<string, string>;
  body?: Buffer;
  signal?: AbortSignal;
  followRedirects?: boolean;
}

export class RegistryTransport {
  readonly hosts: Hosts;
  readonly auth: AuthHandler;
  readonly retry: RetryHandler;
  readonly operationDeadlineMs: number;
  private dispatcherValue?: Dispatcher;
  private readonly ownsDispatcher: boolean;
  private readonly opts: RegistryClientOptions;
  readonly userAgent: string;

  constructor(opts: RegistryClientOptions) {
    this.hosts = new Hosts(opts);
    this.opts = opts;
    this.ownsDispatcher = !opts.dispatcher;
    this.dispatcherValue = opts.dispatcher;
    this.retry = new RetryHandler(opts.retry);
    this.userAgent = opts.userAgent ?? 'obd/0.1.0';
    this.auth = new AuthHandler({ credentials: opts.credentials, dispatcher: () => this.dispatcher, userAgent: this.userAgent });
    this.operationDeadlineMs = opts.operationDeadlineMs ?? 30_000;
  }

  /**
   * The undici Agent, made on the first request: loading undici costs a few hundred ms, which a
   * restarted deviced would otherwise spend before taking its devices over.
   */
  private get dispatcher(): Dispatcher {
    if (!this.dispatcherValue) {
      const { Agent } = require('undici') as typeof import('undici');
      const o = this.opts;
      this.dispatcherValue = new Agent({
        connections: o.connectionsPerHost ?? 8,
        keepAliveTimeout: o.keepAliveTimeoutMs ?? 30_000,
        headersTimeout: o.requestTimeoutMs ?? 30_000,
        bodyTimeout: o.requestTimeoutMs ?? 30_000,
        connect: { timeout: Math.min(10_000, o.requestTimeoutMs ?? 10_000) },
      });
    }
    return this.dispatcherValue;
  }

  async close(): Promise<void> {
    if (this.ownsDispatcher) await this.dispatcherValue?.close();
  }

  /**
   * One request with authentication: on 401 it answers the challenge and sends once more. With
   * followRedirects, up to 5 redirects are followed: on the registry's origin with credentials,
   * elsewhere without; never from https to http.
   */
  async send(ep: Endpoint, repo: string, req: SendRequest): Promise<Dispatcher.ResponseData> {
    let res = await this.sendOnce(ep, repo, req);
    if (!req.followRedirects) return res;
    let from = new URL(req.path, ep.origin);
    for (let hop = 0; res.statusCode >= 300 && res.statusCode < 400 && res.headers.location; hop++) {
      await res.body.dump().catch(() => undefined);
      if (hop >= 5) throw new RegistryProtocolError(`${ep.host}: ${req.method} ${req.path}: more than 5 redirects`, { registry: ep.host });
      const to = redirectTarget(from, String(res.headers.location), ep.host);
      res = to.origin === ep.origin
        ? await this.sendOnce(ep, repo, { ...req, path: to.pathname + to.search })
        : await this.getForeign(to, req.headers ?? {}, req.signal ?? AbortSignal.timeout(this.operationDeadlineMs), `${req.method} ${to.pathname}`, req.method === 'HEAD' ? 'HEAD' : 'GET');
      from = to;
    }
    return res;
  }

  private async sendOnce(ep: Endpoint, repo: string, req: SendRequest): Promise<Dispatcher.ResponseData> {
    const url = new URL(req.path, ep.origin);
    if (url.origin !== ep.origin) throw new RegistryProtocolError(`${ep.host}: refusing to send credentials to ${url.origin}`, { registry: ep.host });
    let auth = await this.auth.headerFor(ep.origin, ep.host, repo, req.scope, req.signal);
    const dispatcher = this.dispatcher;
    for (let round = 0; ; round++) {
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...req.headers };
      if (auth) headers.authorization = auth;
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

  /** A GET to a URL off the registry (a blob redirect to an object store): no credentials go there. */
  async getForeign(url: URL, headers: Record<string, string>, signal: AbortSignal, what: string, method: 'GET' | 'HEAD' = 'GET'): Promise<Dispatcher.ResponseData> {
    try {
      return await this.dispatcher.request({ origin: url.origin, path: url.pathname + url.search, method,
        headers: { ...headers, 'user-agent': this.userAgent }, signal });
    } catch (err) {
      throw wrapTransport(err, url.host, what);
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

  /** fn retried with backoff until it succeeds, fails for good, or the operation deadline passes. */
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

/** Where a redirect goes; refused when it leaves https for http (a downgrade an attacker on the path could cause). */
export function redirectTarget(from: URL, location: string, registry: string): URL {
  const to = new URL(location, from);
  if (from.protocol === 'https:' && to.protocol !== 'https:')
    throw new RegistryProtocolError(`${registry}: refusing a redirect from https to ${to.protocol.replace(':', '')} (${to.origin})`, { registry });
  return to;
}
