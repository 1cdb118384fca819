// `obd snapshotter [--config F]`: serves containerd's snapshots.v1 API on the config's `address`.
// Config: --config, else $OBD_CONFIG, else /etc/obd/config.json. A bad config exits non-zero with
// one line naming the bad key. SIGTERM/SIGINT stop it gracefully (mounts and devices are left alone).
import { Command } from 'commander';
import { SnapshotterServer } from '../snapshotter/server';
import { serveUntilSignal } from './until-signal';

export async function runSnapshotter(configFlag?: string): Promise<void> {
  // The hooks load late (they pull in the registry and device clients): the socket answers first.
  await serveUntilSignal(configFlag, (cfg, log) =>
    SnapshotterServer.start(cfg, log, () => {
      const { OverlaybdHooks } = require('../snapshotter/overlaybd/hooks') as typeof import('../snapshotter/overlaybd/hooks');
      return [new OverlaybdHooks(cfg, log)];
    }),
  );
}

export function registerSnapshotterCommand(program: Command): void {
  program
    .command('snapshotter')
    .description("serve containerd's snapshots.v1 API (proxy plugin) on the config's unix socket")
    .option('-c, --config <file>', 'config.json (default: $OBD_CONFIG or /etc/obd/config.json)')
    .action(async (opts: { config?: string }) => {
      await runSnapshotter(opts.config);
    });
}
