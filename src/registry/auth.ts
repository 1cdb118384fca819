// Registry authentication: answers a `WWW-Authenticate` challenge with Basic credentials or a
// Bearer token (the distribution token flow: GET realm?service=…&scope=repository:REPO:ACTIONS,
// anonymous or with Basic credentials). Tokens are cached per (realm, service, scope, user) until
// shortly before they expire; a 401 on a request that carried a token drops it (refresh on 401).
import type { Dispatcher } from 'undici';
import { CredentialStore, type Credential } from './credentials';
import { RegistryAuthError, RegistryError, RegistryNetworkError } from './errors';

export interface Challenge {
  scheme: string; // lower-case: "basic" | "bearer"
  params: Record<string, string>;
}

/** Parses the first challenge of a WWW-Authenticate header. */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  if (!header) return undefined;
  const m = /^\s*([A-Za-z]+)\s*(.*)$/s.exec(header);
  if (!m) return undefined;
  const params: Record<string, string> = {};
  const re = /([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?\s*/gy;
  let p: RegExpExecArray | null;
  re.lastIndex = 0;
  const rest = m[2];
  while (re.lastIndex < rest.length && (p = re.exec(rest))) {
    params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
  }
  return { scheme: m[1].toLowerCase(), params };
}

interface CachedToken {
  token: string;
  expiresAt: number;
}

export interface AuthHandlerOptions {
  credentials?: CredentialStore;
  dispatcher: Dispatcher | (() => Dispatcher); // a function: made on first use (undici loads late)
  userAgent?: string;
  tokenTimeoutMs?: number;
}

export class AuthHandler {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();
  /** Challenge last seen per registry origin; lets later requests authenticate up front. */
  private readonly challenges = new Map<string, Challenge>();
  private readonly credentials: CredentialStore;
  tokenRequests = 0;

  constructor(private readonly opts: AuthHandlerOptions) {
    this.credentials = opts.credentials ?? new CredentialStore();
  }

  credentialFor(host: string, repo: string): Credential | undefined {
    return this.credentials.lookup(host, repo);
  }

  /** Authorization header for a request to origin/host on repo, from what is known already. */
  async headerFor(origin: string, host: string, repo: string, scope: string, signal?: AbortSignal): Promise<string | undefined> {
    const ch = this.challenges.get(origin);
    if (!ch) return undefined;
    return this.answer(ch, host, repo, scope, signal);
  }

  /**
   * Called on a 401: remembers the challenge, drops the token that was refused, and returns the
   * header to retry with (or throws RegistryAuthError if there is nothing better to send).
   */
  async onUnauthorized(origin: string, host: string, repo: string, scope: string, wwwAuthenticate: string | undefined,
    refusedHeader: string | undefined, signal?: AbortSignal): Promise<string> {
    const ch = parseChallenge(wwwAuthenticate);
    if (!ch || (ch.scheme !== 'basic' && ch.scheme !== 'bearer')) {
      throw new RegistryAuthError(`${host}: 401 Unauthorized with unsupported challenge "${wwwAuthenticate ?? ''}"`, { registry: host, status: 401 });
    }
    this.challenges.set(origin, ch);
    if (ch.scheme === 'bearer') this.tokens.delete(this.tokenKey(ch, host, repo, scope));
    const header = await this.answer(ch, host, repo, scope, signal);
    if (!header || header === refusedHeader) {
      const cred = this.credentialFor(host, repo);
      throw new RegistryAuthError(
        `${host}: 401 Unauthorized for ${repo || '/v2/'} (${cred ? `credentials of "${cred.username}" refused` : `no credentials configured: none for ${host}${repo ? `/${repo}` : ''} in ${this.credentials.source}`})`,
        { registry: host, status: 401 });
    }
    return header;
  }

  private async answer(ch: Challenge, host: string, repo: string, scope: string, signal?: AbortSignal): Promise<string | undefined> {
    const cred = await this.credentials.resolve(host, repo);
    if (ch.scheme === 'basic') return cred ? basicHeader(cred) : undefined;
    const key = this.tokenKey(ch, host, repo, scope);
    const cached = this.tokens.get(key);
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
    let p = this.pending.get(key);
    if (!p) {
      p = this.fetchToken(ch, host, repo, scope, cred, signal).finally(() => this.pending.delete(key));
      this.pending.set(key, p);
    }
    return `Bearer ${await p}`;
  }

  private tokenKey(ch: Challenge, host: string, repo: string, scope: string): string {
    const user = this.credentialFor(host, repo)?.username ?? '';
    return [ch.params.realm, ch.params.service, scopeOf(ch, scope), user].join('\n');
  }

  private async fetchToken(ch: Challenge, host: string, repo: string, scopeArg: string, cred: Credential | undefined,
    signal?: AbortSignal): Promise<string> {
    const realm = ch.params.realm;
    if (!realm) throw new RegistryAuthError(`${host}: Bearer challenge without realm`, { registry: host, status: 401 });
    const url = new URL(realm);
    if (ch.params.service) url.searchParams.set('service', ch.params.service);
    const scope = scopeOf(ch, scopeArg);
    if (scope) url.searchParams.set('scope', scope);
    const headers: Record<string, string> = { 'user-agent': this.opts.userAgent ?? 'obd' };
    // Credentials never travel in clear to a token realm on the network (a registry could name any
    // http URL as its realm); a loopback realm stays on this host.
    if (cred && url.protocol !== 'https:' && !isLoopbackHost(url.hostname))
      throw new RegistryAuthError(`${host}: refusing to send the credentials of "${cred.username}" to the plain-http token realm ${url.origin} (it must be https)`, {
        registry: host,
        status: 401,
      });
    if (cred) headers.authorization = basicHeader(cred);
    this.tokenRequests++;
    const timeout = AbortSignal.timeout(this.opts.tokenTimeoutMs ?? 30_000);
    let res: Dispatcher.ResponseData;
    try {
      const d = this.opts.dispatcher;
      res = await (typeof d === 'function' ? d() : d).request({
        origin: url.origin, path: url.pathname + url.search, method: 'GET', headers,
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
      });
    } catch (err) {
      throw new RegistryNetworkError(`${host}: token server ${url.origin}: ${(err as Error).message}`, { registry: host, cause: err });
    }
    const text = await res.body.text();
    if (res.statusCode !== 200) {
      const who = cred ? `credentials of "${cred.username}"` : 'anonymous';
      const Cls = res.statusCode === 401 || res.statusCode === 403 ? RegistryAuthError : RegistryError;
      throw new Cls(`${host}: token server ${url.origin} answered ${res.statusCode} for scope "${scope}" (${who})`,
        { registry: host, status: res.statusCode });
    }
    let body: { token?: string; access_token?: string; expires_in?: number; issued_at?: string };
    try {
      body = JSON.parse(text);
    } catch {
      throw new RegistryAuthError(`${host}: token server ${url.origin} returned invalid JSON`, { registry: host, status: 200 });
    }
    const token = body.token ?? body.access_token;
    if (!token) throw new RegistryAuthError(`${host}: token server response has no token`, { registry: host, status: 200 });
    // The spec's default lifetime is 60 s; refresh a little early so a token never expires in flight.
    const lifetime = Math.max(10, body.expires_in ?? 60);
    const key = this.tokenKey(ch, host, repo, scopeArg);
    this.tokens.set(key, { token, expiresAt: Date.now() + (lifetime - Math.min(30, lifetime / 4)) * 1000 });
    return token;
  }
}

/** The scope we ask for, else the one the challenge names (e.g. for the /v2/ ping). */
function scopeOf(ch: Challenge, scope: string): string {
  return scope || ch.params.scope || '';
}

/** "repository:REPO:ACTIONS" (+ more, space-separated, e.g. for a cross-repository mount). */
export function repositoryScope(repo: string, actions: string, ...more: string[]): string {
  return [repo ? `repository:${repo}:${actions}` : '', ...more].filter(Boolean).join(' ');
}

export function basicHeader(cred: Credential): string {
  return 'Basic ' + Buffer.from(`${cred.username}:${cred.password}`).toString('base64');
}

function isLoopbackHost(hostname: string): boolean {
  return /^(127\.\d+\.\d+\.\d+|localhost|\[::1\]|::1)$/.test(hostname);
}
