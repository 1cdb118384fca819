// Snapshotter restarts under socket activation (obd-snapshotter.socket; FakeSystemd plays the .socket
// unit): the listening socket is never closed, so a client connecting while the snapshotter restarts
// waits in the backlog instead of getting "connection refused". Measured against the snapshotter
// binding its own socket, and checked through containerd with a Prepare issued mid-restart.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { TestContainerd } from '../helpers/containerd';
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

  describe('through containerd', () => {
    const sn = new TestSnapshotter();
    let ctd: TestContainerd;
    let fd = -1;
    before(async () => {
      fd = sd.listen(sn.address);
      await sn.start({ listenFd: fd });
      ctd = new TestContainerd({ proxySnapshotters: { obd: sn.address } });
      await ctd.start();
    });
    after(async () => {
      await ctd?.stop();
      await sn.cleanup();
    });

    it('a Prepare issued while the snapshotter restarts succeeds (no connection refused)', async () => {
      await ctd.ctr(['snapshots', '--snapshotter', 'obd', 'prepare', 'before']);
      await sn.stop();
      // Issued while no snapshotter runs: it waits in the socket's backlog.
      const prepare = ctd.ctr(['snapshots', '--snapshotter', 'obd', 'prepare', 'during']);
      await new Promise((r) => setTimeout(r, 500));
      await sn.start({ listenFd: fd });
      await prepare;
      const ls = (await ctd.ctr(['snapshots', '--snapshotter', 'obd', 'ls'])).stdout;
      assert.match(ls, /during/);
      assert.match(ls, /before/);
    });
  });
});
