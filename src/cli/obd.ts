#!/usr/bin/env node
// `obd`: one binary, one subcommand group per concern; each group lives in its own file.
import { Command, CommanderError } from 'commander';

type Register = (program: Command) => void;

// Each group is loaded only when its command runs (or for help): a group pulls in its whole stack
// (gRPC, undici, protobuf, the converter), and `obd deviced` restarting under running containers
// should not wait for modules it never uses.
/* eslint-disable @typescript-eslint/no-var-requires */
const GROUPS: Array<[commands: string[], load: () => Register]> = [
  [['layer'], () => require('./layer').registerLayerCommands],
  [['deviced', 'device'], () => require('./device').registerDeviceCommands],
  [['snapshotter'], () => require('./snapshotter').registerSnapshotterCommand],
  [['rpull'], () => require('./rpull').registerRpullCommand],
  [['record-trace'], () => require('./record-trace').registerRecordTraceCommand],
  [['doctor'], () => require('./doctor').registerDoctorCommand],
];
/* eslint-enable @typescript-eslint/no-var-requires */

/** The `obd` program; with `command` given, only the group serving it is loaded (all otherwise). */
export function buildObdProgram(command?: string): Command {
  const program = new Command('obd')
    .description('lazy overlaybd images for containerd')
    .showHelpAfterError(false)
    .exitOverride();
  const only = GROUPS.find(([names]) => command !== undefined && names.includes(command));
  for (const [, load] of only ? [only] : GROUPS) load()(program);
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
  runCli(buildObdProgram(process.argv[2]), process.argv).then((code) => {
    process.exitCode = code;
  });
}
