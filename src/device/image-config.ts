// The per-device config, overlaybd's config.v1.json (docs/formats.md): parsing with
// errors that name the bad key, and resolving each lower to what the data path can open.
import fs from 'node:fs';
import path from 'node:path';
import { DeviceError } from './errors';
import { openRegularFileSync, UntrustedFileError } from '../untrusted-file';

export interface LayerConfig {
  file?: string;
  dir?: string;
  digest?: string;
  size?: number;
  targetFile?: string;
  targetDigest?: string;
  gzipIndex?: string;
}

export interface UpperConfig {
  index?: string;
  data?: string;
  target?: string;
  gzipIndex?: string;
}

export interface ImageConfig {
  repoBlobUrl?: string;
  lowers?: LayerConfig[];
  upper?: UpperConfig;
  resultFile?: string;
  accelerationLayer?: boolean;
  recordTracePath?: string;
  download?: Record<string, unknown>;
  /** obd extension (ignored by overlaybd): serve a raw disk image; used by benchmarks as a baseline. */
  rawImage?: { file: string; writable?: boolean };
  [key: string]: unknown;
}

/** Upstream's MAX_LAYER_CNT. */
export const MAX_LAYERS = 256;

/**
 * Where overlaybd looks for a downloaded/committed blob inside a layer's `dir`, in its order. A layer
 * obd sealed itself is named by its config's `file` (obd's metadata), never found by scanning a dir
 * that a layer tar could have filled.
 */
const DIR_CANDIDATES = ['overlaybd.commit', '.commit'];

function invalid(msg: string): DeviceError {
  return new DeviceError('InvalidArgument', `config.v1.json: ${msg}`);
}

function optString(o: Record<string, unknown>, key: string, where: string): void {
  if (o[key] !== undefined && typeof o[key] !== 'string') throw invalid(`"${where}${key}" must be a string`);
}

