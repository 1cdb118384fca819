// Where images come from and go to: a registry reference or an OCI image layout directory
// (`oci:DIR[:TAG]`). Both expose the same small surface the converter needs: the manifest or index
// the reference names, a platform manifest, stream a blob to a file (digest-verified while
// streaming), check/mount/upload a blob, put a manifest (tagged as the reference, or by digest only;
// with a subject, as a referrer). Nothing here knows about overlaybd.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { writeJsonAtomic } from '../atomic-file';
import { ConvertOptionError, DigestMismatchError, OciLayoutError } from './errors';
import { sha256 } from '../digest';
import {
  MediaTypes, RegistryClient, RegistryNotFoundError, defaultPlatform, parseReference, pushReferrer, selectPlatform,
  type Descriptor, type ImageManifest, type Platform, type Reference,
} from '../registry';

export type Progress = (bytes: number) => void;

const uploadChunk = 32 << 20;

export interface ResolvedImage {
  manifest: ImageManifest;
  mediaType: string;
  digest: string;
}

/** A manifest or index as stored: its descriptor, its bytes and their JSON. */
export interface StoredManifest {
  desc: Descriptor;
  body: Buffer;
  json: { mediaType?: string; manifests?: Descriptor[]; layers?: Descriptor[]; config?: Descriptor; [k: string]: unknown };
}

/**
 * How a manifest is put: tagged as the store's reference (the image), or by digest only (a platform
 * manifest of an index, a referrer). With `subject` it is a referrer of that manifest and is listed
 * among its referrers (registry API or referrers tag).
 */
export interface ManifestPlacement {
  tag: boolean;
  subject?: Descriptor;
}

export interface ImageStore {
  readonly name: string;
  /** What the reference names: an image manifest or an index (not resolved further). */
  resolveTop(signal?: AbortSignal): Promise<StoredManifest>;
  /** A manifest or index of this repository by its descriptor (digest verified). */
  readManifest(desc: Descriptor, signal?: AbortSignal): Promise<StoredManifest>;
  resolve(platform: Platform, signal?: AbortSignal): Promise<ResolvedImage>;
  readBlob(desc: Descriptor, signal?: AbortSignal): Promise<Buffer>;
  /** Streams a blob into `file`; rejects (and removes the file) when the content does not match the digest. */
  fetchBlob(desc: Descriptor, file: string, progress?: Progress, signal?: AbortSignal): Promise<void>;
  hasBlob(digest: string, signal?: AbortSignal): Promise<boolean>;
  /** Cross-repository mount from another repository of the same registry; false if not possible. */
  mountBlob(digest: string, from: string, signal?: AbortSignal): Promise<boolean>;
  pushBlobFile(file: string, digest: string, progress?: Progress, signal?: AbortSignal): Promise<void>;
  /** Puts a manifest (default placement: tagged as the reference); returns its digest. */
  putManifest(body: Buffer, mediaType: string, signal?: AbortSignal, placement?: ManifestPlacement): Promise<string>;
  /** "host/repo" (registries) or the layout dir: the scope inside which mounts are possible. */
  readonly location: string;
  close(): Promise<void>;
}

function hashingTransform(hash: crypto.Hash, progress?: Progress): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      progress?.(chunk.length);
      cb(null, chunk);
    },
  });
}

/** Where fetchBlob writes a blob until it is complete and verified (then renamed to `file`). */
export function partialBlobPath(file: string): string {
  return `${file}.part`;
}

