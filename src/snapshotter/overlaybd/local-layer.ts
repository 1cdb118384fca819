// An overlaybd blob that containerd downloaded and untarred itself (a pull without an image ref):
// fs/overlaybd.commit becomes the layer at Commit. fs/ holds whatever the layer's tar put there, so
// only a regular file (not a symlink, not a FIFO) with an overlaybd header counts, read off the
// event loop; the config names that file explicitly.
import fs from 'node:fs';
import path from 'node:path';
import { writeJsonAtomic } from '../../atomic-file';
import type { ImageConfig } from '../../device/image-config';
import { Labels } from '../../labels';
import { readHeadOfRegularFile } from '../../untrusted-file';
import { invalidArgument } from '../errors';
import type { ChainLink } from '../mounts';
import { DETECT_BYTES, looksLikeOverlaybd } from './detect';
import { blockDir, configPath, readConfig } from './snapshot-files';

export async function adoptLocalLayer(snap: ChainLink, name: string, ancestors: ChainLink[]): Promise<Record<string, string> | undefined> {
  const blob = path.join(snap.fsDir, 'overlaybd.commit');
  const head = await readHeadOfRegularFile(blob, DETECT_BYTES);
  if (!head || !looksLikeOverlaybd(head)) return undefined;
  const parentCfg = ancestors.length > 0 ? readConfig(ancestors[0]) : undefined;
  if (ancestors.length > 0 && !parentCfg)
    throw invalidArgument(`commit ${name}: an overlaybd layer on top of the plain OCI layer ${ancestors[0].key}: mixed images are not supported`);
  fs.mkdirSync(path.join(blockDir(snap), 'mountpoint'), { recursive: true, mode: 0o711 });
  const config: ImageConfig = {
    ...(parentCfg?.repoBlobUrl ? { repoBlobUrl: parentCfg.repoBlobUrl } : {}),
    lowers: [...(parentCfg?.lowers ?? []), { dir: snap.fsDir, file: blob }],
    resultFile: path.join(blockDir(snap), 'init-debug.log'),
  };
  writeJsonAtomic(configPath(snap), config);
  return { [Labels.localCommitPath]: blob, [Labels.path]: 'local' };
}
