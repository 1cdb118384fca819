// A small Bearer token server for the private registry (distribution's "token" auth): it signs
// RS256 JWTs whose x5c header carries a self-signed certificate; the registry trusts that
// certificate through `rootcertbundle`. Users and their rights are plain options, so tests can
// model anonymous pull, per-repository scopes, short-lived tokens and wrong passwords.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import type { AddressInfo } from 'node:net';

export interface TokenServerOptions {
  service?: string;               // the registry's service name (aud claim)
  issuer?: string;
  users?: Record<string, string>; // username → password; these get pull+push on every repository
  anonymousPull?: boolean;        // requests without credentials get pull rights
  tokenTtlSeconds?: number;       // `exp` of issued tokens (default 300)
}

export class TokenServer {
  readonly service: string;
  readonly issuer: string;
  readonly dir: string;
  readonly certPath: string;
  private readonly keyPem: string;
  private readonly certDerB64: string;
  private server?: http.Server;
  private port = 0;
  /** Every request seen: which user (or '' for anonymous) and which scopes. */
  readonly requests: { user: string; scopes: string[]; status: number }[] = [];

  constructor(private readonly opts: TokenServerOptions = {}) {
    this.service = opts.service ?? 'obd-test-registry';
    this.issuer = opts.issuer ?? 'obd-test-token-issuer';
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-token-'));
    const keyPath = path.join(this.dir, 'key.pem');
    this.certPath = path.join(this.dir, 'cert.pem');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', this.certPath,
      '-days', '2', '-subj', '/CN=obd-test-token'], { stdio: 'ignore' });
    this.keyPem = fs.readFileSync(keyPath, 'utf8');
    this.certDerB64 = new crypto.X509Certificate(fs.readFileSync(this.certPath)).raw.toString('base64');
  }

  get realm(): string {
    if (!this.server) throw new Error('token server not started');
    return `http://127.0.0.1:${this.port}/token`;
  }

  async start(): Promise<void> {
    const server = http.createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.port = (server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** A token for `scopes`, as the server would issue it to `user` ('' = anonymous). */
  issue(user: string, scopes: string[]): string {
    const access = scopes.flatMap((s) => {
      const [type, name, actions] = splitScope(s);
      if (!type || !name) return [];
      const allowed = user ? ['pull', 'push', '*'] : this.opts.anonymousPull ? ['pull'] : [];
      const granted = (actions ?? '').split(',').filter((a) => allowed.includes(a));
      return [{ type, name, actions: granted }];
    });
    const now = Math.floor(Date.now() / 1000);
    const header = { typ: 'JWT', alg: 'RS256', x5c: [this.certDerB64] };
    const claims = {
      iss: this.issuer, sub: user, aud: this.service, exp: now + (this.opts.tokenTtlSeconds ?? 300),
      nbf: now - 10, iat: now, jti: crypto.randomUUID(), access,
    };
    const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const input = `${b64(header)}.${b64(claims)}`;
    const sig = crypto.sign('RSA-SHA256', Buffer.from(input), this.keyPem).toString('base64url');
    return `${input}.${sig}`;
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://x');
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    let user = '';
    const auth = req.headers.authorization;
    if (auth?.startsWith('Basic ')) {
      const [u, ...rest] = Buffer.from(auth.slice(6), 'base64').toString().split(':');
      if (this.opts.users?.[u] === undefined || this.opts.users[u] !== rest.join(':')) {
        this.requests.push({ user: u, scopes, status: 401 });
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
        return;
      }
      user = u;
    } else if (!this.opts.anonymousPull) {
      this.requests.push({ user: '', scopes, status: 401 });
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'credentials required' }] }));
      return;
    }
    if (url.pathname !== '/token' || url.searchParams.get('service') !== this.service) {
      this.requests.push({ user, scopes, status: 400 });
      res.writeHead(400);
      res.end('bad token request');
      return;
    }
    const token = this.issue(user, scopes);
    this.requests.push({ user, scopes, status: 200 });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, access_token: token, expires_in: this.opts.tokenTtlSeconds ?? 300,
      issued_at: new Date().toISOString() }));
  }
}

function splitScope(s: string): [string?, string?, string?] {
  // repository:name/with/slashes:pull,push — the name may contain ':' only in a registry host part
  const first = s.indexOf(':');
  const last = s.lastIndexOf(':');
  if (first < 0 || last === first) return [];
  return [s.slice(0, first), s.slice(first + 1, last), s.slice(last + 1)];
}
