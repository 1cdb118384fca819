// Shared steps of the obdconv tests: run the CLI, push an OCI layout to the private registry,
// read a converted image back, and mount a converted layer stack read-only.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { openStack, type WarpLower } from '../../src/addon';
import { obdconvBin } from '../helpers/bin';
import { attachLoop, Cleanup, mount } from '../helpers/loop';
import type { TestRegistry } from '../helpers/registry';
import type { BuiltImage } from './images';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function obdconv(args: string[], timeoutMs = 300_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [obdconvBin(), ...args], { timeout: timeoutMs, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export async function pushLayout(reg: TestRegistry, repo: string, tag: string, img: BuiltImage): Promise<void> {
  const m = JSON.parse(img.manifest.toString());
  await reg.pushBlob(repo, img.config);
  for (const l of img.layers) await reg.pushBlob(repo, fs.readFileSync(l.file));
  await reg.pushManifest(repo, tag, img.manifest, m.mediaType);
}

export interface ConvertedImage {
  manifest: { mediaType: string; config: { digest: string; mediaType: string }; layers: { mediaType: string; digest: string; size: number; annotations: Record<string, string> }[] };
  config: { rootfs: { diff_ids: string[] }; history?: unknown[] };
  blobs: string[]; // local files of the layer blobs, bottom first
}

export async function fetchConverted(reg: TestRegistry, repo: string, tag: string, dir: string): Promise<ConvertedImage> {
  const accept = 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json';
  const r = await fetch(`${reg.url}/v2/${repo}/manifests/${tag}`, { headers: { accept } });
  if (!r.ok) throw new Error(`manifest ${repo}:${tag}: ${r.status}`);
  const manifest = (await r.json()) as ConvertedImage['manifest'];
  const get = async (d: string) => {
    const res = await fetch(`${reg.url}/v2/${repo}/blobs/${d}`);
    if (!res.ok) throw new Error(`blob ${d}: ${res.status}`);
    return Buffer.from(await res.arrayBuffer());
  };
  const config = JSON.parse((await get(manifest.config.digest)).toString()) as ConvertedImage['config'];
  fs.mkdirSync(dir, { recursive: true });
  const blobs: string[] = [];
  for (const l of manifest.layers) {
    const f = path.join(dir, l.digest.slice(7));
    fs.writeFileSync(f, await get(l.digest));
    blobs.push(f);
  }
  return { manifest, config, blobs };
}

/** Exports the stack (layer blobs, or TurboOCI lowers) to a sparse raw disk and mounts it read-only (ext4, noload) at mnt. */
export function mountStack(cleanup: Cleanup, blobs: Array<string | WarpLower>, raw: string, mnt: string): void {
  const stack = openStack({ lowers: blobs });
  try {
    stack.exportRaw(raw);
  } finally {
    stack.close();
  }
  cleanup.add(`rm ${raw}`, () => fs.rmSync(raw, { force: true }));
  const dev = attachLoop(cleanup, raw, { readOnly: true });
  fs.mkdirSync(mnt, { recursive: true });
  mount(cleanup, dev, mnt, { type: 'ext4', options: 'ro,noload' });
}

const anyManifest = ['application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json', 'application/vnd.docker.distribution.manifest.v2+json'].join(', ');

/** A manifest or index as the registry holds it (status 404: undefined). */
export async function getManifest(reg: TestRegistry, repo: string, reference: string):
  Promise<{ body: Buffer; mediaType: string; json: any } | undefined> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = await fetch(`${reg.url}/v2/${repo}/manifests/${reference}`, { headers: { accept: anyManifest } });
  if (r.status === 404) return undefined;
  if (!r.ok) throw new Error(`manifest ${repo}:${reference}: ${r.status}`);
  const body = Buffer.from(await r.arrayBuffer());
  return { body, mediaType: r.headers.get('content-type') ?? '', json: JSON.parse(body.toString()) };
}

/** A blob of the registry (undefined when it is not there). */
export async function getBlob(reg: TestRegistry, repo: string, digest: string): Promise<Buffer | undefined> {
  const r = await fetch(`${reg.url}/v2/${repo}/blobs/${digest}`);
  if (r.status === 404) return undefined;
  if (!r.ok) throw new Error(`blob ${repo}@${digest}: ${r.status}`);
  return Buffer.from(await r.arrayBuffer());
}
