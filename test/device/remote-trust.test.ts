// Cache poisoning across images (deviced's RemoteLowers, in this process, against a real registry and
// a registry that lies): ranges fetched for a digest from one (registry, repository) are never served
// to a device that names the same digest at another location, a wrong size at one location does not
// break another, and a blob is shared across locations only once its whole sha256 was checked.
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { defaultConfig } from '../../src/config';
import { RemoteLowers } from '../../src/device/remote';
import { silentLogger } from '../../src/log';
import { LyingRegistry } from '../helpers/lying-registry';
import { TestRegistry } from '../helpers/registry';
import { makeTempDir, TempDir } from '../helpers/tmp';

const UNIT = 64 << 10;

describe('remote blobs of untrusted images', { timeout: 120_000 }, () => {
  const registry = new TestRegistry();
  const liar = new LyingRegistry();
  let tmp: TempDir;
  before(async () => {
    tmp = makeTempDir('obd-remote-trust-');
    await registry.start();
    await liar.start();
  });
  after(async () => {
    await liar.stop();
    await registry.stop();
    tmp.cleanup();
  });

  const lowers = (cacheDir: string) => {
    const cfg = defaultConfig();
    cfg.cacheConfig = { ...cfg.cacheConfig, cacheDir, refillSize: UNIT, readAheadSize: 0 };
    cfg.credentialFile = '';
    return new RemoteLowers(cfg, silentLogger);
  };
  const remoteFile = (r: RemoteLowers, host: string, repo: string, digest: string, size: number) => {
    const o = r.open(`http://${host}/v2/${repo}/blobs/${digest}`, digest, size);
    assert.equal(o.kind, 'remote');
    return o.kind === 'remote' ? o.file : (undefined as never);
  };

  it('a liar naming a good digest: neither its bytes nor its size reach the good image; the good blob is shared once verified', async () => {
    const good = crypto.randomBytes(5 * UNIT + 123);
    const digest = await registry.pushBlob('trust/good', good);
    const evil = crypto.randomBytes(good.length);
    liar.blob('evil/app', digest, evil);
    liar.blob('evil/short', digest, evil.subarray(0, 2 * UNIT));

    const r = lowers(tmp.join('a', 'b', 'cache')); // parents do not exist yet either
    try {
      // The liar goes first: its bytes land in its own location's cache.
      const e = remoteFile(r, liar.host, 'evil/app', digest, evil.length);
      assert.ok((await e.read(0, 4096)).equals(evil.subarray(0, 4096)));
      // The same digest with another size at a third location opens (it is its own entry).
      const short = remoteFile(r, liar.host, 'evil/short', digest, 2 * UNIT);
      assert.ok((await short.read(0, 100)).equals(evil.subarray(0, 100)));

      const g = remoteFile(r, registry.host, 'trust/good', digest, good.length);
      assert.ok((await g.read(0, 4096)).equals(good.subarray(0, 4096)), 'the good image reads its own bytes');
      assert.ok((await g.read(0, good.length)).equals(good), 'the whole good blob');
      // The liar's blob, read whole, does not match the digest: never shared.
      assert.ok((await e.read(0, evil.length)).equals(evil));
      assert.equal(await r.promoteComplete(), 1, 'exactly the good blob was verified and shared');

      // Now any location naming the digest gets the verified copy, the liar included.
      const shared = r.open(`http://${liar.host}/v2/evil/other/blobs/${digest}`, digest, good.length);
      assert.equal(shared.kind, 'verified');
      if (shared.kind === 'verified') assert.ok(fs.readFileSync(shared.path).equals(good));
      assert.ok(fs.existsSync(path.join(tmp.path, 'a', 'b', 'cache', 'verified')));
    } finally {
      await r.close();
    }
  });

  it('a recording that cannot open its cache closes its trace file (no fd leak)', async () => {
    const cfgDir = tmp.join('rec');
    const traceFile = tmp.join('rec.trace');
    fs.writeFileSync(traceFile, '');
    const cfg = defaultConfig();
    cfg.cacheConfig = { ...cfg.cacheConfig, cacheDir: cfgDir, refillSize: 3000 }; // not a power of two: the cache refuses
    cfg.credentialFile = '';
    const r = new RemoteLowers(cfg, silentLogger);
    const { TraceWriter } = await import('../../src/trace/trace');
    const fdsTo = (f: string) => fs.readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`) === f;
      } catch {
        return false;
      }
    }).length;
    try {
      for (let i = 0; i < 3; i++) assert.throws(() => r.openRecording(tmp.join('rec-cache'), () => new TraceWriter(traceFile)));
      assert.equal(fdsTo(traceFile), 0, 'the trace file is not left open');
    } finally {
      await r.close();
    }
  });

  it('registry locations are pruned when their last device releases them', async () => {
    const blob = crypto.randomBytes(UNIT);
    const digest = await registry.pushBlob('trust/prune', blob);
    const r = lowers(tmp.join('prune-cache'));
    try {
      const a = r.open(`${registry.url}/v2/trust/prune/blobs/${digest}`, digest, blob.length);
      const b = r.open(`${registry.url}/v2/trust/prune/blobs/${digest}`, digest, blob.length);
      assert.equal(r.openLocations, 1);
      a.release();
      assert.equal(r.openLocations, 1, 'still used by b');
      b.release();
      assert.equal(r.openLocations, 0);
    } finally {
      await r.close();
    }
  });
});