/** Validates the shape; unknown keys are kept (overlaybd ignores them too). */
export function parseImageConfig(text: string, source: string): ImageConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw invalid(`${source}: invalid JSON: ${(err as Error).message}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw invalid(`${source}: must hold a JSON object`);
  const c = json as Record<string, unknown>;
  for (const k of ['repoBlobUrl', 'resultFile', 'recordTracePath']) optString(c, k, '');
  if (c.lowers !== undefined && c.lowers !== null) {
    if (!Array.isArray(c.lowers)) throw invalid('"lowers" must be an array');
    if (c.lowers.length > MAX_LAYERS) throw invalid(`"lowers" has ${c.lowers.length} entries; at most ${MAX_LAYERS}`);
    c.lowers.forEach((l, i) => {
      if (typeof l !== 'object' || l === null || Array.isArray(l)) throw invalid(`"lowers[${i}]" must be an object`);
      const o = l as Record<string, unknown>;
      for (const k of ['file', 'dir', 'digest', 'targetFile', 'targetDigest', 'gzipIndex']) optString(o, k, `lowers[${i}].`);
      if (o.size !== undefined && (typeof o.size !== 'number' || !Number.isInteger(o.size) || o.size < 0))
        throw invalid(`"lowers[${i}].size" must be a non-negative integer`);
      if (!o.file && !o.dir && !o.digest) throw invalid(`"lowers[${i}]" needs "file", "dir" or "digest"`);
    });
  }
  if (c.upper !== undefined && c.upper !== null) {
    if (typeof c.upper !== 'object' || Array.isArray(c.upper)) throw invalid('"upper" must be an object');
    const u = c.upper as Record<string, unknown>;
    for (const k of ['index', 'data', 'target', 'gzipIndex']) optString(u, k, 'upper.');
    if (u.data && !u.index) throw invalid('"upper.data" is set but "upper.index" is missing: a writable layer needs both');
    if (u.index && !u.data) throw invalid('"upper.index" is set but "upper.data" is missing: a writable layer needs both');
  }
  if (c.rawImage !== undefined) {
    const r = c.rawImage as Record<string, unknown>;
    if (typeof r !== 'object' || r === null || typeof r.file !== 'string') throw invalid('"rawImage.file" must be a string');
  }
  const lowers = (c.lowers as unknown[] | undefined) ?? [];
  const upper = c.upper as UpperConfig | undefined;
  if (lowers.length === 0 && !upper?.data && c.rawImage === undefined) throw invalid('no "lowers" and no "upper": nothing to attach');
  return c as ImageConfig;
}

/** `fd`: the opened layer file (the caller closes it); the data path opens it through /proc/self/fd. */
export type ResolvedLower =
  | { kind: 'file'; path: string; fd: number }
  | { kind: 'remote'; url: string; digest: string; size: number }
  /** TurboOCI: a local fs meta whose file data lives in the target (the original layer blob, gzip'd or not). */
  | { kind: 'turbo'; meta: string; target: { kind: 'file'; path: string } | { kind: 'remote'; url: string; digest: string }; gzipIndex?: string };

function resolveTurbo(cfg: ImageConfig, l: LayerConfig, i: number): ResolvedLower {
  if (!l.file) throw invalid(`lowers[${i}] is a TurboOCI layer (targetFile/targetDigest) but has no "file" (its fs meta)`);
  if (!fs.existsSync(l.file)) throw new DeviceError('NotFound', `lowers[${i}]: TurboOCI fs meta ${l.file} does not exist`);
  if (l.gzipIndex && !fs.existsSync(l.gzipIndex)) throw new DeviceError('NotFound', `lowers[${i}]: gzip index ${l.gzipIndex} does not exist`);
  const gz = l.gzipIndex ? { gzipIndex: l.gzipIndex } : {};
  if (l.targetFile && fs.existsSync(l.targetFile)) return { kind: 'turbo', meta: l.file, target: { kind: 'file', path: l.targetFile }, ...gz };
  if (l.targetDigest) {
    if (!/^sha256:[0-9a-f]{64}$/.test(l.targetDigest)) throw invalid(`"lowers[${i}].targetDigest" is not a sha256 digest`);
    if (!cfg.repoBlobUrl) throw invalid(`lowers[${i}] has targetDigest ${l.targetDigest} but "repoBlobUrl" is empty`);
    const url = `${cfg.repoBlobUrl.replace(/\/+$/, '')}/${l.targetDigest}`;
    return { kind: 'turbo', meta: l.file, target: { kind: 'remote', url, digest: l.targetDigest }, ...gz };
  }
  throw new DeviceError('NotFound', `lowers[${i}]: TurboOCI target file ${l.targetFile} does not exist and no "targetDigest" is given`);
}

/** Opens a lower's file without following symlinks or blocking on FIFOs; only regular files are layers. */
function openLower(file: string, i: number): number | undefined {
  try {
    return openRegularFileSync(file);
  } catch (err) {
    if (err instanceof UntrustedFileError) throw new DeviceError('InvalidArgument', `lowers[${i}]: ${err.message}: a layer blob must be a regular file`);
    throw err;
  }
}

/**
 * Picks, per lower, what overlaybd would open: `file`, then a blob in `dir`, then the registry. Local
 * files come back opened; on error every descriptor opened so far is closed.
 */
export function resolveLowers(cfg: ImageConfig): ResolvedLower[] {
  const out: ResolvedLower[] = [];
  try {
    (cfg.lowers ?? []).forEach((l, i) => out.push(resolveLower(cfg, l, i)));
  } catch (err) {
    closeLowers(out);
    throw err;
  }
  return out;
}

export function closeLowers(lowers: ResolvedLower[]): void {
  for (const l of lowers) if (l.kind === 'file') fs.closeSync(l.fd);
}

function resolveLower(cfg: ImageConfig, l: LayerConfig, i: number): ResolvedLower {
  if (l.targetFile || l.targetDigest) return resolveTurbo(cfg, l, i);
  if (l.gzipIndex) throw invalid(`"lowers[${i}].gzipIndex" is set without "targetFile" or "targetDigest"`);
  if (l.file) {
    const fd = openLower(l.file, i);
    if (fd !== undefined) return { kind: 'file', path: l.file, fd };
  }
  if (l.dir) {
    for (const name of DIR_CANDIDATES) {
      const p = path.join(l.dir, name);
      const fd = openLower(p, i);
      if (fd !== undefined) return { kind: 'file', path: p, fd };
    }
  }
  if (l.digest) {
    if (!cfg.repoBlobUrl) throw invalid(`lowers[${i}] has digest ${l.digest} but no local file and "repoBlobUrl" is empty`);
    return { kind: 'remote', url: `${cfg.repoBlobUrl.replace(/\/+$/, '')}/${l.digest}`, digest: l.digest, size: l.size ?? 0 };
  }
  if (l.file) throw new DeviceError('NotFound', `lowers[${i}]: layer file ${l.file} does not exist`);
  throw new DeviceError('NotFound', `lowers[${i}]: no layer blob in ${l.dir} (looked for ${DIR_CANDIDATES.join(', ')})`);
}

/** Writes `success` or `failed:<message>` to the config's resultFile, as overlaybd does (no newline). */
export function writeResultFile(cfg: ImageConfig, error?: string): void {
  if (!cfg.resultFile) return;
  try {
    fs.writeFileSync(cfg.resultFile, error === undefined ? 'success' : `failed:${error}`);
  } catch {
    // The result file is a courtesy to the caller; the RPC answer carries the same outcome.
  }
}
