// `obd layer zfile` / `obd layer unzfile`: ZFile compression of single files.
import { Command } from 'commander';

export function registerZFileCommands(layer: Command): void {
  void layer;
}
