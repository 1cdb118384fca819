// `obd device …` commands.
import { Command } from 'commander';

export function registerDeviceCommands(program: Command): void {
  void program;
}
