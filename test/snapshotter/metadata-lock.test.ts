// Slow work stays out of the metadata lock: while one Prepare waits on a registry that never answers
// (the layer-type probe of a CRI layer without overlaybd annotations), Prepare, Commit and Remove of
// other snapshots answer at once (the bound: under 100 ms each).
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { SnapshotsClient, TestSnapshotter } from '../helpers/snapshotter';

describe('metadata lock', { timeout: 120_000 }, () => {
  const sn = new TestSnapshotter();
  let client: SnapshotsClient;
  // A registry that accepts connections and never answers.
  const sockets = new Set<net.Socket>();
  const blackhole = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  before(async () => {
    await new Promise<void>((r) => blackhole.listen(0, '127.0.0.1', r));
    await sn.start();
    client = new SnapshotsClient(sn.address);
  });
  after(async () => {
    client.close();
    await sn.cleanup();
    for (const s of sockets) s.destroy();
    await new Promise((r) => blackhole.close(r));
  });

  it('Prepare/Commit/Remove of other snapshots complete in under 100 ms while one Prepare waits on a registry', async (t) => {
    const port = (blackhole.address() as net.AddressInfo).port;
    const slow = client
      .prepare('extract-slow', '', {
        'containerd.io/snapshot.ref': 'sha256:' + 'a'.repeat(64),
        'containerd.io/snapshot/cri.image-ref': `127.0.0.1:${port}/stuck/app:latest`,
        'containerd.io/snapshot/cri.layer-digest': 'sha256:' + 'b'.repeat(64),
      })
      .then(
        () => 'answered',
        (err: Error) => `failed: ${err.message}`,
      );
    // The probe is under way once the registry has a connection.
    for (let i = 0; i < 100 && sockets.size === 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(sockets.size > 0, 'the slow Prepare reached the registry');

    const timings: Record<string, number> = {};
    const timed = async (name: string, fn: () => Promise<unknown>) => {
      const t0 = performance.now();
      await fn();
      timings[name] = performance.now() - t0;
    };
    for (let round = 0; round < 3; round++) {
      await timed(`prepare ${round}`, () => client.prepare(`a${round}`, ''));
      await timed(`commit ${round}`, () => client.commit(`c${round}`, `a${round}`));
      await timed(`prepare on committed ${round}`, () => client.prepare(`b${round}`, `c${round}`));
      await timed(`remove ${round}`, () => client.remove(`b${round}`));
      await timed(`remove committed ${round}`, () => client.remove(`c${round}`));
    }
    t.diagnostic(JSON.stringify(Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Math.round(v)]))));
    for (const [name, ms] of Object.entries(timings)) assert.ok(ms < 100, `${name} took ${ms.toFixed(1)} ms`);
    let settled = false;
    void slow.then(() => (settled = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'the slow Prepare is still waiting on its registry');
    // End its wait: the probe fails and the layer is taken as a plain one.
    for (const s of sockets) s.destroy();
    assert.match(await slow, /answered|failed/);
  });
});
