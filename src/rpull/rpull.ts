// `obd rpull`: registers an overlaybd image in containerd without downloading any layer, the way
// accelerated-container-image's `ctr rpull` does through containerd's client library — but over
// containerd's gRPC API directly:
//   1. resolve the reference and fetch manifest + config from the registry (the only downloads); a
//      plain image's reference leads to the overlaybd image that refers to it (resolve.ts);
//   2. under a lease, store both in containerd's content store (with the GC references a pull sets);
//   3. per layer, Prepare through containerd's snapshots service with the layer annotations
//      (containerd.io/snapshot/*), containerd.io/snapshot.ref = chain id and the image ref: the obd
//      snapshotter commits a remote snapshot and answers AlreadyExists, containerd records it;
//   4. label the config with the snapshot GC root (as containerd's unpacker) and create the image.
import crypto from 'node:crypto';
import { chainIds } from '../digest';
import { Labels } from '../labels';
import { CredentialStore, parseReference, RegistryClient, type Descriptor, type Platform } from '../registry';
import { ContainerdClient } from './containerd';
import { RpullImageError, RpullLayerError } from './errors';
import { resolveOverlaybdImage } from './resolve';

export interface RpullOptions {
  address: string;
  namespace: string;
  snapshotter: string;
  plainHttp: boolean;
  credentials?: CredentialStore;
  platform?: Platform;
  /** extra snapshot labels (e.g. containerd.io/snapshot/overlaybd/download-remote-blob) */
  labels?: Record<string, string>;
  log?: (line: string) => void;
}

export interface RpullResult {
  name: string;
  manifestDigest: string;
  /** the plain image's manifest when the overlaybd image was found as its referrer */
  referrerOf?: string;
  configDigest: string;
  chainIds: string[];
  layers: Descriptor[];
  /** bytes downloaded from the registry: manifest + config only */
  downloadedBytes: number;
}

const SNAPSHOT_LABEL_PREFIX = 'containerd.io/snapshot/';

/** The labels a layer's Prepare carries: its containerd.io/snapshot/* annotations + ours. */
export function layerLabels(layer: Descriptor, chainId: string, imageRef: string, extra: Record<string, string> = {}): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const [k, v] of Object.entries(layer.annotations ?? {})) if (k.startsWith(SNAPSHOT_LABEL_PREFIX)) labels[k] = v;
  return {
    ...labels,
    ...extra,
    [Labels.targetRef]: chainId,
    // The registry and repository come from the reference pulled, never from the image's annotations.
    [Labels.imageRef]: imageRef,
    [Labels.criImageRef]: imageRef,
    // What CRI also sends: lets the snapshotter recognise an unannotated overlaybd blob by its header.
    [Labels.criLayerDigest]: layer.digest,
  };
}

export async function rpull(ref: string, o: RpullOptions): Promise<RpullResult> {
  const log = o.log ?? (() => undefined);
  const r = parseReference(ref);
  const registry = new RegistryClient({ credentials: o.credentials, plainHttpHosts: o.plainHttp ? [r.host] : [] });
  const ctd = new ContainerdClient(o.address, o.namespace);
  const lease = `obd-rpull-${Date.now()}-${crypto.randomBytes(4).toString('hex')}`;
  let leased = false;
  try {
    const m = await resolveOverlaybdImage(registry, r, o.platform, log);
    const config = await registry.getBlob(r.host, r.repo, m.manifest.config.digest);
    const diffIds: string[] = JSON.parse(config.toString('utf8'))?.rootfs?.diff_ids ?? [];
    const layers = m.manifest.layers;
    if (diffIds.length !== layers.length)
      throw new RpullImageError(`${ref}: the config has ${diffIds.length} diff_ids for ${layers.length} layers`);
    const chain = chainIds(diffIds);
    log(`resolved ${ref}: manifest ${m.digest}, ${layers.length} layers${m.referrer ? ` (referrer of ${m.referrer.subject})` : ''}`);

    await ctd.createLease(lease, 3_600_000);
    leased = true;
    ctd.useLease(lease);
    const manifestLabels: Record<string, string> = { 'containerd.io/gc.ref.content.config': m.manifest.config.digest };
    layers.forEach((l, i) => (manifestLabels[`containerd.io/gc.ref.content.l.${i}`] = l.digest));
    await ctd.writeContent(m.digest, m.body, manifestLabels);
    await ctd.writeContent(m.manifest.config.digest, config, {});

    const imageRef = `${r.host}/${r.repo}${r.tag ? ':' + r.tag : ''}${r.digest ? '@' + r.digest : ''}`;
    for (let i = 0; i < layers.length; i++) {
      if (await ctd.snapshotExists(o.snapshotter, chain[i])) {
        log(`layer ${i + 1}/${layers.length} ${layers[i].digest}: already there`);
        continue;
      }
      const key = `extract-${process.hrtime.bigint()}-${crypto.randomBytes(3).toString('base64url')} ${chain[i]}`;
      const labels = layerLabels(layers[i], chain[i], imageRef, o.labels);
      const res = await ctd.prepare(o.snapshotter, key, i === 0 ? '' : chain[i - 1], labels).catch((err: Error) => {
        throw new RpullLayerError(`layer ${i + 1}/${layers.length} ${layers[i].digest}: ${err.message}`, err);
      });
      if (res === 'created') {
        await ctd.removeSnapshot(o.snapshotter, key).catch(() => undefined);
        throw new RpullImageError(
          `layer ${i + 1}/${layers.length} ${layers[i].digest} is not an overlaybd layer (snapshotter ${o.snapshotter} did not take it as remote): ` +
            'rpull registers overlaybd images only; pull OCI images with `ctr image pull`',
        );
      }
      if (!(await ctd.snapshotExists(o.snapshotter, chain[i])))
        throw new RpullLayerError(`layer ${i + 1}/${layers.length} ${layers[i].digest}: snapshotter answered AlreadyExists but ${chain[i]} is not there`);
      log(`layer ${i + 1}/${layers.length} ${layers[i].digest}: remote`);
    }
    if (chain.length > 0) await ctd.updateContentLabels(m.manifest.config.digest, { [`containerd.io/gc.ref.snapshot.${o.snapshotter}`]: chain[chain.length - 1] });
    await ctd.putImage({ name: ref, labels: {}, target: { media_type: m.mediaType, digest: m.digest, size: m.body.length } });
    return {
      name: ref,
      manifestDigest: m.digest,
      ...(m.referrer ? { referrerOf: m.referrer.subject } : {}),
      configDigest: m.manifest.config.digest,
      chainIds: chain,
      layers,
      downloadedBytes: m.body.length + config.length,
    };
  } finally {
    ctd.useLease(undefined);
    if (leased) await ctd.deleteLease(lease).catch(() => undefined);
    ctd.close();
    await registry.close();
  }
}
