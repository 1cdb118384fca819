// The small parts of the registry client on their own: retry policy, Retry-After, redirect
// expiry, host/mirror resolution, auth handler against a stub token endpoint.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { Agent } from 'undici';
import {
  AuthHandler, CredentialStore, Hosts, RegistryAuthError, RegistryHttpError, RegistryNotFoundError, RegistryTimeoutError,
  RetryHandler, parseRetryAfter, redirectExpiry, registryOptionsFromConfig,
} from '../../src/registry';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

describe('RetryHandler', () => {
  it('retries retryable errors with bounded jittered backoff, then gives the last error', async () => {
    const h = new RetryHandler({ maxAttempts: 4, baseDelayMs: 5, maxDelayMs: 20 });
    let n = 0;
    await assert.rejects(h.run(async () => {
      n++;
      throw new RegistryHttpError('r: 503', { registry: 'r', status: 503 });
    }, { deadline: Date.now() + 5000, registry: 'r', what: 'x' }), (e: Error) => e instanceof RegistryHttpError);
    assert.equal(n, 4);
    for (let a = 1; a < 10; a++) assert.ok(h.delayFor(new Error('x'), a) <= 20);
  });

  it('does not retry what cannot get better (404)', async () => {
    const h = new RetryHandler();
    let n = 0;
    await assert.rejects(h.run(async () => {
      n++;
      throw new RegistryNotFoundError('r: 404', { registry: 'r', status: 404 });
    }, { deadline: Date.now() + 5000, registry: 'r', what: 'x' }), RegistryNotFoundError);
    assert.equal(n, 1);
  });

  it('honours Retry-After and stops at the deadline with a timeout error', async () => {
    const h = new RetryHandler({ maxAttempts: 100, maxRetryAfterMs: 60_000 });
    assert.equal(h.delayFor(new RegistryHttpError('429', { registry: 'r', status: 429, retryAfterMs: 1500 }), 1), 1500);
    const t0 = Date.now();
    await assert.rejects(h.run(async (signal) => {
      await new Promise((_r, rej) => signal.addEventListener('abort', () => rej(signal.reason)));
    }, { deadline: Date.now() + 200, registry: 'r', what: 'stall' }), (e: Error) => e instanceof RegistryTimeoutError && /deadline/.test(e.message));
    assert.ok(Date.now() - t0 < 1000);
  });

  it('parses Retry-After as seconds or a date', () => {
    assert.equal(parseRetryAfter('3'), 3000);
    assert.equal(parseRetryAfter(new Date(10_000).toUTCString(), 4000), 6000);
    assert.equal(parseRetryAfter('soon'), undefined);
  });
});

describe('redirect expiry', () => {
  const now = Date.UTC(2026, 0, 1, 12, 0, 0);
  it('reads S3, Expires and Azure parameters, minus a safety margin, capped by the fallback', () => {
    assert.equal(redirectExpiry(new URL('https://s3/x?X-Amz-Date=20260101T120000Z&X-Amz-Expires=120'), 600_000, now), now + 90_000);
    assert.equal(redirectExpiry(new URL(`https://cdn/x?Expires=${now / 1000 + 60}`), 600_000, now), now + 30_000);
    assert.equal(redirectExpiry(new URL('https://blob/x?se=2026-01-01T13:00:00Z'), 600_000, now), now + 600_000);
    assert.equal(redirectExpiry(new URL('https://plain/x'), 300_000, now), now + 300_000);
  });
});

describe('Hosts', () => {
  it('lists mirrors in order, then the origin; insecure means plain http', () => {
    const h = new Hosts({ mirrors: [{ host: 'mirror.local:5000', insecure: true }, { host: 'https://m2.example/' }, { host: 'reg.io' }] });
    assert.deepEqual(h.pullEndpoints('reg.io'), [
      { host: 'mirror.local:5000', origin: 'http://mirror.local:5000', mirror: true },
      { host: 'm2.example', origin: 'https://m2.example', mirror: true },
      { host: 'reg.io', origin: 'https://reg.io', mirror: false },
    ]);
    assert.equal(h.endpoint('docker.io').origin, 'https://registry-1.docker.io');
    assert.equal(h.endpoint('127.0.0.1:5000').origin, 'http://127.0.0.1:5000');
    assert.throws(() => new Hosts({ mirrors: [{ host: '' }] }), /mirrorRegistry\[0\]\.host/);
  });
});

