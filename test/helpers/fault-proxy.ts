// A fault-injecting HTTP proxy for registry tests, listening on 127.0.0.1. It forwards to a target
// (the private registry) and applies queued faults to matching requests: drop the connection,
// delay, answer with a status (500, 429 + Retry-After, 401 + challenge), truncate the body, send a
// wrong Content-Range, or redirect blob GETs to a second port (a fake object store that serves the
// same bytes and records whether it got an Authorization header; faults other than redirects apply
// there too).
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export type Fault =
  | { kind: 'drop' }
  | { kind: 'delay'; ms: number }
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  | { kind: 'truncate'; afterBytes: number }
  | { kind: 'wrong-content-range' }
  | { kind: 'redirect'; expiresInSec?: number };

export interface FaultRule {
  fault: Fault;
  remaining: number; // Infinity for always
  match: (req: http.IncomingMessage) => boolean;
}

export interface SeenRequest {
  server: 'proxy' | 'store';
  method: string;
  path: string;
  range?: string;
  authorization?: string;
  fault?: Fault['kind'];
}

export const isBlobGet = (req: http.IncomingMessage) => req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');

export class FaultProxy {
  private proxy?: http.Server;
  private store?: http.Server;
  private rules: FaultRule[] = [];
  private readonly timers = new Set<NodeJS.Timeout>();
  readonly seen: SeenRequest[] = [];
  private proxyPort = 0;
  private storePort = 0;

  constructor(private readonly target: { host: string; port: number }) {}

  /** A started proxy in front of the registry at `hostPort` (`127.0.0.1:5000`). */
  static async inFrontOf(hostPort: string): Promise<FaultProxy> {
    const [host, port] = hostPort.split(':');
    const proxy = new FaultProxy({ host, port: Number(port) });
    await proxy.start();
    return proxy;
  }

  get host(): string {
    return `127.0.0.1:${this.proxyPort}`;
  }
  get storeHost(): string {
    return `127.0.0.1:${this.storePort}`;
  }

  /** Applies `fault` to the next `count` requests matching `match` (default: blob GETs). */
  inject(fault: Fault, count = 1, match: (req: http.IncomingMessage) => boolean = isBlobGet): void {
    this.rules.push({ fault, remaining: count, match });
  }
  clear(): void {
    this.rules = [];
    this.seen.length = 0;
  }

  /** Connections to the proxy: open now, most at once, opened in total. */
  openConnections = 0;
  maxConnections = 0;
  totalConnections = 0;

  async start(): Promise<void> {
    this.proxy = await listen((req, res) => this.onProxy(req, res));
    this.proxy.on('connection', (sock) => {
      this.openConnections++;
      this.totalConnections++;
      this.maxConnections = Math.max(this.maxConnections, this.openConnections);
      sock.once('close', () => this.openConnections--);
    });
    this.proxyPort = (this.proxy.address() as AddressInfo).port;
    this.store = await listen((req, res) => this.onStore(req, res));
    this.storePort = (this.store.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const s of [this.proxy, this.store]) {
      if (!s) continue;
      s.closeAllConnections();
      await new Promise<void>((r) => s.close(() => r()));
    }
    this.proxy = this.store = undefined;
  }

  private take(req: http.IncomingMessage, server: 'proxy' | 'store'): Fault | undefined {
    const rule = this.rules.find((r) => r.remaining > 0 && r.match(req) && (server === 'proxy' || r.fault.kind !== 'redirect'));
    if (!rule) return undefined;
    rule.remaining--;
    return rule.fault;
  }

  private record(server: 'proxy' | 'store', req: http.IncomingMessage, fault?: Fault): void {
    this.seen.push({ server, method: req.method ?? '', path: req.url ?? '', range: req.headers.range as string | undefined,
      authorization: req.headers.authorization, fault: fault?.kind });
  }

  private async onProxy(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const fault = this.take(req, 'proxy');
    this.record('proxy', req, fault);
    switch (fault?.kind) {
      case 'drop':
        req.socket.destroy();
        return;
      case 'delay':
        await new Promise<void>((r) => {
          const t = setTimeout(() => {
            this.timers.delete(t);
            r();
          }, fault.ms);
          this.timers.add(t);
        });
        if (res.destroyed || req.socket.destroyed) return;
        break;
      case 'status':
        res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers });
        res.end(fault.body ?? JSON.stringify({ errors: [{ code: 'INJECTED', message: `injected ${fault.status}` }] }));
        return;
      case 'redirect': {
        const exp = Math.floor(Date.now() / 1000) + (fault.expiresInSec ?? 600);
        res.writeHead(307, { location: `http://${this.storeHost}/store${req.url}?Expires=${exp}`, 'content-length': '0' });
        res.end();
        return;
      }
    }
    this.forward(req, res, req.url ?? '/', fault, true);
  }

  /** The fake object store: serves /store/v2/... by fetching from the registry itself. */
  private onStore(req: http.IncomingMessage, res: http.ServerResponse): void {
    const fault = this.take(req, 'store');
    this.record('store', req, fault);
    const u = new URL(req.url ?? '/', 'http://x');
    if (!u.pathname.startsWith('/store/')) {
      res.writeHead(404);
      res.end();
      return;
    }
    const exp = Number(u.searchParams.get('Expires') ?? 0);
    if (exp && exp * 1000 < Date.now()) {
      res.writeHead(403);
      res.end('expired');
      return;
    }
    if (fault?.kind === 'status') {  // the store refuses (a signature it no longer accepts, say)
      res.writeHead(fault.status, { 'content-type': 'application/xml', ...fault.headers });
      res.end(fault.body ?? '<Error><Code>AccessDenied</Code></Error>');
      return;
    }
    // The store has its own access; it never needs (or gets) the client's registry credentials.
    const headers = { ...req.headers };
    delete headers.authorization;
    this.forward(req, res, u.pathname.slice('/store'.length), fault, false, this.storeAuth);
  }

  /** Authorization the fake store uses towards the registry (set by tests of auth'd registries). */
  storeAuth?: string;

  private forward(req: http.IncomingMessage, res: http.ServerResponse, path: string, fault: Fault | undefined, keepAuth: boolean,
    auth?: string): void {
    const headers = { ...req.headers };
    if (!keepAuth) delete headers.authorization;
    if (auth) headers.authorization = auth;
    const up = http.request({ host: this.target.host, port: this.target.port, method: req.method, path, headers }, (ur) => {
      const h = { ...ur.headers };
      if (fault?.kind === 'wrong-content-range' && h['content-range']) {
        const m = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(h['content-range']));
        if (m) h['content-range'] = `bytes ${Number(m[1]) + 1}-${Number(m[2]) + 1}/${m[3]}`;
      }
      res.writeHead(ur.statusCode ?? 502, h);
      if (fault?.kind === 'truncate') {
        let sent = 0;
        ur.on('data', (chunk: Buffer) => {
          const room = fault.afterBytes - sent;
          if (room > 0) res.write(chunk.subarray(0, room));
          sent += chunk.length;
          if (sent >= fault.afterBytes) {
            ur.destroy();
            res.socket?.destroy();
          }
        });
        ur.on('end', () => res.socket?.destroy());
        return;
      }
      ur.pipe(res);
    });
    up.on('error', () => res.socket?.destroy());
    req.pipe(up);
  }
}

function listen(handler: http.RequestListener): Promise<http.Server> {
  return new Promise((resolve, reject) => {
    const s = http.createServer(handler);
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  });
}
