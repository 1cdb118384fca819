#!/usr/bin/env node
// `obdconv SRC [DST]`: convert an OCI image (or every platform of an index) into an overlaybd image.
// Options follow accelerated-container-image's converters (docs/obdconv.md).
import { Command, InvalidArgumentError, Option } from 'commander';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCli } from './obd';
import { ConversionCache } from '../convert/cache';
import { convertImage } from '../convert/converter';
import { convertImageOrIndex, type ImageConvertOptions } from '../convert/image-index';
import { ConvertOptionError } from '../convert/errors';
import { convertTurboImage } from '../convert/turbo';
import { ProgressPrinter } from '../convert/progress';
import { defaultPlatform, openStore } from '../convert/store';
import { credentialsFromFlags } from './credentials';
import { RegistryClient, parseReference, type Platform } from '../registry';

function intArg(name: string, min: number, max: number) {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) throw new InvalidArgumentError(`${name} must be an integer in [${min}, ${max}]`);
    return n;
  };
}

function boolArg(v: string): boolean {
  if (v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw new InvalidArgumentError('expected true or false');
}

function parsePlatform(v: string): Platform {
  const [osName, architecture, variant, extra] = v.trim().split('/');
  if (!osName || !architecture || extra !== undefined) throw new InvalidArgumentError(`"${v}": expected OS/ARCH[/VARIANT]`);
  return { os: osName, architecture, ...(variant ? { variant } : {}) };
}

/** `--platform` may repeat and may hold a comma-separated list. */
function collectPlatforms(v: string, prev: Platform[] = []): Platform[] {
  return [...prev, ...v.split(',').filter((p) => p.trim()).map(parsePlatform)];
}

const defaultBaseLayers = ['/opt/overlaybd/baselayers/ext4_64'];

interface Opts {
  fstype: string; algorithm: 'lz4' | 'zstd' | 'none'; bs: number; vsize: number; mkfs: boolean; baseLayer?: string;
  plainHttp: boolean; user?: string; concurrency: number; cacheDir: string; json: boolean; oci: boolean; platform?: Platform[];
  credentialFile?: string; maxEntries: number; turboOci: boolean; referrer: boolean;
}

export function buildObdconvProgram(): Command {
  const program = new Command('obdconv')
    .description('convert OCI images (every platform of an index) into overlaybd images (SRC/DST: registry reference or oci:DIR[:TAG])')
    .argument('<src>', 'source image or index')
    .argument('[dst]', 'destination image (optional with --referrer: SRC\'s repository, no tag)')
    .addOption(new Option('--fstype <fs>', 'filesystem of the image').default('ext4').choices(['ext4']))
    .addOption(new Option('--algorithm <algo>', 'ZFile compression of the layer blobs').default('lz4').choices(['lz4', 'zstd', 'none']))
    .option('--bs <KiB>', 'ZFile block size in KiB (4, 8, 16, 32, 64)', intArg('--bs', 4, 64), 4)
    .option('--vsize <GiB>', 'virtual size of the block device in GiB', intArg('--vsize', 1, 16384), 64)
    .option('--mkfs <bool>', 'make the filesystem in the first layer (false: use the upstream ext4_64 base layer)', boolArg, true)
    .option('--base-layer <file>', 'the ext4_64 base layer file for --mkfs=false')
    .option('--plain-http', 'talk http (not https) to the registries of SRC and DST', false)
    .option('-u, --user <user[:password]>', 'registry credentials')
    .option('--credential-file <file>', 'docker config.json with registry credentials', path.join(os.homedir(), '.docker', 'config.json'))
    .option('--concurrency <n>', 'parallel downloads and uploads', intArg('--concurrency', 1, 64), 4)
    .option('--cache-dir <dir>', 'conversion cache (layer blobs by source chain id)', '/var/lib/obd/obdconv')
    .option('--platform <os/arch[/variant],...>', 'platforms to convert from an index (repeatable; default: all; others are left out)', collectPlatforms)
    .option('--oci', 'write an OCI manifest (default: Docker schema2, as ACI)', false)
    .option('--referrer', 'push the result as a referrer of the source (OCI subject + artifactType; implies --oci)', false)
    .option('--max-entries <n>', 'refuse layers with more tar entries than this', intArg('--max-entries', 1, 1e9), 10_000_000)
    .option('--turbo-oci', 'TurboOCI: keep the source layers, add only filesystem metadata and gzip indexes', false)
    .option('--json', 'print a JSON summary on stdout instead of progress', false)
    .exitOverride()
    .action(async (src: string, dst: string | undefined, o: Opts) => {
      await run(src, dst, o);
    });
  return program;
}

function bsBytes(kib: number): number {
  if (![4, 8, 16, 32, 64].includes(kib)) throw new InvalidArgumentError('--bs must be 4, 8, 16, 32 or 64');
  return kib * 1024;
}

/**
 * Where the result goes and whether DST's tag names it. A referrer lives in its subject's
 * repository, needs no tag, and must not take SRC's own tag.
 */
function destination(src: string, dst: string | undefined, referrer: boolean): { dst: string; tag: boolean } {
  if (!referrer) {
    if (!dst) throw new ConvertOptionError('DST is required (it may be left out only with --referrer)');
    return { dst, tag: true };
  }
  if (src.startsWith('oci:') || dst?.startsWith('oci:')) throw new ConvertOptionError('--referrer needs registry references: an OCI layout keeps no referrers');
  const s = parseReference(src);
  if (!dst) return { dst: src, tag: false };
  const d = parseReference(dst);
  if (d.host !== s.host || d.repo !== s.repo) {
    throw new ConvertOptionError(`--referrer: DST ${dst} must be in SRC's repository ${s.host}/${s.repo} (referrers are listed per repository)`);
  }
  const tagged = /:[^/]+$/.test(dst.split('@')[0]) && !d.digest;
  if (tagged && d.tag === s.tag && !s.digest) throw new ConvertOptionError(`--referrer: DST ${dst} would move SRC's own tag; give another tag or none`);
  return { dst, tag: tagged };
}

async function run(src: string, dstArg: string | undefined, o: Opts): Promise<void> {
  const { dst, tag } = destination(src, dstArg, o.referrer);
  const hosts = [src, dst].filter((s) => !s.startsWith('oci:')).map((s) => parseReference(s).host);
  let client: RegistryClient | undefined;
  const getClient = () => {
    if (!client) {
      const creds = credentialsFromFlags(o, hosts);
      client = new RegistryClient({ credentials: creds, plainHttpHosts: o.plainHttp ? hosts : [], operationDeadlineMs: 3_600_000,
        requestTimeoutMs: 300_000 });
    }
    return client;
  };
  const baseLayer = o.baseLayer ?? defaultBaseLayers.find((f) => fs.existsSync(f));
  for (const line of new ConversionCache(o.cacheDir).sweepStale()) process.stderr.write(`obdconv: cleanup after a killed run: ${line}\n`);
  const abort = new AbortController();
  const onSignal = () => abort.abort(new Error('interrupted'));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const printer = o.json ? undefined : new ProgressPrinter(process.stderr, !!process.stderr.isTTY);
  const source = openStore(src, getClient);
  const target = openStore(dst, getClient);
  const opts: ImageConvertOptions = {
    fstype: o.fstype, algorithm: o.algorithm, blockSize: bsBytes(o.bs), vsizeGB: o.vsize, mkfs: o.mkfs, baseLayer,
    concurrency: o.concurrency, cacheDir: o.cacheDir, manifestKind: o.oci || o.referrer ? 'oci' : 'docker',
    platform: o.platform?.[0] ?? defaultPlatform(), platforms: o.platform ?? [], referrer: o.referrer, tag,
    limits: { maxEntries: o.maxEntries }, signal: abort.signal, onEvent: printer ? (ev) => printer.onEvent(ev) : undefined,
  };
  try {
    const result = await convertImageOrIndex(source, target, opts, o.turboOci ? convertTurboImage : convertImage).catch((err: unknown) => {
      if (abort.signal.aborted) throw new Error('interrupted: nothing was tagged; partial work removed');
      throw err;
    });
    if (o.json) process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    else printer!.finish(result);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await client?.close();
  }
}

if (require.main === module) {
  runCli(buildObdconvProgram(), process.argv).then((code) => {
    process.exitCode = code;
  });
}
