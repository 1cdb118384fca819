// Which kind of layer containerd is about to unpack, from the Prepare's labels: an overlaybd layer to
// serve from its registry (remote), an overlaybd blob containerd downloads itself (local, found at
// Commit), or a plain OCI layer. A layer without overlaybd annotations that CRI names by digest is
// decided by one range read of its header (its own registry client, 20 s deadline). This runs
// before any metadata transaction: a slow registry delays only its own Prepare.
import type { ObdConfig } from '../../config';
import { Labels } from '../../labels';
import type { Logger } from '../../log';
import { parseReference, RegistryClient, registryOptionsFromConfig } from '../../registry';
import { failedPrecondition, invalidArgument } from '../errors';
import { DETECT_BYTES, looksLikeOverlaybd } from './detect';
import { turboFromLabels, type TurboLayer } from './turbo-meta';

export type LayerKind =
  | { kind: 'remote'; digest: string; size: number; imageRef: string }
  | TurboLayer // TurboOCI: meta blob fetched and unpacked at Prepare, data from the original blob
  | { kind: 'local' } // overlaybd blob pulled as a tar by containerd (no image ref): found at Commit
  | { kind: 'plain' };

const DIGEST = /^sha256:[0-9a-f]{64}$/;

export class LayerClassifier {
  private registry?: RegistryClient;
  private readonly detected = new Map<string, { overlaybd: boolean; size: number }>();

  constructor(
    private readonly cfg: ObdConfig,
    private readonly log: Logger,
  ) {}

  async close(): Promise<void> {
    await this.registry?.close();
  }

  async classify(labels: Record<string, string>): Promise<LayerKind> {
    // CRI sets cri.image-ref from the reference it pulls (over any annotation of that name); image-ref
    // is what obd rpull and ACI's tools set.
    const imageRef = labels[Labels.criImageRef] || labels[Labels.imageRef];
    let turbo;
    try {
      turbo = turboFromLabels(labels);
    } catch (err) {
      throw invalidArgument((err as Error).message);
    }
    if (turbo) {
      if (!imageRef)
        throw invalidArgument(`TurboOCI layer ${turbo.metaDigest}: needs the label ${Labels.imageRef} (pull with obd rpull or CRI) to find its original layer blob`);
      checkImageRef(imageRef);
      return { ...turbo, imageRef };
    }
    const digest = labels[Labels.blobDigest];
    const sizeText = labels[Labels.blobSize];
    if (digest && sizeText) {
      if (!/^[1-9][0-9]{0,15}$/.test(sizeText) || !Number.isSafeInteger(Number(sizeText)))
        throw invalidArgument(`label ${Labels.blobSize}=${JSON.stringify(sizeText)}: must be a positive integer`);
      if (!DIGEST.test(digest)) throw invalidArgument(`label ${Labels.blobDigest}=${JSON.stringify(digest)}: not a sha256 digest`);
      if (imageRef) checkImageRef(imageRef);
      return imageRef ? { kind: 'remote', digest, size: Number(sizeText), imageRef } : { kind: 'local' };
    }
    // No overlaybd annotations: CRI still names the layer's blob; one range read of its header decides.
    const layerDigest = labels[Labels.criLayerDigest];
    if (imageRef && layerDigest && DIGEST.test(layerDigest)) {
      const d = await this.detectRemote(imageRef, layerDigest);
      if (d?.overlaybd) return { kind: 'remote', digest: layerDigest, size: d.size, imageRef };
    }
    return { kind: 'plain' };
  }

  /** The small meta blob of a TurboOCI layer, fetched before any metadata changes. */
  async fetchTurboMeta(layer: TurboLayer): Promise<Buffer> {
    const ref = parseReference(layer.imageRef);
    this.registry ??= new RegistryClient(registryOptionsFromConfig(this.cfg, { operationDeadlineMs: 20_000 }));
    try {
      return await this.registry.getBlob(ref.host, ref.repo, layer.metaDigest, { maxBytes: layer.metaSize });
    } catch (err) {
      throw failedPrecondition(`TurboOCI layer ${layer.metaDigest}: fetching its meta blob from ${ref.host}/${ref.repo}: ${(err as Error).message}`);
    }
  }

  private async detectRemote(imageRef: string, digest: string): Promise<{ overlaybd: boolean; size: number } | undefined> {
    const known = this.detected.get(digest);
    if (known) return known;
    try {
      const ref = parseReference(imageRef);
      this.registry ??= new RegistryClient(registryOptionsFromConfig(this.cfg, { operationDeadlineMs: 20_000 }));
      const reader = this.registry.blobReader(ref.host, ref.repo, digest);
      const head = await reader.read(0, DETECT_BYTES);
      const r = { overlaybd: looksLikeOverlaybd(head), size: await reader.size() };
      this.detected.set(digest, r);
      this.log.log('info', 'layer type detected by its header', { digest, overlaybd: r.overlaybd, size: r.size });
      return r;
    } catch (err) {
      this.log.log('warn', 'could not read the layer header; treating it as a plain OCI layer', { digest, image: imageRef, err: (err as Error).message });
      return undefined;
    }
  }
}

function checkImageRef(imageRef: string): void {
  try {
    parseReference(imageRef);
  } catch (err) {
    const label = Labels.imageRef;
    throw invalidArgument(`label ${label} (or ${Labels.criImageRef})=${JSON.stringify(imageRef)}: ${(err as Error).message}`);
  }
}
