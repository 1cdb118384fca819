// Referrers (OCI distribution 1.1): manifests whose `subject` names another manifest, listed per
// subject. Registries with the referrers API index them on push and list them at
// GET /v2/<repo>/referrers/<digest>; registries without it (docker-registry 2.8 answers 404 there)
// get the spec's fallback instead: an OCI image index under the referrers tag `<alg>-<encoded>`,
// which whoever pushes a referrer reads, extends and writes back.
import { sha256 } from '../digest';
import { MediaTypes, type Descriptor, type RegistryClient } from './client';
import { RegistryNotFoundError, RegistryProtocolError } from './errors';

/** The referrers tag of a digest: truncated algorithm, `-`, truncated encoded part; other characters → `-`. */
export function referrersTag(digest: string): string {
  const colon = digest.indexOf(':');
  const alg = digest.slice(0, colon).slice(0, 32);
  const encoded = digest.slice(colon + 1).slice(0, 64);
  return `${alg}-${encoded}`.replace(/[^a-zA-Z0-9._-]/g, '-');
}

export interface ReferrerList {
  /** `api`: the registry's referrers API; `tag`: the referrers tag (fallback); both answer an empty list when there are none. */
  via: 'api' | 'tag';
  manifests: Descriptor[];
}

/** The referrers of `digest` in host/repo (of `artifactType` when given): the API first, the referrers tag on 404. */
export async function listReferrers(client: RegistryClient, host: string, repo: string, digest: string,
  opts: { artifactType?: string; signal?: AbortSignal } = {}): Promise<ReferrerList> {
  const wanted = (d: Descriptor) => !opts.artifactType || d.artifactType === opts.artifactType;
  const api = await client.getReferrers(host, repo, digest, opts);
  if (api) return { via: 'api', manifests: api.manifests.filter(wanted) };
  const index = await readReferrersTag(client, host, repo, digest, opts.signal);
  return { via: 'tag', manifests: (index?.manifests ?? []).filter(wanted) };
}

interface ReferrersIndex {
  schemaVersion: number;
  mediaType: string;
  manifests: Descriptor[];
  [k: string]: unknown;
}

async function readReferrersTag(client: RegistryClient, host: string, repo: string, digest: string, signal?: AbortSignal):
  Promise<ReferrersIndex | undefined> {
  const tag = referrersTag(digest);
  try {
    const m = await client.getManifestRaw(host, repo, tag, signal);
    if (m.mediaType !== MediaTypes.ociIndex || !Array.isArray(m.json.manifests)) {
      throw new RegistryProtocolError(`${host}/${repo}:${tag}: the referrers tag holds ${m.mediaType}, not an OCI image index`, { registry: host });
    }
    return m.json as ReferrersIndex;
  } catch (err) {
    if (err instanceof RegistryNotFoundError) return undefined;
    throw err;
  }
}

/** The descriptor a referrers list holds for a manifest: its artifactType (else its config's media type) and annotations. */
export function referrerDescriptor(manifest: Buffer, mediaType: string, digest: string): Descriptor {
  const m = JSON.parse(manifest.toString('utf8')) as { artifactType?: string; config?: { mediaType?: string }; annotations?: Record<string, string> };
  const artifactType = m.artifactType ?? m.config?.mediaType;
  return { mediaType, digest, size: manifest.length, ...(artifactType ? { artifactType } : {}), ...(m.annotations ? { annotations: m.annotations } : {}) };
}

/**
 * Pushes a manifest that has a `subject` (by digest: a referrer needs no tag). When the registry
 * does not answer `OCI-Subject: <subject digest>` it has not indexed it, so the referrers tag is
 * updated: read, add the descriptor unless present, write; read again to catch a concurrent writer
 * that replaced it meanwhile, and retry a few times.
 */
export async function pushReferrer(client: RegistryClient, host: string, repo: string, manifest: Buffer, mediaType: string,
  subject: Descriptor, signal?: AbortSignal): Promise<{ digest: string; via: 'api' | 'tag' }> {
  const digest = sha256(manifest);
  const put = await client.putManifestDetailed(host, repo, digest, manifest, mediaType, signal);
  if (put.subject === subject.digest) return { digest, via: 'api' };
  const desc = referrerDescriptor(manifest, mediaType, digest);
  const tag = referrersTag(subject.digest);
  for (let attempt = 0; attempt < 5; attempt++) {
    const index = (await readReferrersTag(client, host, repo, subject.digest, signal))
      ?? { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] };
    if (index.manifests.some((d) => d.digest === digest)) return { digest, via: 'tag' };
    index.manifests = [...index.manifests, desc];
    await client.putManifest(host, repo, tag, Buffer.from(JSON.stringify(index)), MediaTypes.ociIndex, signal);
    const check = await readReferrersTag(client, host, repo, subject.digest, signal);
    if (check?.manifests.some((d) => d.digest === digest)) return { digest, via: 'tag' };
  }
  throw new RegistryProtocolError(`${host}/${repo}:${tag}: the referrers tag kept changing; ${digest} is not listed in it`, { registry: host });
}
