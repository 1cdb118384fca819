// The long-running commands (`obd snapshotter`, `obd deviced`): load the config, serve, and stop
// gracefully on the first SIGTERM/SIGINT; a second signal exits at once.
import { loadConfig, resolveConfigPath, type ObdConfig } from '../config';
import { stderrLogger, type Logger } from '../log';

export async function serveUntilSignal(
  configFlag: string | undefined,
  start: (cfg: ObdConfig, log: Logger) => Promise<{ stop(): Promise<void> }>,
): Promise<void> {
  const cfg = loadConfig(resolveConfigPath(configFlag));
  const log = stderrLogger(cfg.verbose);
  const service = await start(cfg, log);
  await new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (sig: NodeJS.Signals) => {
      if (++signals > 1) {
        log.log('warn', 'second signal: exiting now', { signal: sig });
        process.exit(1);
      }
      log.log('info', 'stopping', { signal: sig });
      service.stop().then(resolve, (err: Error) => {
        log.log('error', 'stop failed', { err: err.message });
        resolve();
      });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
