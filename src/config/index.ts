// The one config.json for `obd snapshotter` and `obd deviced`. Every key of accelerated-container-image's
// snapshotter config keeps its name, meaning and default (an existing /etc/overlaybd-snapshotter/config.json
// loads unchanged); our additions take their names from overlaybd's overlaybd.json where one exists.
import fs from 'node:fs';
import path from 'node:path';
import { applySchema, ConfigError, Schema } from './schema';

export { ConfigError } from './schema';

export const DEFAULT_CONFIG_PATH = '/etc/obd/config.json';
export const CONFIG_ENV = 'OBD_CONFIG';

export type RwMode = 'overlayfs' | 'dir' | 'dev';
export type Transport = 'auto' | 'tcmu' | 'fuse-loop';
/** fuse-loop: page = the FUSE file's page cache serves the loop device; direct = no cache between them. */
export type DeviceCache = 'auto' | 'page' | 'direct';

export interface MirrorRegistry {
  host: string;
  insecure: boolean;
}

export interface ObdConfig {
  // accelerated-container-image keys
  root: string;
  address: string;
  verbose: string;
  logReportCaller: boolean;
  rwMode: RwMode;
  autoRemoveDev: boolean;
  exporterConfig: { enable: boolean; uriPrefix: string; port: number; address: string; snapshotterPort: number };
  writableLayerType: 'append' | 'sparse';
  mirrorRegistry: MirrorRegistry[] | null;
  defaultFsType: string;
  rootfsQuota: string;
  tenant: number;
  turboFsType: string[];
  asyncRemove: boolean;
  runtimeType: 'containerd' | 'docker';
  // obd keys
  deviceAddress: string;
  transport: Transport;
  /** fuse-loop: serve requests through FUSE over io_uring when the kernel offers it (opt-in: restarts). */
  fuseIoUring: boolean;
  /** fuse-loop: how a device's loop device reaches deviced; auto = page when all its lowers are local. */
  deviceCache: DeviceCache;
  /** deviced: range GETs of remote blobs with libcurl on a native thread once JS resolved the blob. */
  nativeFetch: boolean;
  cacheConfig: { cacheDir: string; cacheSizeGB: number; refillSize: number; blockSize: number; readAheadSize: number };
  gzipCacheConfig: { enable: boolean; cacheDir: string; cacheSizeGB: number; refillSize: number; memoryMB: number };
  download: { enable: boolean; delay: number; delayExtra: number; maxMBps: number; tryCnt: number; blockSize: number };
  credentialFile: string;
  allowedLowerPrefixes: string[];
  /** Where record-trace-path labels may point ('' = <root>/traces); see traceDirOf. */
  traceDir: string;
  /** Largest virtual size (GiB) the vsize label may ask for a writable device. */
  maxVsizeGB: number;
}

/** The directory trace files of record-trace-path labels must be in. */
export function traceDirOf(cfg: Pick<ObdConfig, 'traceDir' | 'root'>): string {
  return path.resolve(cfg.traceDir || path.join(cfg.root, 'traces'));
}

const oneOf =
  (...allowed: string[]) =>
  (v: string): string | undefined =>
    allowed.includes(v) ? undefined : `must be one of ${allowed.join(', ')}`;

const absolutePath = (v: string): string | undefined =>
  path.isAbsolute(v) ? undefined : 'must be an absolute path';

const optionalAbsolutePath = (v: string): string | undefined => (v === '' ? undefined : absolutePath(v));

const quota = (v: string): string | undefined =>
  v === '' || /^[0-9]+[kmgtKMGT]?$/.test(v) ? undefined : 'must be empty or a size such as "20g"';

const uriPrefix = (v: string): string | undefined => (v.startsWith('/') ? undefined : 'must start with "/"');

