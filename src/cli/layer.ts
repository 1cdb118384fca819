// `obd layer …` commands.
import { Command } from 'commander';

export function registerLayerCommands(program: Command): void {
  void program;
}
