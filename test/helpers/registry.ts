// A private docker-registry (Debian's distribution v2, /usr/bin/docker-registry) for tests: listens
// on 127.0.0.1 with a free port, keeps its storage in its own temp dir, optionally with htpasswd
// Basic auth or Bearer token auth (see token-server.ts). One owner: start() → stop(); stop() kills
// the process (TERM, then KILL) and removes the temp dir, and it also runs at process exit.
//
//   const reg = new TestRegistry({ basic: { users: { alice: 'pw' } } });
//   await reg.start();            // reg.host === '127.0.0.1:PORT'
//   const d = await reg.pushBlob('lib/x', buf);
//   await reg.stop();
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { TokenServer } from './token-server';
import { killedAtExit } from './live';

export interface TestRegistryOptions {
  /** htpasswd Basic auth with these users (bcrypt via `htpasswd -Bbn`). */
  basic?: { users: Record<string, string>; realm?: string };
  /** Bearer token auth; the token server must be started first. `user`/`password` are what the
   *  helper itself uses for pushBlob/pushManifest (must be a user of the token server). */
  token?: { server: TokenServer; user: string; password: string };
  /** Forwarded verbatim into the registry's env (e.g. REGISTRY_STORAGE_DELETE_ENABLED). */
  env?: Record<string, string>;
}

export interface PushedManifest {
  digest: string;
  size: number;
  mediaType: string;
}

const live = killedAtExit<TestRegistry>();

export class TestRegistry {
  readonly dir: string;
  private proc?: ChildProcess;
  private port = 0;
  private logFd = -1;

  constructor(private readonly opts: TestRegistryOptions = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-registry-'));
  }

  /** "127.0.0.1:PORT" */
  get host(): string {
    if (!this.port) throw new Error('registry not started');
    return `127.0.0.1:${this.port}`;
  }
  get url(): string {
    return `http://${this.host}`;
  }
  get logPath(): string {
    return path.join(this.dir, 'registry.log');
  }
  /** Credentials the helper uses itself (Basic: first user). */
  get credentials(): { username: string; password: string } | undefined {
    if (this.opts.basic) {
      const [username, password] = Object.entries(this.opts.basic.users)[0];
      return { username, password };
    }
    if (this.opts.token) return { username: this.opts.token.user, password: this.opts.token.password };
    return undefined;
  }

