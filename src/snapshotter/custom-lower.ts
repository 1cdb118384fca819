// Label `containerd.io/snapshot/overlay-custom-add-lower.paths`: comma-separated absolute host
// directories added as the lowest lowerdirs of a snapshot's overlay mount. Only directories under a
// prefix of the config key `allowedLowerPrefixes` are accepted (none by default); symlinks are
// resolved before the check, so a link under an allowed prefix cannot point outside of it.
import fs from 'node:fs/promises';
import path from 'node:path';
import { invalidArgument } from './errors';

export const CUSTOM_LOWER_LABEL = 'containerd.io/snapshot/overlay-custom-add-lower.paths';

function under(p: string, prefix: string): boolean {
  const pre = prefix.length > 1 ? prefix.replace(/\/+$/, '') : prefix;
  return p === pre || p.startsWith(pre === '/' ? '/' : pre + '/');
}

async function realPrefixes(prefixes: readonly string[]): Promise<string[]> {
  return Promise.all(prefixes.map((p) => fs.realpath(p).catch(() => path.resolve(p))));
}

/** The validated (symlink-resolved) extra lowerdirs of a snapshot, lowest last; [] without the label. */
export async function customLowerDirs(labels: Record<string, string>, allowedPrefixes: readonly string[]): Promise<string[]> {
  const value = labels[CUSTOM_LOWER_LABEL];
  if (value === undefined || value === '') return [];
  const bad = (p: string, why: string) => invalidArgument(`label ${CUSTOM_LOWER_LABEL}: path ${JSON.stringify(p)} ${why}`);
  const allowed = await realPrefixes(allowedPrefixes);
  const out: string[] = [];
  for (const p of value.split(',')) {
    if (p === '') throw bad(p, 'is empty');
    if (!path.isAbsolute(p)) throw bad(p, 'is not absolute');
    if (p.split('/').includes('..')) throw bad(p, 'contains ".."');
    if (p.includes(':')) throw bad(p, 'contains ":"');
    if (!allowedPrefixes.some((pre) => under(path.normalize(p), pre))) {
      throw bad(p, `is not under an allowed prefix (config allowedLowerPrefixes: ${JSON.stringify(allowedPrefixes)})`);
    }
    let real: string;
    try {
      real = await fs.realpath(p);
    } catch {
      throw bad(p, 'does not exist');
    }
    if (!(await fs.stat(real)).isDirectory()) throw bad(p, 'is not a directory');
    if (!allowed.some((pre) => under(real, pre))) throw bad(p, `resolves to ${real}, outside the allowed prefixes`);
    if (real.includes(':') || real.includes(',')) throw bad(p, `resolves to ${real}, which contains ":" or ","`);
    out.push(real);
  }
  return out;
}
