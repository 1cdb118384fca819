#!/usr/bin/env node
// `obd`: one binary, one subcommand group per concern; each group lives in its own file.
import { Command, CommanderError } from 'commander';
import { registerLayerCommands } from './layer';
import { registerDeviceCommands } from './device';
import { registerSnapshotterCommand } from './snapshotter';
import { registerRpullCommand } from './rpull';
import { registerRecordTraceCommand } from './record-trace';
import { registerDoctorCommand } from './doctor';

export function buildObdProgram(): Command {
  const program = new Command('obd')
    .description('lazy overlaybd images for containerd')
    .showHelpAfterError(false)
    .exitOverride();
  registerLayerCommands(program);
  registerDeviceCommands(program);
  registerSnapshotterCommand(program);
  registerRpullCommand(program);
  registerRecordTraceCommand(program);
  registerDoctorCommand(program);
  return program;
}

export async function runCli(program: Command, argv: string[]): Promise<number> {
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version exit through here with code 0; usage errors already printed one line.
      return err.exitCode;
    }
    const e = err as Error;
    process.stderr.write(`${program.name()}: ${e.message}\n`);
    return 1;
  }
}

if (require.main === module) {
  runCli(buildObdProgram(), process.argv).then((code) => {
    process.exitCode = code;
  });
}
