// Network hygiene of the registry client. A registry served over https may redirect blob reads elsewhere (object stores), but never to plain
// http: a redirect that downgrades is refused before anything is sent there. An https registry on
// 127.0.0.1 with a self-signed certificate (made here with openssl) redirects to an http server.
// Basic credentials never go to a plain-http token realm off this host.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import { after, before, describe, it } from 'node:test';
import { Agent } from 'undici';
import { CredentialStore, RegistryClient } from '../../src/registry';
import { makeTempDir, TempDir } from '../helpers/tmp';

const DIGEST = 'sha256:' + 'd'.repeat(64);

describe('registry redirects', { timeout: 60_000 }, () => {
  let tmp: TempDir;
  let plain: http.Server;
  let secure: https.Server;
  const plainHits: string[] = [];
  before(async () => {
    tmp = makeTempDir('obd-redirect-');
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
      '-keyout', tmp.join('key.pem'), '-out', tmp.join('cert.pem')], { stdio: 'ignore' });
    plain = http.createServer((req, res) => {
      plainHits.push(`${req.method} ${req.url} auth=${req.headers.authorization ?? ''}`);
      res.writeHead(200, { 'content-length': 4 }).end('evil');
    });
    await new Promise<void>((r) => plain.listen(0, '127.0.0.1', r));
    const plainPort = (plain.address() as AddressInfo).port;
    secure = https.createServer({ key: fs.readFileSync(tmp.join('key.pem')), cert: fs.readFileSync(tmp.join('cert.pem')) }, (req, res) => {
      if (req.url === '/v2/' || req.url === '/v2') return void res.writeHead(200).end('{}');
      res.writeHead(307, { location: `http://127.0.0.1:${plainPort}/store${req.url}` }).end();
    });
    await new Promise<void>((r) => secure.listen(0, '127.0.0.1', r));
  });
  after(async () => {
    plain.closeAllConnections();
    secure.closeAllConnections();
    await new Promise((r) => plain.close(r));
    await new Promise((r) => secure.close(r));
    tmp.cleanup();
  });

  it('https → http redirects of blob reads are refused; nothing reaches the http server', async () => {
    const host = `127.0.0.1:${(secure.address() as AddressInfo).port}`;
    const dispatcher = new Agent({ connect: { rejectUnauthorized: false } });
    const client = new RegistryClient({ dispatcher, loopbackPlainHttp: false, retry: { maxAttempts: 1 } });
    try {
      await assert.rejects(client.getBlob(host, 'app', DIGEST), /redirect from https to http/);
      await assert.rejects(client.blobReader(host, 'app', DIGEST, { size: 4 }).read(0, 4), /redirect from https to http/);
      assert.deepEqual(plainHits, [], 'no request went to the http server');
    } finally {
      await client.close();
      await dispatcher.close();
    }
  });
});

describe('token realms', { timeout: 60_000 }, () => {
  it('Basic credentials are never sent to a plain-http token realm on the network', async () => {
    const ip = Object.values(os.networkInterfaces()).flat().find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    assert.ok(ip, 'this test needs a non-loopback IPv4 address on the machine (for a token realm that is not on this host)');
    const seen: string[] = [];
    const tokens = http.createServer((req, res) => {
      seen.push(`auth=${req.headers.authorization ?? ''}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"t"}');
    });
    await new Promise<void>((r) => tokens.listen(0, ip, r));
    const realm = `http://${ip}:${(tokens.address() as AddressInfo).port}/token`;
    const registry = http.createServer((_req, res) => {
      res.writeHead(401, { 'www-authenticate': `Bearer realm="${realm}",service="reg"` }).end();
    });
    await new Promise<void>((r) => registry.listen(0, '127.0.0.1', r));
    const host = `127.0.0.1:${(registry.address() as AddressInfo).port}`;
    const client = new RegistryClient({ credentials: new CredentialStore({ [host]: { username: 'alice', password: 'secret' } }), retry: { maxAttempts: 1 } });
    try {
      await assert.rejects(client.getManifest(`${host}/app:v1`), /refusing to send the credentials of "alice" to the plain-http token realm/);
      assert.ok(seen.every((s) => s === 'auth='), `no Authorization reached the realm: ${seen.join(', ')}`);
    } finally {
      await client.close();
      registry.closeAllConnections();
      tokens.closeAllConnections();
      await new Promise((r) => registry.close(r));
      await new Promise((r) => tokens.close(r));
    }
  });
});
