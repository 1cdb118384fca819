// Which manifest `obd rpull REF` registers. REF's own (for the platform) when it is an overlaybd
// image. Otherwise an overlaybd image that refers to it — pushed by `obdconv --referrer` or by
// accelerated-container-image's convertor with --referrer — found among the referrers of REF's
// manifest, then of REF's index: through the registry's referrers API, or the referrers tag where
// the registry has none. With neither, REF's own manifest (the snapshotter then decides per layer).
import { Labels } from '../labels';
import {
  listReferrers, type Descriptor, type FetchedManifest, type ImageManifest, type Platform, type Reference, type RegistryClient,
} from '../registry';
import { RpullImageError } from './errors';

export const OverlaybdArtifactTypes = ['application/vnd.containerd.overlaybd.native.v1+json', 'application/vnd.containerd.overlaybd.turbo.v1+json'];

export interface ResolvedForRpull extends FetchedManifest {
  /** set when the manifest was found as a referrer of REF */
  referrer?: { subject: string; via: 'api' | 'tag' };
}

export function isOverlaybdImage(m: ImageManifest): boolean {
  return m.layers.some((l) => l.annotations?.[Labels.blobDigest] !== undefined);
}

/** The newest-listed referrer of the preferred overlaybd artifact type (native before TurboOCI). */
function pickReferrer(list: Descriptor[]): Descriptor | undefined {
  for (const type of OverlaybdArtifactTypes) {
    const of = list.filter((d) => d.artifactType === type);
    if (of.length) return of[of.length - 1];
  }
  return undefined;
}

export async function resolveOverlaybdImage(registry: RegistryClient, r: Reference, platform: Platform | undefined,
  log: (line: string) => void = () => undefined): Promise<ResolvedForRpull> {
  const own = await registry.getManifest(r, { platform });
  if (isOverlaybdImage(own.manifest)) return own;
  const subjects = [own.digest, ...(own.index ? [own.index.digest] : [])];
  for (const subject of subjects) {
    const list = await listReferrers(registry, r.host, r.repo, subject);
    const pick = pickReferrer(list.manifests);
    if (!pick) continue;
    const raw = await registry.getManifestRaw(r.host, r.repo, pick.digest);
    const named = (raw.json as { subject?: Descriptor }).subject?.digest;
    if (named !== subject) throw new RpullImageError(`${r.host}/${r.repo}: referrer ${pick.digest} of ${subject} names subject ${named ?? 'none'}`);
    const found = await registry.getManifest({ host: r.host, repo: r.repo, digest: pick.digest }, { platform });
    if (!isOverlaybdImage(found.manifest)) {
      throw new RpullImageError(`${r.host}/${r.repo}: referrer ${pick.digest} (${pick.artifactType}) of ${subject} is not an overlaybd image`);
    }
    log(`${r.host}/${r.repo}@${subject} is not an overlaybd image; its referrer ${found.digest} is (found through the ${list.via === 'api' ? 'referrers API' : 'referrers tag'})`);
    return { ...found, referrer: { subject, via: list.via } };
  }
  return own;
}
