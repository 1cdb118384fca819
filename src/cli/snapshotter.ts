// `obd snapshotter …` commands.
import { Command } from 'commander';

export function registerSnapshotterCommand(program: Command): void {
  void program;
}
