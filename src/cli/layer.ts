// `obd layer …`: the overlaybd layer tools (create, commit, info, export; zfile/unzfile live in
// layer-zfile.ts). Options follow overlaybd-create / overlaybd-commit where those tools have them.
import { Command, InvalidArgumentError, Option } from 'commander';
import { commitLayer, createWritableLayer, layerInfo, LayerInfo, openStack, ZFileAlgorithm } from '../addon';
import { parseBlockSize, registerZFileCommands } from './layer-zfile';

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** Parses a size such as `64G`, `512M`, `1GiB` or a plain byte count; must be a multiple of 512. */
export function parseSize(text: string): number {
  const m = /^(\d+)\s*([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (!m) throw new InvalidArgumentError(`expected a size like 64G or 67108864, got '${text}'`);
  const bytes = Number(m[1]) * UNITS[m[2].toLowerCase()];
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % 512 !== 0) {
    throw new InvalidArgumentError(`size must be a positive multiple of 512 bytes, got '${text}'`);
  }
  return bytes;
}

function parseUpper(text: string): { data: string; index: string } {
  const parts = text.split(',');
  if (parts.length !== 2 || !parts[0] || !parts[1]) {
    throw new InvalidArgumentError(`expected <data>,<index>, got '${text}'`);
  }
  return { data: parts[0], index: parts[1] };
}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1 && v % 1024 === 0) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v} ${units[i]} (${n} bytes)`;
}

/** The summary `obd layer info` prints (also the top-level keys of its --json output). */
export function summarize(file: string, info: LayerInfo) {
  const h = info.trailer ?? info.header;
  // A writable data file has no index of its own: its extents are in the matching index file.
  const indexed = !info.formats[info.formats.length - 1].startsWith('lsmt-rw-data');
  return {
    file,
    type: info.formats.join('+'),
    uuid: h?.uuid ?? null,
    parentUuid: h?.parentUuid ?? null,
    virtualSize: h?.virtualSize ?? null,
    extentCount: indexed ? info.extentCount : null,
    zeroedExtents: indexed ? info.zeroedCount : null,
    dataBytes: indexed ? info.dataBytes : null,
    userTag: h?.userTag ?? null,
    compression: info.zfile ? info.zfile.algorithm : 'none',
    blockSize: info.zfile ? info.zfile.blockSize : null,
    checksums: info.zfile ? info.zfile.verify : null,
  };
}

function printInfo(s: ReturnType<typeof summarize>): void {
  const rows: [string, string][] = [
    ['file', s.file],
    ['type', s.type],
    ['uuid', s.uuid ?? '-'],
    ['parent uuid', s.parentUuid ?? '-'],
    ['virtual size', s.virtualSize === null ? '-' : formatBytes(s.virtualSize)],
    ['extents', s.extentCount === null ? '- (in the index file)' : `${s.extentCount} (${s.zeroedExtents} zeroed, ${s.dataBytes} data bytes)`],
    ['compression', s.compression],
  ];
  if (s.blockSize !== null) rows.push(['block size', String(s.blockSize)], ['checksums', s.checksums ? 'yes' : 'no']);
  if (s.userTag) rows.push(['user tag', s.userTag]);
  for (const [k, v] of rows) process.stdout.write(`${(k + ':').padEnd(14)}${v}\n`);
}

export function registerLayerCommands(program: Command): void {
  const layer = program.command('layer').description('overlaybd layer tools (LSMT, ZFile)');

  layer
    .command('create')
    .description('create a writable layer (data + index file), as overlaybd-create')
    .argument('<data>', 'data file to create')
    .argument('<index>', 'index file to create')
    .requiredOption('--vsize <size>', 'virtual disk size, e.g. 64G', parseSize)
    .option('-u, --uuid <uuid>', 'uuid of the new layer (default: random)')
    .option('-p, --parent-uuid <uuid>', 'uuid of the layer below')
    .action((data: string, index: string, o: { vsize: number; uuid?: string; parentUuid?: string }) => {
      const uuid = createWritableLayer(data, index, { vsize: o.vsize, uuid: o.uuid, parentUuid: o.parentUuid });
      process.stdout.write(`${uuid}\n`);
    });

  layer
    .command('commit')
    .description('seal a writable layer into a layer blob, as overlaybd-commit')
    .argument('<data>', 'writable layer data file')
    .argument('<index>', 'writable layer index file')
    .argument('<out>', 'output blob (overwritten)')
    .option('--uuid <uuid>', 'uuid of the committed layer (default: null uuid, as upstream)')
    .option('-p, --parent-uuid <uuid>', 'parent uuid (default: taken from the writable layer)')
    .option('-m, --user-tag <text>', 'commit message stored in the header (at most 256 bytes)')
    .option('-z, --zfile', 'compress the output as ZFile')
    .addOption(new Option('--algorithm <alg>', 'ZFile algorithm (with --zfile)').choices(['lz4', 'zstd']))
    .option('--bs <size>', 'ZFile block size 4k..64k (with --zfile)', parseBlockSize)
    .action(
      (
        data: string,
        index: string,
        out: string,
        o: { uuid?: string; parentUuid?: string; userTag?: string; zfile?: boolean; algorithm?: ZFileAlgorithm; bs?: number },
      ) => {
        if (!o.zfile && (o.algorithm || o.bs)) throw new Error('--algorithm and --bs need --zfile');
        const r = commitLayer(data, index, out, {
          uuid: o.uuid,
          parentUuid: o.parentUuid,
          userTag: o.userTag,
          zfile: o.zfile ? { algorithm: o.algorithm ?? 'lz4', blockSize: o.bs ?? 4096 } : undefined,
        });
        process.stdout.write(`${out}: ${r.extents} extents, ${r.bytes} bytes of LSMT${o.zfile ? ' (ZFile-compressed)' : ''}\n`);
      },
    );

  layer
    .command('info')
    .description('identify a layer file and print its header fields')
    .argument('<file>', 'layer blob, writable data/index file, ZFile or tar-wrapped blob')
    .option('--json', 'print JSON (summary plus every decoded field)')
    .action((file: string, o: { json?: boolean }) => {
      const info = layerInfo(file);
      const s = summarize(file, info);
      if (o.json) process.stdout.write(JSON.stringify({ ...s, details: info }, null, 2) + '\n');
      else printInfo(s);
    });

  layer
    .command('export')
    .description('flatten a layer stack into a sparse raw disk image')
    .argument('<lower...>', 'lower layers, bottom-most first')
    .option('--upper <data,index>', 'writable layer on top', parseUpper)
    .requiredOption('-o, --output <file>', 'raw image to write (sparse, full virtual size)')
    .action((lowers: string[], o: { upper?: { data: string; index: string }; output: string }) => {
      const stack = openStack({ lowers, upper: o.upper });
      try {
        const written = stack.exportRaw(o.output);
        process.stdout.write(`${o.output}: ${stack.size()} bytes virtual, ${written} bytes of data\n`);
      } finally {
        stack.close();
      }
    });

  registerZFileCommands(layer);
}
