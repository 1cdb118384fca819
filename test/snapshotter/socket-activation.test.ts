// Snapshotter restarts under socket activation (obd-snapshotter.socket; FakeSystemd plays the .socket
// unit): the listening socket is never closed, so a client connecting while the snapshotter restarts
// waits in the backlog instead of getting "connection refused". Measured against the snapshotter
// binding its own socket. containerd's proxy client also gives up on a connection whose gRPC
// handshake takes longer than about a second, so the snapshotter answers on the socket before the
// slow part of its start: a Prepare issued through containerd while it restarts succeeds.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, describe, it } from 'node:test';
import { CtrError, TestContainerd } from '../helpers/containerd';
import { FakeSystemd } from '../helpers/fake-systemd';
import { TestSnapshotter } from '../helpers/snapshotter';
import { makeTempDir } from '../helpers/tmp';

/** Connect attempts every 5 ms until stop(); the total time attempts were refused (or found no socket). */
function probeRefusals(address: string): { stop: () => Promise<{ refusedMs: number; refused: number }> } {
  let running = true;
  let refusedMs = 0;
  let refused = 0;
  const loop = (async () => {
    while (running) {
      const t0 = Date.now();
      const ok = await new Promise<boolean>((resolve) => {
        const c = net.connect({ path: address });
        c.once('connect', () => {
          c.destroy();
          resolve(true);
        });
        c.once('error', () => resolve(false));
      });
      await new Promise((r) => setTimeout(r, 5));
      if (!ok) {
        refused++;
        refusedMs += Date.now() - t0;
      }
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { refusedMs, refused };
    },
  };
}

describe('snapshotter socket activation', { timeout: 300_000 }, () => {
  const tmp = makeTempDir('obd-sockact-');
  const sd = new FakeSystemd(tmp.path);
  after(() => {
    sd.close();
    tmp.cleanup();
  });

  it('a restart refuses connections for a while with its own socket, never with an inherited one', async () => {
    const own = new TestSnapshotter();
    await own.start();
    let probe = probeRefusals(own.address);
    await own.stop();
    await own.start();
    const without = await probe.stop();
    await own.cleanup();

    const act = new TestSnapshotter();
    const fd = sd.listen(act.address);
    await act.start({ listenFd: fd });
    probe = probeRefusals(act.address);
    await act.stop();
    await act.start({ listenFd: fd });
    const withAct = await probe.stop();
    assert.match(act.tailLog(), /socket=.*inherited/);
    await act.cleanup();
    console.log(`snapshotter restart: connection refused for ${without.refusedMs} ms (${without.refused} attempts) with its own socket, ${withAct.refusedMs} ms (${withAct.refused}) socket-activated`);
    assert.ok(without.refused > 0, 'without socket activation a restart refuses connections (the baseline this feature removes)');
    assert.equal(withAct.refused, 0, 'with socket activation no connection is refused');
  });

  it('a Prepare and Mounts issued through containerd while the snapshotter restarts succeed', async () => {
    const act = new TestSnapshotter();
    const fd = sd.listen(act.address);
    await act.start({ listenFd: fd });
    const ctd = new TestContainerd({ proxySnapshotters: { obd: act.address } });
    try {
      await ctd.start();
      const snap = (args: string[]) => ctd.ctr(['snapshots', '--snapshotter', 'obd', ...args], { timeoutMs: 60_000 });
      await snap(['ls']); // containerd holds a connection to the snapshotter from here on
      const waits: number[] = [];
      for (let round = 0; round < 3; round++) {
        await act.stop();
        // Nothing accepts now: the old process is gone, the new one not started.
        const t0 = Date.now();
        const prepared = snap(['prepare', `mid-restart-${round}`]).then(
          () => undefined,
          (err: CtrError) => err.message,
        );
        await act.start({ listenFd: fd });
        assert.equal(await prepared, undefined, `round ${round}: Prepare through containerd during the restart`);
        waits.push(Date.now() - t0);
        const mounts = await snap(['mounts', '/tmp/unused', `mid-restart-${round}`]);
        assert.match(mounts.stdout, /mount -t /, 'Mounts answers with the new snapshot');
      }
      console.log(`containerd Prepare during a socket-activated snapshotter restart: answered after ${waits.join(', ')} ms`);
      assert.match(act.tailLog(100), /acceptingMs=/);
    } finally {
      await ctd.stop();
      await act.stop();
      await act.cleanup();
    }
  });
});