const SCHEMA: Schema = {
  root: { type: 'string', default: '/var/lib/containerd/io.containerd.snapshotter.v1.obd', check: absolutePath },
  address: { type: 'string', default: '/run/obd/snapshotter.sock', check: absolutePath },
  verbose: {
    type: 'string',
    default: 'info',
    check: oneOf('trace', 'debug', 'info', 'warn', 'warning', 'error', 'fatal', 'panic'),
  },
  logReportCaller: { type: 'boolean', default: false },
  rwMode: { type: 'string', default: 'overlayfs', check: oneOf('overlayfs', 'dir', 'dev') },
  autoRemoveDev: { type: 'boolean', default: false },
  exporterConfig: {
    type: 'object',
    nullable: true,
    fields: {
      enable: { type: 'boolean', default: false },
      uriPrefix: { type: 'string', default: '/metrics', check: uriPrefix },
      port: { type: 'integer', default: 9863, min: 1, max: 65535 },
      // obd: the interface both endpoints listen on (ACI and overlaybd listen on all of them)
      address: { type: 'string', default: '127.0.0.1', check: (v) => (v === '' ? 'must not be empty (0.0.0.0: every interface)' : undefined) },
      // obd: the snapshotter's own endpoint; `port` is deviced's
      snapshotterPort: { type: 'integer', default: 9864, min: 1, max: 65535 },
    },
  },
  writableLayerType: { type: 'string', default: 'append', check: oneOf('append', 'sparse') },
  mirrorRegistry: {
    type: 'objectArray',
    default: null,
    fields: {
      host: { type: 'string', default: '', check: (v) => (v === '' ? 'must not be empty' : undefined) },
      insecure: { type: 'boolean', default: false },
    },
  },
  defaultFsType: { type: 'string', default: 'ext4', check: oneOf('ext4', 'xfs', 'erofs', 'f2fs', 'ntfs') },
  rootfsQuota: { type: 'string', default: '', check: quota },
  tenant: { type: 'integer', default: -1, min: -1 },
  turboFsType: { type: 'stringArray', default: ['erofs', 'ext4'], check: oneOf('erofs', 'ext4') },
  asyncRemove: { type: 'boolean', default: false },
  runtimeType: { type: 'string', default: 'containerd', check: oneOf('containerd', 'docker') },

  deviceAddress: { type: 'string', default: '/run/obd/deviced.sock', check: absolutePath },
  transport: { type: 'string', default: 'auto', check: oneOf('auto', 'tcmu', 'fuse-loop') },
  fuseIoUring: { type: 'boolean', default: false },
  deviceCache: { type: 'string', default: 'auto', check: oneOf('auto', 'page', 'direct') },
  nativeFetch: { type: 'boolean', default: true },
  cacheConfig: {
    type: 'object',
    nullable: true,
    fields: {
      cacheDir: { type: 'string', default: '/var/lib/obd/cache', check: absolutePath },
      cacheSizeGB: { type: 'number', default: 8, min: 0 },
      refillSize: { type: 'integer', default: 262144, min: 4096 }, // overlaybd's default: a small read costs at most one unit
      blockSize: { type: 'integer', default: 65536, min: 512 },
      // obd: bytes fetched ahead of sequential reads of a remote blob (0: none)
      readAheadSize: { type: 'integer', default: 16 << 20, min: 0 },
    },
  },
  // overlaybd's cache of inflated TurboOCI target data; obd keeps inflated spans in memory
  gzipCacheConfig: {
    type: 'object',
    nullable: true,
    fields: {
      enable: { type: 'boolean', default: false },
      cacheDir: { type: 'string', default: '/var/lib/obd/gzip_cache', check: absolutePath },
      cacheSizeGB: { type: 'number', default: 4, min: 0 },
      refillSize: { type: 'integer', default: 1 << 20, min: 4096 }, // accepted; spans are the access-point distance
      // obd: memory per TurboOCI gzip layer for inflated spans when enabled (8 MiB when not)
      memoryMB: { type: 'integer', default: 64, min: 1 },
    },
  },
  download: {
    type: 'object',
    nullable: true,
    fields: {
      enable: { type: 'boolean', default: false },
      delay: { type: 'integer', default: 600, min: 0 },
      delayExtra: { type: 'integer', default: 30, min: 0 },
      maxMBps: { type: 'number', default: 100, min: 0 },
      tryCnt: { type: 'integer', default: 5, min: 1 },
      blockSize: { type: 'integer', default: 262144, min: 4096 },
    },
  },
  credentialFile: { type: 'string', default: '/root/.docker/config.json', check: optionalAbsolutePath },
  allowedLowerPrefixes: { type: 'stringArray', default: [], check: absolutePath },
  traceDir: { type: 'string', default: '', check: optionalAbsolutePath },
  maxVsizeGB: { type: 'integer', default: 64, min: 1 },
};

/** The defaults, as a complete config. */
export function defaultConfig(): ObdConfig {
  return applySchema(SCHEMA, {}, '') as unknown as ObdConfig;
}

/** Validates a parsed JSON value; `source` names the file in errors. */
export function parseConfig(json: unknown, source = 'config'): ObdConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(`${source}: must hold a JSON object`);
  }
  try {
    const cfg = applySchema(SCHEMA, json as Record<string, unknown>, '') as unknown as ObdConfig;
    // As ACI's main(): ext4 and erofs are always candidates for TurboOCI fs meta.
    for (const fsType of ['ext4', 'erofs']) if (!cfg.turboFsType.includes(fsType)) cfg.turboFsType.push(fsType);
    return cfg;
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(`${source}: ${err.message}`, err.key, err.value);
    throw err;
  }
}

/** Reads and validates a config file. A missing or unreadable file is an error, as in ACI. */
export function loadConfig(file: string): ObdConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new ConfigError(`config file ${file}: ${e.code === 'ENOENT' ? 'does not exist' : e.message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${file}: invalid JSON: ${(err as Error).message}`);
  }
  return parseConfig(json, `config file ${file}`);
}

/** --config wins, then $OBD_CONFIG, then /etc/obd/config.json. */
export function resolveConfigPath(flag?: string, env: NodeJS.ProcessEnv = process.env): string {
  return flag || env[CONFIG_ENV] || DEFAULT_CONFIG_PATH;
}