async function streamVerified(src: NodeJS.ReadableStream, desc: Descriptor, file: string, what: string, progress?: Progress): Promise<void> {
  const hash = crypto.createHash('sha256');
  const tmp = partialBlobPath(file);
  try {
    await pipeline(src, hashingTransform(hash, progress), fs.createWriteStream(tmp));
    const got = `sha256:${hash.digest('hex')}`;
    const size = fs.statSync(tmp).size;
    if (got !== desc.digest) throw new DigestMismatchError(`${what}: content is ${got}, expected ${desc.digest}`);
    if (desc.size !== undefined && size !== desc.size) throw new DigestMismatchError(`${what}: ${size} bytes, descriptor says ${desc.size}`);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

export class RegistryStore implements ImageStore {
  readonly ref: Reference;
  readonly name: string;

  constructor(ref: string, readonly client: RegistryClient) {
    this.ref = parseReference(ref);
    this.name = ref;
  }

  get location(): string {
    return `${this.ref.host}/${this.ref.repo}`;
  }

  async resolveTop(signal?: AbortSignal): Promise<StoredManifest> {
    const m = await this.client.getManifestRaw(this.ref.host, this.ref.repo, this.ref.digest ?? this.ref.tag ?? 'latest', signal);
    return { desc: { mediaType: m.mediaType, digest: m.digest, size: m.body.length }, body: m.body, json: m.json };
  }

  async readManifest(desc: Descriptor, signal?: AbortSignal): Promise<StoredManifest> {
    const m = await this.client.getManifestRaw(this.ref.host, this.ref.repo, desc.digest, signal);
    return { desc: { ...desc, mediaType: m.mediaType, size: m.body.length }, body: m.body, json: m.json };
  }

  async resolve(platform: Platform, signal?: AbortSignal): Promise<ResolvedImage> {
    const m = await this.client.getManifest(this.ref, { platform, signal });
    return { manifest: m.manifest, mediaType: m.mediaType, digest: m.digest };
  }

  readBlob(desc: Descriptor, signal?: AbortSignal): Promise<Buffer> {
    return this.client.getBlob(this.ref.host, this.ref.repo, desc.digest, { signal });
  }

  async fetchBlob(desc: Descriptor, file: string, progress?: Progress, signal?: AbortSignal): Promise<void> {
    const { host, repo } = this.ref;
    const what = `${host}/${repo}@${desc.digest}`;
    await this.client.streamBlob(host, repo, desc.digest, (body) => streamVerified(body, desc, file, what, progress), signal);
  }

  async hasBlob(digest: string, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.client.headBlob(this.ref.host, this.ref.repo, digest, signal);
      return true;
    } catch (err) {
      if (err instanceof RegistryNotFoundError) return false;
      throw err;
    }
  }

  async mountBlob(digest: string, from: string, signal?: AbortSignal): Promise<boolean> {
    const prefix = `${this.ref.host}/`;
    if (!from.startsWith(prefix) || from === this.location) return false;
    return this.client.mountBlob(this.ref.host, this.ref.repo, digest, from.slice(prefix.length), signal).catch(() => false);
  }

  /** Small blobs go up in one request, large ones in 32 MiB chunks read from the file (bounded memory); the registry checks the digest. */
  async pushBlobFile(file: string, digest: string, progress?: Progress, signal?: AbortSignal): Promise<void> {
    await this.client.uploadBlobFromFile(this.ref.host, this.ref.repo, file, { chunkSize: uploadChunk, digest, progress, signal });
  }

  async putManifest(body: Buffer, mediaType: string, signal?: AbortSignal, placement: ManifestPlacement = { tag: true }): Promise<string> {
    const { host, repo } = this.ref;
    if (placement.subject) await pushReferrer(this.client, host, repo, body, mediaType, placement.subject, signal);
    else if (!placement.tag) await this.client.putManifest(host, repo, sha256(body), body, mediaType, signal);
    if (placement.tag) await this.client.putManifest(host, repo, this.ref.tag ?? this.ref.digest ?? 'latest', body, mediaType, signal);
    return sha256(body);
  }

  async close(): Promise<void> {
    // the client is shared and closed by its owner
  }
}

interface OciIndex {
  schemaVersion: number;
  mediaType?: string;
  manifests: Descriptor[];
}

const refNameKey = 'org.opencontainers.image.ref.name';

/** An OCI image layout directory (image-layout spec): oci-layout, index.json, blobs/sha256/…. */
export class OciLayoutStore implements ImageStore {
  readonly name: string;

  constructor(readonly dir: string, readonly tag: string | undefined) {
    this.name = `oci:${dir}${tag ? `:${tag}` : ''}`;
  }

  get location(): string {
    return path.resolve(this.dir);
  }

  blobPath(digest: string): string {
    const m = /^sha256:([a-f0-9]{64})$/.exec(digest);
    if (!m) throw new OciLayoutError(`${this.name}: "${digest}" is not a sha256 digest`);
    return path.join(this.dir, 'blobs', 'sha256', m[1]);
  }

  private readIndex(): OciIndex {
    const p = path.join(this.dir, 'index.json');
    if (!fs.existsSync(p)) return { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] };
    return JSON.parse(fs.readFileSync(p, 'utf8')) as OciIndex;
  }

  /** The tagged manifest or index; an untagged layout with several manifests is itself the index. */
  async resolveTop(): Promise<StoredManifest> {
    const index = this.readIndex();
    const tagged = this.tag ? index.manifests.filter((d) => d.annotations?.[refNameKey] === this.tag) : index.manifests;
    if (tagged.length === 0) throw new OciLayoutError(`${this.name}: no manifest${this.tag ? ` tagged ${this.tag}` : ''} in index.json`);
    if (tagged.length === 1) return this.readManifest(tagged[0]);
    if (this.tag) throw new OciLayoutError(`${this.name}: ${tagged.length} manifests tagged ${this.tag} in index.json`);
    if (tagged.some((d) => !d.platform)) throw new OciLayoutError(`${this.name}: ${tagged.length} images in index.json; name one as oci:DIR:TAG`);
    const body = fs.readFileSync(path.join(this.dir, 'index.json'));
    return { desc: { mediaType: MediaTypes.ociIndex, digest: sha256(body), size: body.length }, body, json: { ...index } };
  }

  async readManifest(desc: Descriptor): Promise<StoredManifest> {
    const body = await this.readBlob(desc);
    const json = JSON.parse(body.toString('utf8')) as StoredManifest['json'];
    return { desc: { ...desc, mediaType: json.mediaType ?? desc.mediaType, size: body.length }, body, json };
  }

  async resolve(platform: Platform): Promise<ResolvedImage> {
    const index = this.readIndex();
    const tagged = this.tag ? index.manifests.filter((d) => d.annotations?.[refNameKey] === this.tag) : index.manifests;
    if (tagged.length === 0) throw new OciLayoutError(`${this.name}: no manifest${this.tag ? ` tagged ${this.tag}` : ''} in index.json`);
    let desc = tagged.length === 1 ? tagged[0] : selectPlatform(tagged, platform);
    if (!desc) throw new OciLayoutError(`${this.name}: ${tagged.length} manifests and none for ${platform.os}/${platform.architecture}`);
    for (let depth = 0; depth < 2; depth++) {
      const body = await this.readBlob(desc);
      const json = JSON.parse(body.toString('utf8')) as { mediaType?: string; manifests?: Descriptor[]; layers?: Descriptor[] };
      if (!json.manifests) {
        return { manifest: json as unknown as ImageManifest, mediaType: json.mediaType ?? desc.mediaType, digest: desc.digest };
      }
      const pick = selectPlatform(json.manifests, platform);
      if (!pick) throw new OciLayoutError(`${this.name}: index ${desc.digest} has no manifest for ${platform.os}/${platform.architecture}`);
      desc = pick;
    }
    throw new OciLayoutError(`${this.name}: nested indexes`);
  }

  async readBlob(desc: Descriptor): Promise<Buffer> {
    const data = await fs.promises.readFile(this.blobPath(desc.digest));
    const got = sha256(data);
    if (got !== desc.digest) throw new DigestMismatchError(`${this.name}: blob ${desc.digest} has content ${got}`);
    return data;
  }

  async fetchBlob(desc: Descriptor, file: string, progress?: Progress): Promise<void> {
    await streamVerified(fs.createReadStream(this.blobPath(desc.digest), { highWaterMark: 1 << 20 }), desc, file,
      `${this.name}: blob ${desc.digest}`, progress);
  }

  async hasBlob(digest: string): Promise<boolean> {
    return fs.existsSync(this.blobPath(digest));
  }

  async mountBlob(): Promise<boolean> {
    return false;
  }

  async pushBlobFile(file: string, digest: string, progress?: Progress): Promise<void> {
    const dst = this.blobPath(digest);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    const tmp = `${dst}.part-${process.pid}`;
    await fs.promises.copyFile(file, tmp);
    fs.renameSync(tmp, dst);
    progress?.(fs.statSync(dst).size);
  }

  async putManifest(body: Buffer, mediaType: string, _signal?: AbortSignal, placement: ManifestPlacement = { tag: true }): Promise<string> {
    if (placement.subject) throw new ConvertOptionError(`${this.name}: an OCI layout keeps no referrers (--referrer needs a registry)`);
    const digest = sha256(body);
    const dst = this.blobPath(digest);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    fs.writeFileSync(dst, body);
    fs.writeFileSync(path.join(this.dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    if (!placement.tag) return digest;
    const index = this.readIndex();
    const tag = this.tag ?? 'latest';
    index.manifests = index.manifests.filter((d) => d.annotations?.[refNameKey] !== tag);
    index.manifests.push({ mediaType, digest, size: body.length, annotations: { [refNameKey]: tag } });
    writeJsonAtomic(path.join(this.dir, 'index.json'), { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: index.manifests });
    return digest;
  }

  async close(): Promise<void> {}
}

/** A blob of SRC made present in DST: already there, mounted from SRC's repository, or copied through `workDir`. */
export async function copyBlob(src: ImageStore, dst: ImageStore, desc: Descriptor, workDir: string, signal?: AbortSignal):
  Promise<'present' | 'mounted' | 'uploaded'> {
  if (await dst.hasBlob(desc.digest, signal)) return 'present';
  if (await dst.mountBlob(desc.digest, src.location, signal)) return 'mounted';
  const file = path.join(workDir, `copy-${desc.digest.slice(7)}`);
  try {
    await src.fetchBlob(desc, file, undefined, signal);
    await dst.pushBlobFile(file, desc.digest, undefined, signal);
  } finally {
    fs.rmSync(file, { force: true });
  }
  return 'uploaded';
}

/** `oci:DIR[:TAG]` or a registry reference. */
export function openStore(spec: string, client: () => RegistryClient): ImageStore {
  if (spec.startsWith('oci:')) {
    const rest = spec.slice(4);
    const m = /^(.*?)(?::([A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?$/.exec(rest)!;
    if (!m[1]) throw new ConvertOptionError(`"${spec}": expected oci:DIR[:TAG]`);
    return new OciLayoutStore(m[1], m[2]);
  }
  return new RegistryStore(spec, client());
}

export { defaultPlatform };