describe('AuthHandler', () => {
  it('fetches a token once per scope, reuses it, and refetches after a 401', async (t) => {
    let issued = 0;
    const seen: string[] = [];
    const server = http.createServer((req, res) => {
      seen.push(`${req.headers.authorization ?? ''} ${req.url}`);
      issued++;
      res.end(JSON.stringify({ token: `t${issued}`, expires_in: 300 }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    const agent = new Agent();
    t.after(async () => {
      await agent.close();
      server.close();
    });
    const realm = `http://127.0.0.1:${(server.address() as AddressInfo).port}/token`;
    const auth = new AuthHandler({ dispatcher: agent, credentials: new CredentialStore({ 'reg.io': { username: 'u', password: 'p' } }) });
    const challenge = `Bearer realm="${realm}",service="svc"`;
    const h1 = await auth.onUnauthorized('https://reg.io', 'reg.io', 'a/b', 'repository:a/b:pull', challenge, undefined);
    assert.equal(h1, 'Bearer t1');
    assert.equal(await auth.headerFor('https://reg.io', 'reg.io', 'a/b', 'repository:a/b:pull'), 'Bearer t1');
    assert.equal(await auth.headerFor('https://reg.io', 'reg.io', 'c/d', 'repository:c/d:pull'), 'Bearer t2');
    const h3 = await auth.onUnauthorized('https://reg.io', 'reg.io', 'a/b', 'repository:a/b:pull', challenge, h1);
    assert.equal(h3, 'Bearer t3');
    assert.equal(issued, 3);
    assert.match(seen[0], /^Basic dTpw \/token\?service=svc&scope=repository%3Aa%2Fb%3Apull$/);
  });

  it('Basic: refuses to resend credentials that were just refused', async () => {
    const auth = new AuthHandler({ dispatcher: new Agent(), credentials: new CredentialStore({ 'reg.io': { username: 'u', password: 'p' } }) });
    const h = await auth.onUnauthorized('https://reg.io', 'reg.io', 'a', '', 'Basic realm="x"', undefined);
    await assert.rejects(auth.onUnauthorized('https://reg.io', 'reg.io', 'a', '', 'Basic realm="x"', h),
      (e: Error) => e instanceof RegistryAuthError && /reg\.io: 401 Unauthorized.*credentials of "u" refused/.test(e.message));
  });
});

describe('registryOptionsFromConfig', () => {
  it('takes mirrors and the credential file from the config', (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-cfg-'));
    t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, JSON.stringify({ auths: { 'reg.io': { auth: Buffer.from('u:p').toString('base64') } } }));
    const o = registryOptionsFromConfig({ mirrorRegistry: [{ host: 'm:5000', insecure: true }], credentialFile: file });
    assert.deepEqual(o.mirrors, [{ host: 'm:5000', insecure: true }]);
    assert.deepEqual(o.credentials?.lookup('reg.io', 'x/y'), { username: 'u', password: 'p' });
    assert.equal(registryOptionsFromConfig({ mirrorRegistry: null, credentialFile: path.join(dir, 'missing.json') }).credentials?.size, 0);
  });
});

describe('credential helpers', () => {
  it('asks docker-credential-NAME for hosts without an auths entry, once per host', async (t) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'obd-credhelper-'));
    const oldPath = process.env.PATH;
    t.after(() => {
      process.env.PATH = oldPath;
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const log = path.join(dir, 'calls');
    fs.writeFileSync(path.join(dir, 'docker-credential-obdtest'), `#!/bin/sh
read host
echo "$host" >> ${log}
if [ "$host" = "helped.io" ]; then echo '{"ServerURL":"helped.io","Username":"hu","Secret":"hs"}'; exit 0; fi
echo "credentials not found in native keychain"; exit 1
`, { mode: 0o755 });
    process.env.PATH = `${dir}:${oldPath}`;
    const file = path.join(dir, 'config.json');
    fs.writeFileSync(file, JSON.stringify({ auths: { 'plain.io': { username: 'pu', password: 'pp' } }, credHelpers: { 'helped.io': 'obdtest', 'unknown.io': 'obdtest' } }));
    const store = CredentialStore.fromFile(file);
    assert.deepEqual(await store.resolve('helped.io', 'a/b'), { username: 'hu', password: 'hs' });
    assert.deepEqual(await store.resolve('helped.io', 'c/d'), { username: 'hu', password: 'hs' });
    assert.deepEqual(store.lookup('helped.io'), { username: 'hu', password: 'hs' });
    assert.equal(await store.resolve('unknown.io'), undefined);
    assert.deepEqual(await store.resolve('plain.io'), { username: 'pu', password: 'pp' });
    assert.equal(await store.resolve('none.io'), undefined);
    assert.deepEqual(fs.readFileSync(log, 'utf8').split('\n').filter(Boolean), ['helped.io', 'unknown.io']);
  });
});
