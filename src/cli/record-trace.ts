// `obd record-trace [options] IMAGE [COMMAND...]`: record the blob ranges an overlaybd image's
// workload reads at start (trace format: src/trace/trace.ts, README); replay with the snapshot label
// containerd.io/snapshot/overlaybd/record-trace-path=<file>.
import path from 'node:path';
import { Command } from 'commander';
import { loadConfig, resolveConfigPath, traceDirOf } from '../config';
import { CredentialStore } from '../registry';
import { rpull } from '../rpull/rpull';
import { recordTrace } from '../trace/record';

interface Opts {
  address: string;
  namespace: string;
  snapshotter: string;
  output?: string;
  time: string;
  plainHttp: boolean;
  pull: boolean;
  runcRoot?: string;
  config?: string;
}

export function registerRecordTraceCommand(program: Command): void {
  program
    .command('record-trace')
    .description('run an overlaybd image once and record the blob ranges it reads (for prefetch)')
    .argument('<image>', 'image reference')
    .argument('[command...]', 'command to run instead of the image default')
    .option('-a, --address <socket>', "containerd's socket", process.env.CONTAINERD_ADDRESS || '/run/containerd/containerd.sock')
    .option('-n, --namespace <ns>', 'containerd namespace', process.env.CONTAINERD_NAMESPACE || 'default')
    .option('--snapshotter <name>', 'proxy snapshotter name in containerd', process.env.CONTAINERD_SNAPSHOTTER || 'obd')
    .option('-o, --output <file>', "trace file, inside the snapshotter's traceDir (default: <traceDir>/<image name>.trace)")
    .option('--config <file>', 'obd config (for traceDir; default $OBD_CONFIG, else /etc/obd/config.json)')
    .option('--time <seconds>', 'stop the workload after this long', '60')
    .option('--plain-http', 'talk http to the registry (for the rpull)', false)
    .option('--no-pull', 'the image is registered already: skip the rpull')
    .option('--runc-root <dir>', 'runc root (passed to ctr run)')
    .action(async (image: string, command: string[], o: Opts) => {
      const timeSec = Number(o.time);
      if (!Number.isFinite(timeSec) || timeSec <= 0) throw new Error(`--time ${o.time}: must be a positive number of seconds`);
      if (o.pull)
        await rpull(image, { address: o.address, namespace: o.namespace, snapshotter: o.snapshotter, plainHttp: o.plainHttp, credentials: new CredentialStore() });
      const output =
        o.output ?? path.join(traceDirOf(loadConfig(resolveConfigPath(o.config))), `${image.replace(/^.*\//, '').replace(/[^A-Za-z0-9_.-]/g, '_')}.trace`);
      const r = await recordTrace(image, {
        address: o.address, namespace: o.namespace, snapshotter: o.snapshotter, output, timeSec, runcRoot: o.runcRoot, command,
        log: (l) => process.stderr.write(`record-trace: ${l}\n`),
      });
      process.stderr.write(`record-trace: ${r.ranges} ranges, ${r.bytes} bytes in ${r.seconds.toFixed(1)} s\n`);
      process.stdout.write(`${output}\n`);
    });
}
