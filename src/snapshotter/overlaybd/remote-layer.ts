// Remote layers: a Prepare that carries containerd's unpack target and an overlaybd layer's labels is
// answered with a committed snapshot whose config points the device at the registry (containerd then
// skips download and unpack). The snapshot dir holds fs/ (empty), block/mountpoint/, block/config.v1.json
// (the whole chain's lowers) and image_ref.
import fs from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic } from '../../atomic-file';
import type { ObdConfig } from '../../config';
import type { ImageConfig, LayerConfig } from '../../device/image-config';
import { Labels, REMOTE_SNAPSHOT } from '../../labels';
import type { Logger } from '../../log';
import { invalidArgument } from '../errors';
import type { ChainLink } from '../mounts';
import type { CreateRequest, TargetSnapshot } from '../snapshotter';
import type { LayerClassifier } from './layer-classifier';
import { fsTypeOf } from './label-rules';
import { repoBlobUrl } from './repo-url';
import { readConfig } from './snapshot-files';
import { turboLowerConfig, unpackTurboMeta } from './turbo-meta';

export async function remoteLayerTarget(
  req: CreateRequest,
  ancestors: ChainLink[],
  classifier: LayerClassifier,
  cfg: ObdConfig,
  log: Logger,
): Promise<TargetSnapshot | undefined> {
  const target = req.labels[Labels.targetRef];
  if (req.kind !== 'active' || !target) return undefined;
  const parent = ancestors[0];
  const parentCfg = parent ? readConfig(parent) : undefined;
  const layer = await classifier.classify(req.labels);
  const name = req.labels[Labels.blobDigest] || req.labels[Labels.criLayerDigest] || target;
  const which = `(label ${Labels.targetRef}=${JSON.stringify(target)})`;
  if (layer.kind === 'plain') {
    if (parentCfg)
      throw invalidArgument(
        `layer ${name}: a plain OCI layer on top of the overlaybd layer ${req.parent}: images that mix overlaybd and OCI layers are not supported ${which}`,
      );
    return undefined;
  }
  if (layer.kind === 'local') return undefined;
  const own = layer.kind === 'turbo' ? layer.metaDigest : layer.digest;
  if (parent && !parentCfg)
    throw invalidArgument(
      `layer ${own}: an overlaybd layer on top of the plain OCI layer ${req.parent}: images that mix overlaybd and OCI layers are not supported ${which}`,
    );
  fsTypeOf(req.labels, cfg); // refused now rather than at its first mount
  // A TurboOCI layer's small meta blob is fetched now: a failure leaves nothing behind.
  const meta = layer.kind === 'turbo' ? await classifier.fetchTurboMeta(layer) : undefined;
  return {
    target,
    labels: { ...req.labels, [Labels.remote]: REMOTE_SNAPSHOT, [Labels.path]: layer.kind === 'turbo' ? 'turbo' : 'remote' },
    stage: async (dir, final) => {
      fs.mkdirSync(path.join(dir, 'fs'), { mode: 0o755 });
      fs.mkdirSync(path.join(dir, 'block', 'mountpoint'), { recursive: true, mode: 0o711 });
      fs.writeFileSync(path.join(dir, 'image_ref'), layer.imageRef);
      let lower: LayerConfig;
      if (layer.kind === 'turbo') {
        unpackTurboMeta(meta!, layer, path.join(dir, 'fs'));
        // paths in the config name the final dir
        const own = turboLowerConfig(layer, path.join(dir, 'fs'));
        lower = Object.fromEntries(Object.entries(own).map(([k, v]) => [k, typeof v === 'string' ? v.split(dir).join(final) : v])) as LayerConfig;
        log.log('info', 'TurboOCI layer', { target, meta: layer.metaDigest, targetDigest: layer.targetDigest, image: layer.imageRef });
      } else {
        lower = { digest: layer.digest, size: layer.size, dir: path.join(final, 'fs') };
        log.log('info', 'remote layer', { target, digest: layer.digest, size: layer.size, image: layer.imageRef });
      }
      const config: ImageConfig = {
        repoBlobUrl: repoBlobUrl(layer.imageRef, cfg.mirrorRegistry),
        lowers: [...(parentCfg?.lowers ?? []), lower],
        resultFile: path.join(final, 'block', 'init-debug.log'),
      };
      writeJsonAtomic(path.join(dir, 'block', 'config.v1.json'), config, 0o600);
    },
  };
}
