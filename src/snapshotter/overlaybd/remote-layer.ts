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
  if (parent && !parentCfg)
    throw invalidArgument(
      `layer ${layer.digest}: an overlaybd layer on top of the plain OCI layer ${req.parent}: images that mix overlaybd and OCI layers are not supported ${which}`,
    );
  fsTypeOf(req.labels, cfg); // refused now rather than at its first mount
  return {
    target,
    labels: { ...req.labels, [Labels.remote]: REMOTE_SNAPSHOT, [Labels.path]: 'remote' },
    stage: async (dir, final) => {
      fs.mkdirSync(path.join(dir, 'fs'), { mode: 0o755 });
      fs.mkdirSync(path.join(dir, 'block', 'mountpoint'), { recursive: true, mode: 0o711 });
      fs.writeFileSync(path.join(dir, 'image_ref'), layer.imageRef);
      const lowers: LayerConfig[] = [...(parentCfg?.lowers ?? []), { digest: layer.digest, size: layer.size, dir: path.join(final, 'fs') }];
      const config: ImageConfig = {
        repoBlobUrl: repoBlobUrl(layer.imageRef, cfg.mirrorRegistry),
        lowers,
        resultFile: path.join(final, 'block', 'init-debug.log'),
      };
      writeJsonAtomic(path.join(dir, 'block', 'config.v1.json'), config, 0o600);
      log.log('info', 'remote layer', { target, digest: layer.digest, size: layer.size, image: layer.imageRef });
    },
  };
}
