// `obd snapshotter [--config F]`: serves containerd's snapshots.v1 API on the config's `address`.
// Config: --config, else $OBD_CONFIG, else /etc/obd/config.json. A bad config exits non-zero with
// one line naming the bad key. SIGTERM/SIGINT stop it gracefully (mounts and devices are left alone).
import { Command } from 'commander';
import { loadConfig, resolveConfigPath } from '../config';
import { stderrLogger } from '../snapshotter/log';
import { OverlaybdHooks } from '../snapshotter/overlaybd/hooks';
import { SnapshotterServer } from '../snapshotter/server';

export async function runSnapshotter(configFlag?: string): Promise<void> {
  const cfg = loadConfig(resolveConfigPath(configFlag));
  const log = stderrLogger(cfg.verbose);
  const server = await SnapshotterServer.start(cfg, log, [new OverlaybdHooks(cfg, log)]);
  await new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      if (++signals > 1) {
        log.log('warn', 'second signal: exiting now', { signal: sig });
        process.exit(1);
      }
      log.log('info', 'stopping', { signal: sig });
      server.stop().then(resolve, (err: Error) => {
        log.log('error', 'stop failed', { err: err.message });
        resolve();
      });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
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
