#!/usr/bin/env node
// `obdconv SRC DST`: convert an OCI image into an overlaybd image.
import { Command } from 'commander';
import { runCli } from './obd';

export function buildObdconvProgram(): Command {
  return new Command('obdconv').description('convert OCI images into overlaybd images').exitOverride();
}

if (require.main === module) {
  runCli(buildObdconvProgram(), process.argv).then((code) => {
    process.exitCode = code;
  });
}
