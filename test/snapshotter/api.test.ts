// obd snapshotter over its gRPC socket (a real process, real overlay mounts where mounts matter):
// containerd's rules and error codes, Update paths, Walk filters, mounts, usage, the custom lower
// label, restart persistence and crash consistency.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { obdBin } from '../helpers/bin';
import { makeTempDir } from '../helpers/tmp';
import { SnapshotsClient, TestSnapshotter, WireMount } from '../helpers/snapshotter';
import { MetaStore } from '../../src/snapshotter/storage';
import { CUSTOM_LOWER_LABEL } from '../../src/snapshotter/custom-lower';

function rejectsWith(p: Promise<unknown>, code: grpc.status, message: RegExp): Promise<void> {
  return assert.rejects(p, (err: grpc.ServiceError) => {
    assert.equal(err.code, code, `expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    assert.match(err.details, message);
    return true;
  });
}

function lowerdirs(m: WireMount): string[] {
  const opt = m.options.find((o) => o.startsWith('lowerdir='));
  return opt ? opt.slice('lowerdir='.length).split(':') : [];
}

async function withSnapshotter(
  config: Record<string, unknown>,
  fn: (c: SnapshotsClient, s: TestSnapshotter) => Promise<void>,
): Promise<void> {
  const s = new TestSnapshotter(config);
  await s.start();
  const c = new SnapshotsClient(s.address);
  try {
    await fn(c, s);
  } finally {
    c.close();
    await s.cleanup();
  }
}

describe('obd snapshotter API', () => {
  let s: TestSnapshotter;
  let c: SnapshotsClient;
  before(async () => {
    s = new TestSnapshotter();
    await s.start();
    c = new SnapshotsClient(s.address);
  });
  after(async () => {
    c?.close();
    await s?.cleanup();
  });

  test('bad requests get the codes containerd maps back to errdefs, with messages naming the snapshot', async () => {
    await rejectsWith(c.prepare('b/x', 'b/no-such-parent'), grpc.status.NOT_FOUND, /b\/no-such-parent/);
    await c.prepare('b/active');
    await rejectsWith(c.prepare('b/active'), grpc.status.ALREADY_EXISTS, /b\/active already exists/);
    await rejectsWith(c.view('b/active'), grpc.status.ALREADY_EXISTS, /b\/active/);
    await rejectsWith(c.prepare('b/on-active', 'b/active'), grpc.status.INVALID_ARGUMENT, /not a committed snapshot/);
    await c.view('b/view');
    await rejectsWith(c.commit('b/c-from-view', 'b/view'), grpc.status.FAILED_PRECONDITION, /b\/view is not active/);
    await rejectsWith(c.commit('b/c', 'b/unknown'), grpc.status.NOT_FOUND, /b\/unknown does not exist/);
    await c.commit('b/committed', 'b/active');
    await c.prepare('b/active2');
    await rejectsWith(c.commit('b/committed', 'b/active2'), grpc.status.ALREADY_EXISTS, /b\/committed already exists/);
    await c.prepare('b/child', 'b/committed');
    await rejectsWith(c.remove('b/committed'), grpc.status.FAILED_PRECONDITION, /cannot remove snapshot b\/committed/);
    await rejectsWith(c.remove('b/unknown'), grpc.status.NOT_FOUND, /b\/unknown/);
    await rejectsWith(c.stat('b/unknown'), grpc.status.NOT_FOUND, /b\/unknown/);
    await rejectsWith(c.mounts('b/committed'), grpc.status.FAILED_PRECONDITION, /committed/);
    await rejectsWith(c.usage('b/unknown'), grpc.status.NOT_FOUND, /b\/unknown/);
    await rejectsWith(c.prepare(''), grpc.status.INVALID_ARGUMENT, /key must not be empty/);
    await rejectsWith(c.prepare('b/big', '', { big: 'x'.repeat(4096) }), grpc.status.INVALID_ARGUMENT, /label key and value greater than maximum size.*big/);
    await rejectsWith(c.update({ name: 'b/committed', parent: 'x' }, ['parent']), grpc.status.INVALID_ARGUMENT, /cannot update "parent"/);
    await rejectsWith(c.update({ name: 'b/unknown', labels: {} }), grpc.status.NOT_FOUND, /b\/unknown/);
    await rejectsWith(c.list(['name==']), grpc.status.INVALID_ARGUMENT, /parse error/);
    await rejectsWith(c.list(['kind=>active']), grpc.status.INVALID_ARGUMENT, /operator/);
    await rejectsWith(c.list(['labels."unterminated==x']), grpc.status.INVALID_ARGUMENT, /not terminated/);
    await rejectsWith(c.list(['name~=(']), grpc.status.INVALID_ARGUMENT, /regular expression/);
    // nothing of the failed calls was recorded
    const names = (await c.list(['name~=^b/'])).map((i) => i.name).sort();
    assert.deepEqual(names, ['b/active2', 'b/child', 'b/committed', 'b/view']);
  });

  test('concurrent Prepare of one key: exactly one succeeds', async () => {
    const results = await Promise.allSettled(Array.from({ length: 16 }, () => c.prepare('race/key')));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    for (const r of results) if (r.status === 'rejected') assert.equal((r.reason as grpc.ServiceError).code, grpc.status.ALREADY_EXISTS);
  });

  test('Update: "labels.KEY" sets or removes one label, "labels" replaces all, no mask replaces all; times kept', async () => {
    await c.prepare('u/a', '', { keep: '1', drop: '2' });
    const before = await c.stat('u/a');
    let info = await c.update({ name: 'u/a', labels: { add: 'x', drop: '', ignored: 'y' } }, ['labels.add', 'labels.drop']);
    assert.deepEqual(info.labels, { keep: '1', add: 'x' });
    assert.deepEqual(info.created_at, before.created_at);
    assert.ok(BigInt(info.updated_at.seconds) * 1_000_000_000n + BigInt(info.updated_at.nanos) >
      BigInt(before.updated_at.seconds) * 1_000_000_000n + BigInt(before.updated_at.nanos));
    info = await c.update({ name: 'u/a', labels: { only: 'this' } }, ['labels']);
    assert.deepEqual(info.labels, { only: 'this' });
    info = await c.update({ name: 'u/a', parent: 'ignored', labels: { z: '9' } });
    assert.deepEqual(info.labels, { z: '9' });
    assert.equal(info.parent, '');
    assert.equal(info.kind, 'ACTIVE');
    assert.deepEqual(await c.stat('u/a'), info);
  });

  test('Walk: containerd filter syntax (name, parent, kind, labels, quoting, "," AND, "|" and several filters OR)', async () => {
    await c.prepare('w/base-a', '', { l: '1' });
    await c.commit('w/base', 'w/base-a', { l: '1', 'containerd.io/snapshot.ref': 'sha256:abc' });
    await c.prepare('w/act', 'w/base', { l: '2' });
    await c.view('w/view', 'w/base');
    const names = async (...f: string[]) => (await c.list(f)).map((i) => i.name).filter((n) => n.startsWith('w/')).sort();
    assert.deepEqual(await names('name==w/base'), ['w/base']);
    assert.deepEqual(await names('parent==w/base'), ['w/act', 'w/view']);
    assert.deepEqual(await names('kind==committed,name~=^w/'), ['w/base']);
    assert.deepEqual(await names('labels.l==2'), ['w/act']);
    assert.deepEqual(await names('labels.l,name~=^w/'), ['w/act', 'w/base']);
    assert.deepEqual(await names('labels."containerd.io/snapshot.ref"==sha256:abc,parent==""'), ['w/base']);
    assert.deepEqual(await names('parent!="",name~=|^w/|'), ['w/act', 'w/view']);
    assert.deepEqual(await names('name==w/act|name==w/view'), ['w/act', 'w/view']);
    assert.deepEqual(await names('name==w/act', 'name==w/base'), ['w/act', 'w/base']);
    assert.deepEqual(await names('nosuchfield'), []);
    assert.ok((await names()).length >= 3);
  });

  test('mounts follow the overlayfs snapshotter; directories are named by id, never by key', async () => {
    const snapDir = /^.*\/root\/snapshots\/([0-9]+)\/fs$/;
    const [m1] = await c.prepare('m/../../evil key');
    assert.equal(m1.type, 'bind');
    assert.deepEqual(m1.options, ['rw', 'rbind']);
    assert.match(m1.source, snapDir);
    assert.ok(m1.source.startsWith(s.root));
    await c.commit('m/c1', 'm/../../evil key');
    const [v1] = await c.view('m/v1', 'm/c1');
    assert.deepEqual([v1.type, v1.source, v1.options], ['bind', m1.source, ['ro', 'rbind']]);
    const [a1] = await c.prepare('m/a1', 'm/c1');
    await c.commit('m/c2', 'm/a1');
    const [a2] = await c.prepare('m/a2', 'm/c2');
    assert.equal(a2.type, 'overlay');
    const a1fs = path.join(path.dirname(a1.options.find((o) => o.startsWith('upperdir='))!.slice(9)), 'fs');
    assert.deepEqual(lowerdirs(a2), [a1fs, m1.source], 'lowerdir lists the newest first');
    assert.ok(a2.options.some((o) => /^upperdir=.*\/snapshots\/[0-9]+\/fs$/.test(o)));
    assert.ok(a2.options.some((o) => /^workdir=.*\/snapshots\/[0-9]+\/work$/.test(o)));
    const [v2] = await c.view('m/v2', 'm/c2');
    assert.equal(v2.type, 'overlay');
    assert.ok(!v2.options.some((o) => o.startsWith('upperdir=')));
    assert.deepEqual(lowerdirs(v2), [a1fs, m1.source]);
    assert.deepEqual(await c.mounts('m/a2'), [a2]);
    const [v0] = await c.view('m/v0');
    assert.deepEqual([v0.type, v0.options], ['bind', ['ro', 'rbind']]);
    for (const e of fs.readdirSync(path.join(s.root, 'snapshots'))) assert.match(e, /^[0-9]+$/);
  });

  test('Usage walks the directory: bytes allocated and inodes, hardlinks counted once; committed usage is kept', async () => {
    const [m] = await c.prepare('du/a');
    fs.writeFileSync(path.join(m.source, 'f'), Buffer.alloc(64 * 1024, 1));
    fs.linkSync(path.join(m.source, 'f'), path.join(m.source, 'hard'));
    fs.mkdirSync(path.join(m.source, 'd'));
    const u = await c.usage('du/a');
    assert.equal(u.inodes, 3, 'fs dir, f (= hard), d');
    assert.ok(u.size >= 64 * 1024 && u.size < 3 * 64 * 1024, `size ${u.size}`);
    await c.commit('du/c', 'du/a');
    assert.deepEqual(await c.usage('du/c'), u);
  });

  test('records, labels and times survive a restart', async () => {
    await c.prepare('p/a', '', { x: 'y' });
    await c.commit('p/c', 'p/a', { k: 'v' });
    const before = await c.stat('p/c');
    assert.equal(await s.stop(), 0);
    await s.start();
    const c2 = new SnapshotsClient(s.address);
    try {
      assert.deepEqual(await c2.stat('p/c'), before);
      await c2.prepare('p/next', 'p/c');
    } finally {
      c2.close();
    }
  });
});

describe('custom lower label (containerd.io/snapshot/overlay-custom-add-lower.paths)', () => {
  const tmp = makeTempDir('obd-lower-');
  after(() => tmp.cleanup());

  test('allowed dirs become the lowest lowerdirs; anything else is refused with InvalidArgument naming the path', async () => {
    const allowed = tmp.join('allowed');
    fs.mkdirSync(path.join(allowed, 'a'), { recursive: true });
    fs.mkdirSync(path.join(allowed, 'b'), { recursive: true });
    fs.writeFileSync(path.join(allowed, 'file'), 'x');
    fs.mkdirSync(tmp.join('outside'));
    fs.symlinkSync(tmp.join('outside'), path.join(allowed, 'escape'));
    await withSnapshotter({ allowedLowerPrefixes: [allowed] }, async (c) => {
      const label = (v: string) => ({ [CUSTOM_LOWER_LABEL]: v });
      const [m0] = await c.prepare('l/solo', '', label(`${allowed}/a`));
      assert.equal(m0.type, 'overlay');
      assert.deepEqual(lowerdirs(m0), [`${allowed}/a`]);
      await c.prepare('l/base-a');
      await c.commit('l/base', 'l/base-a');
      const [m] = await c.prepare('l/ctr', 'l/base', label(`${allowed}/a,${allowed}/b`));
      const lowers = lowerdirs(m);
      assert.equal(lowers.length, 3);
      assert.deepEqual(lowers.slice(1), [`${allowed}/a`, `${allowed}/b`]);
      assert.deepEqual(await c.mounts('l/ctr'), [m]);
      const bad = async (v: string, why: RegExp) =>
        rejectsWith(c.prepare(`l/bad-${Math.random()}`, 'l/base', label(v)), grpc.status.INVALID_ARGUMENT, why);
      await bad('/etc', /path "\/etc" is not under an allowed prefix/);
      await bad(`${allowed}/../outside`, /contains "\.\."/);
      await bad(`${allowed}/missing`, /missing" does not exist/);
      await bad(`${allowed}/file`, /file" is not a directory/);
      await bad(`${allowed}/escape`, /escape" resolves to .*outside the allowed prefixes/);
      await bad('relative/dir', /is not absolute/);
      await bad(`${allowed}/a,`, /is empty/);
      await bad(`${allowed}a`, /not under an allowed prefix/);
    });
    await withSnapshotter({}, async (c) => {
      await rejectsWith(c.prepare('l/x', '', { [CUSTOM_LOWER_LABEL]: `${allowed}/a` }), grpc.status.INVALID_ARGUMENT,
        /not under an allowed prefix \(config allowedLowerPrefixes: \[\]\)/);
    });
  });
});

describe('crash consistency', () => {
  test('kill -9 during a flood of Prepare/Commit: after restart every record has its dir, Cleanup leaves no orphans', { timeout: 120_000 }, async () => {
    const s = new TestSnapshotter();
    await s.start();
    let c = new SnapshotsClient(s.address);
    try {
      let stop = false;
      const chain = async (w: number) => {
        let parent = '';
        for (let i = 0; !stop; i++) {
          try {
            const [m] = await c.prepare(`f/${w}/a${i}`, parent);
            fs.writeFileSync(path.join(m.options.find((o) => o.startsWith('upperdir='))?.slice(9) ?? m.source, `f${i}`), 'x');
            await c.commit(`f/${w}/c${i}`, `f/${w}/a${i}`);
            parent = `f/${w}/c${i}`;
            if (i % 3 === 0) await c.view(`f/${w}/v${i}`, parent);
            if (i % 5 === 4) await c.remove(`f/${w}/v${i - 1}`).catch(() => undefined);
          } catch {
            return; // the snapshotter died
          }
        }
      };
      const workers = Array.from({ length: 4 }, (_, w) => chain(w));
      await new Promise((r) => setTimeout(r, 1500));
      await s.kill9();
      stop = true;
      await Promise.all(workers);
      await s.start();
      c.close();
      c = new SnapshotsClient(s.address); // a fresh channel: the old one backs off after the crash
      const listed = await c.list();
      assert.ok(listed.length > 10, `only ${listed.length} snapshots were created before the kill`);
      const dirsBefore = fs.readdirSync(path.join(s.root, 'snapshots')).length;
      await c.cleanup();
      assert.equal(await s.stop(), 0);
      console.log(`flood: ${listed.length} records after the crash, ${dirsBefore} entries in snapshots/ before Cleanup`);

      const store = await MetaStore.open(path.join(s.root, 'metadata.level'));
      try {
        const entries = store.entries();
        assert.equal(entries.length, listed.length);
        const ids = new Set<number>();
        for (const [key, rec] of entries) {
          assert.ok(fs.existsSync(path.join(s.root, 'snapshots', String(rec.id), 'fs')), `dir of ${key} (id ${rec.id}) exists`);
          if (rec.parent) assert.equal(store.get(rec.parent)?.kind, 'committed', `parent of ${key} is committed`);
          assert.ok(!ids.has(rec.id), `id ${rec.id} used once`);
          ids.add(rec.id);
        }
        const dirs = fs.readdirSync(path.join(s.root, 'snapshots')).sort();
        assert.deepEqual(dirs, [...ids].map(String).sort(), 'no orphan dirs after Cleanup');
      } finally {
        await store.close();
      }
      await s.start();
      c.close();
      c = new SnapshotsClient(s.address);
      const top = listed.filter((i) => i.kind === 'COMMITTED').map((i) => i.name)[0];
      await c.prepare('f/after', top);
    } finally {
      c.close();
      await s.cleanup();
    }
  });
});

describe('process: socket and config', () => {
  const tmp = makeTempDir('obd-proc-');
  after(() => tmp.cleanup());

  const runObd = (args: string[], env: NodeJS.ProcessEnv = {}): { code: number; stderr: string } => {
    try {
      execFileSync(process.execPath, [obdBin(), ...args], {
        env: { ...process.env, ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 20_000,
      });
      return { code: 0, stderr: '' };
    } catch (err) {
      const e = err as { status: number; stderr: Buffer };
      return { code: e.status, stderr: e.stderr.toString() };
    }
  };

  test('bad config: clear error naming the key and value, non-zero exit', () => {
    const cases: Array<[unknown, RegExp]> = [
      [{ rwMode: 'block' }, /config key "rwMode": must be one of overlayfs, dir, dev \(got "block"\)/],
      [{ roott: '/x' }, /config key "roott": unknown key/],
      [{ root: 'relative' }, /config key "root": must be an absolute path \(got "relative"\)/],
      [{ autoRemoveDev: 'yes' }, /config key "autoRemoveDev": must be true or false/],
      [{ exporterConfig: { port: 70000 } }, /config key "exporterConfig.port": must be <= 65535 \(got 70000\)/],
      [{ mirrorRegistry: [{ host: 'r', insecure: 1 }] }, /config key "mirrorRegistry\[0\].insecure"/],
      [{ cacheConfig: { cacheSizeGB: 'big' } }, /config key "cacheConfig.cacheSizeGB": must be a number/],
      [{ allowedLowerPrefixes: ['rel'] }, /config key "allowedLowerPrefixes\[0\]": must be an absolute path/],
      [[1], /must hold a JSON object/],
    ];
    for (const [cfg, re] of cases) {
      const f = tmp.join(`bad-${Math.random()}.json`);
      fs.writeFileSync(f, JSON.stringify(cfg));
      const r = runObd(['snapshotter', '--config', f]);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, re);
      assert.ok(r.stderr.includes(f), 'the message names the file');
    }
    fs.writeFileSync(tmp.join('broken.json'), '{"root": ');
    assert.match(runObd(['snapshotter', '--config', tmp.join('broken.json')]).stderr, /invalid JSON/);
    const viaEnv = runObd(['snapshotter'], { OBD_CONFIG: tmp.join('missing.json') });
    assert.notEqual(viaEnv.code, 0);
    assert.match(viaEnv.stderr, /missing\.json: does not exist/);
  });

  test('socket: parent dir created, mode 0600, stale socket replaced, live socket and non-socket refused; SIGTERM exits 0', async () => {
    const sock = tmp.join('deep', 'er', 'obd.sock');
    const s1 = new TestSnapshotter({ address: sock });
    try {
      await s1.start();
      assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
      assert.equal(fs.statSync(path.dirname(sock)).mode & 0o777, 0o700);
      // a second instance must not steal a live socket
      const s2 = new TestSnapshotter({ address: sock });
      await assert.rejects(s2.start(), /is in use/);
      await s2.cleanup();
      assert.ok(fs.existsSync(sock));
      // a crash leaves a stale socket, which the next start replaces
      await s1.kill9();
      assert.ok(fs.existsSync(sock));
      await s1.start();
      const c = new SnapshotsClient(sock);
      await c.prepare('sock/ok');
      c.close();
      assert.equal(await s1.stop(), 0);
      assert.ok(!fs.existsSync(sock), 'graceful stop removes the socket');
      fs.writeFileSync(sock, 'not a socket');
      await assert.rejects(s1.start(), /exists and is not a socket/);
    } finally {
      await s1.cleanup();
    }
  });

  test('two instances started at once on a stale socket: exactly one serves, its socket stays live', async () => {
    const sock = tmp.join('race', 'obd.sock');
    for (let round = 0; round < 5; round++) {
      // A stale socket (a killed instance) that both will find.
      const stale = new TestSnapshotter({ address: sock });
      await stale.start();
      await stale.kill9();
      await stale.cleanup();
      const a = new TestSnapshotter({ address: sock });
      const b = new TestSnapshotter({ address: sock });
      try {
        const results = await Promise.allSettled([a.start(), b.start()]);
        const served = results.filter((r) => r.status === 'fulfilled').length;
        assert.equal(served, 1, `round ${round}: exactly one instance serves (${results.map((r) => r.status).join(', ')})`);
        for (const r of results) if (r.status === 'rejected') assert.match(String(r.reason), /is in use/);
        const c = new SnapshotsClient(sock);
        await c.prepare(`race/${round}`); // the socket file is the live instance's
        c.close();
      } finally {
        await a.cleanup();
        await b.cleanup();
      }
    }
  });
});