  async start(): Promise<void> {
    if (this.proc) throw new Error('registry already started');
    let lastErr: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      this.port = await freePort();
      try {
        await this.spawnOnce();
        live.add(this);
        return;
      } catch (err) {
        lastErr = err;
        await this.killProc();
      }
    }
    throw new Error(`docker-registry did not start: ${String(lastErr)}; log:\n${this.tailLog()}`);
  }

  async stop(): Promise<void> {
    live.delete(this);
    await this.killProc();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Synchronous last-resort cleanup (process exit). */
  killNow(): void {
    try {
      this.proc?.kill('SIGKILL');
    } catch {
      /* already gone */
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  /** Authorization header value for pushes/pulls on `repo` by the helper itself. */
  async authHeader(repo: string): Promise<string | undefined> {
    const cred = this.credentials;
    if (!cred) return undefined;
    const basic = 'Basic ' + Buffer.from(`${cred.username}:${cred.password}`).toString('base64');
    if (this.opts.basic) return basic;
    const ts = this.opts.token!.server;
    const u = `${ts.realm}?service=${encodeURIComponent(ts.service)}&scope=${encodeURIComponent(`repository:${repo}:pull,push`)}`;
    const r = await fetch(u, { headers: { authorization: basic } });
    if (!r.ok) throw new Error(`token server: ${r.status}`);
    const j = (await r.json()) as { token: string };
    return `Bearer ${j.token}`;
  }

  /** Monolithic upload; returns the digest ("sha256:…"). Idempotent. */
  async pushBlob(repo: string, data: Uint8Array): Promise<string> {
    const digest = 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
    const headers = await this.headers(repo);
    const start = await fetch(`${this.url}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers });
    await start.arrayBuffer();
    if (start.status !== 202) throw new Error(`pushBlob ${repo}: POST uploads → ${start.status}`);
    const loc = new URL(start.headers.get('location')!, this.url);
    loc.searchParams.set('digest', digest);
    const put = await fetch(loc, {
      method: 'PUT',
      headers: { ...headers, 'content-type': 'application/octet-stream' },
      body: data,
    });
    await put.arrayBuffer();
    if (put.status !== 201) throw new Error(`pushBlob ${repo}: PUT → ${put.status}`);
    return digest;
  }

  /** PUT a manifest (object or raw bytes) under `reference` (tag or digest). */
  async pushManifest(repo: string, reference: string, manifest: object | Uint8Array, mediaType?: string): Promise<PushedManifest> {
    const body = manifest instanceof Uint8Array ? Buffer.from(manifest) : Buffer.from(JSON.stringify(manifest));
    const mt = mediaType ?? (manifest as { mediaType?: string }).mediaType ?? 'application/vnd.oci.image.manifest.v1+json';
    const headers = await this.headers(repo);
    const r = await fetch(`${this.url}/v2/${repo}/manifests/${reference}`, {
      method: 'PUT', headers: { ...headers, 'content-type': mt }, body,
    });
    const text = await r.text();
    if (r.status !== 201) throw new Error(`pushManifest ${repo}:${reference} → ${r.status} ${text}`);
    return { digest: 'sha256:' + crypto.createHash('sha256').update(body).digest('hex'), size: body.length, mediaType: mt };
  }

  /** Pushes `layers` plus an empty config and a manifest tagged `tag`; returns the manifest. */
  async pushImage(repo: string, tag: string, layers: { data: Uint8Array; mediaType?: string; annotations?: Record<string, string> }[],
    platform = { architecture: 'amd64', os: 'linux' }): Promise<PushedManifest & { layers: string[] }> {
    const cfg = Buffer.from(JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: [] } }));
    const cfgDigest = await this.pushBlob(repo, cfg);
    const layerDescs = [];
    for (const l of layers) {
      const digest = await this.pushBlob(repo, l.data);
      layerDescs.push({ mediaType: l.mediaType ?? 'application/vnd.oci.image.layer.v1.tar', digest, size: l.data.byteLength,
        ...(l.annotations ? { annotations: l.annotations } : {}) });
    }
    const m = {
      schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfgDigest, size: cfg.length },
      layers: layerDescs,
    };
    const pushed = await this.pushManifest(repo, tag, m);
    return { ...pushed, layers: layerDescs.map((d) => d.digest) };
  }

  private async headers(repo: string): Promise<Record<string, string>> {
    const a = await this.authHeader(repo);
    return a ? { authorization: a } : {};
  }

  private writeConfig(): string {
    const lines = [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${path.join(this.dir, 'data')}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: 127.0.0.1:${this.port}`,
      `  secret: ${crypto.randomBytes(16).toString('hex')}`,
      'health:',
      '  storagedriver:',
      '    enabled: false',
    ];
    if (this.opts.basic) {
      const file = path.join(this.dir, 'htpasswd');
      const entries = Object.entries(this.opts.basic.users).map(([u, p]) =>
        execFileSync('htpasswd', ['-Bbn', u, p], { encoding: 'utf8' }).trim());
      fs.writeFileSync(file, entries.join('\n') + '\n');
      lines.push('auth:', '  htpasswd:', `    realm: ${this.opts.basic.realm ?? 'obd-test'}`, `    path: ${file}`);
    } else if (this.opts.token) {
      const ts = this.opts.token.server;
      lines.push('auth:', '  token:', `    realm: ${ts.realm}`, `    service: ${ts.service}`, `    issuer: ${ts.issuer}`,
        `    rootcertbundle: ${ts.certPath}`);
    }
    const file = path.join(this.dir, 'config.yml');
    fs.writeFileSync(file, lines.join('\n') + '\n');
    return file;
  }

  private async spawnOnce(): Promise<void> {
    const cfg = this.writeConfig();
    if (this.logFd >= 0) fs.closeSync(this.logFd);
    this.logFd = fs.openSync(this.logPath, 'a');
    const proc = spawn('/usr/bin/docker-registry', ['serve', cfg], {
      stdio: ['ignore', this.logFd, this.logFd],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...(this.opts.env ?? {}) },
    });
    this.proc = proc;
    let exited = false;
    proc.once('exit', () => {
      exited = true;
    });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (exited) throw new Error(`exited with ${proc.exitCode}`);
      const ok = await fetch(`http://127.0.0.1:${this.port}/v2/`, { signal: AbortSignal.timeout(1000) })
        .then(async (r) => {
          await r.arrayBuffer();
          return r.status === 200 || r.status === 401;
        })
        .catch(() => false);
      if (ok) return;
      await sleep(50);
    }
    throw new Error('not answering /v2/ within 10 s');
  }

  private async killProc(): Promise<void> {
    const p = this.proc;
    this.proc = undefined;
    if (p && p.exitCode === null && p.signalCode === null) {
      const gone = new Promise<void>((resolve) => p.once('exit', () => resolve()));
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 3000);
      await gone;
      clearTimeout(t);
    }
    if (this.logFd >= 0) {
      fs.closeSync(this.logFd);
      this.logFd = -1;
    }
  }

  private tailLog(): string {
    try {
      return fs.readFileSync(this.logPath, 'utf8').split('\n').slice(-20).join('\n');
    } catch {
      return '';
    }
  }
}

/** A port that was free a moment ago on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
