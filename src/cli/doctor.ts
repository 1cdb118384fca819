// `obd doctor [--config F] [--json]`: the preflight an operator runs first. A table for people,
// JSON for scripts; the exit status is non-zero only when a blocker was found.
import { Command } from 'commander';
import { resolveConfigPath } from '../config';
import { runDoctor } from '../doctor/doctor';
import { renderTable } from '../doctor/report';

interface DoctorFlags {
  config?: string;
  json: boolean;
  containerdConfig: string;
  containerdAddress: string;
}

export function registerDoctorCommand(program: Command): void {
  program
    .command('doctor')
    .description('check this node for what obd needs: kernel, containerd config, sockets, config, cache')
    .option('-c, --config <file>', 'config.json (default: $OBD_CONFIG or /etc/obd/config.json)')
    .option('--containerd-config <file>', "containerd's config.toml", '/etc/containerd/config.toml')
    .option('--containerd-address <socket>', "containerd's socket", process.env.CONTAINERD_ADDRESS || '/run/containerd/containerd.sock')
    .option('--json', 'machine-readable output', false)
    .action(async (o: DoctorFlags) => {
      const r = await runDoctor({
        configPath: resolveConfigPath(o.config),
        containerdConfig: o.containerdConfig,
        containerdAddress: o.containerdAddress,
      });
      process.stdout.write(o.json ? JSON.stringify(r, null, 2) + '\n' : renderTable(r));
      const blockers = r.checks.filter((c) => c.status === 'blocker').length;
      if (blockers) throw new Error(`${blockers} blocker(s) found`);
    });
}
