// `obd rpull [--address SOCK] [--namespace NS] [--plain-http] IMAGE`: register an overlaybd image in
// containerd without downloading its layers (accelerated-container-image's `ctr rpull`); given a
// plain image, the overlaybd image that refers to it (docs/obdconv.md).
import { Command } from 'commander';
import { parseReference } from '../registry';
import { credentialsFromFlags } from './credentials';
import { rpull } from '../rpull/rpull';

interface Opts {
  address: string;
  namespace: string;
  snapshotter: string;
  plainHttp: boolean;
  user?: string;
  credentialFile?: string;
}

export function registerRpullCommand(program: Command): void {
  program
    .command('rpull')
    .description('register an overlaybd image in containerd for lazy loading: fetches manifest and config only')
    .argument('<image>', 'image reference, e.g. registry.example.com/app:v1 (a plain image: its overlaybd referrer)')
    .option('-a, --address <socket>', "containerd's socket", process.env.CONTAINERD_ADDRESS || '/run/containerd/containerd.sock')
    .option('-n, --namespace <ns>', 'containerd namespace', process.env.CONTAINERD_NAMESPACE || 'default')
    .option('--snapshotter <name>', 'proxy snapshotter name in containerd', process.env.CONTAINERD_SNAPSHOTTER || 'obd')
    .option('--plain-http', 'talk http to the registry', false)
    .option('-u, --user <user[:password]>', 'registry credentials')
    .option('--credential-file <file>', 'docker config.json with registry credentials')
    .action(async (image: string, o: Opts) => {
      const creds = credentialsFromFlags(o, [parseReference(image).host]);
      const t0 = Date.now();
      const r = await rpull(image, {
        address: o.address,
        namespace: o.namespace,
        snapshotter: o.snapshotter,
        plainHttp: o.plainHttp,
        credentials: creds,
        log: (l) => process.stderr.write(l + '\n'),
      });
      process.stderr.write(`${r.name}: ${r.layers.length} remote layers, ${r.downloadedBytes} bytes downloaded in ${Date.now() - t0} ms\n`);
      process.stdout.write('done\n');
    });
}
