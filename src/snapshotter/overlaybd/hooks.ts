// overlaybd in the snapshotter (docs/architecture.md, docs/labels.md): remote layers committed at Prepare time
// (containerd then skips download and unpack), and container snapshots on an overlaybd chain by
// rwMode — overlayfs (one shared read-only device per image top layer, overlay on its mountpoint),
// dir (a private writable device, bind mount of its filesystem) and dev (the block device itself).
// Plain OCI layers and images are left to the overlay rules of mounts.ts.
//
// Per snapshot, in root/snapshots/<id>/block/ (ACI's layout):
//   config.v1.json   the device config: the whole chain's lowers (+ the upper for dir/dev)
//   mountpoint/      where this snapshot's device is mounted (layers: read-only; dir: read-write)
//   writable_data, writable_index, rwmode   the writable upper of a dir/dev snapshot
//   init-debug.log   deviced's result file
// Nothing is kept in memory that the disk and /proc/self/mountinfo do not also say: Mounts attaches
// and mounts again whatever is missing, so a restarted snapshotter (or deviced) recovers.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { commitLayer, createWritableLayer } from '../../addon';
import { writeJsonAtomic } from '../../atomic-file';
import type { ObdConfig } from '../../config';
import type { ImageConfig, LayerConfig } from '../../device/image-config';
import { parseReference, RegistryClient, registryOptionsFromConfig } from '../../registry';
import { failedPrecondition, invalidArgument } from '../errors';
import { Layout } from '../layout';
import type { Logger } from '../../log';
import { ChainLink, Mount, MountRequest, overlayIndexOff } from '../mounts';
import type { CreateRequest, SnapshotHooks } from '../snapshotter';
import type { SnapshotRecord, Transaction } from '../storage';
import { BlockDevices } from './block-device';
import { DETECT_BYTES, looksLikeOverlaybd } from './detect';
import { Labels, REMOTE_SNAPSHOT } from '../../labels';
import { repoBlobUrl } from './repo-url';
import { turboFromLabels, turboLowerConfig, unpackTurboMeta, type TurboLayer } from './turbo-meta';
import { traceMode } from '../../trace/trace';

export type RwMode = 'overlayfs' | 'dir' | 'dev';
const GiB = 2 ** 30;

type LayerKind =
  | { kind: 'remote'; digest: string; size: number; imageRef: string }
  | TurboLayer // TurboOCI: meta blob fetched and unpacked at Prepare, data from the original blob
  | { kind: 'local' } // overlaybd blob pulled as a tar by containerd (no image ref): found at Commit
  | { kind: 'plain' };

/** One async job per key at a time (attach + mount of one device must not interleave). */
class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const p = prev.then(fn, fn);
    const tail = p.catch(() => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return p;
  }
}

export class OverlaybdHooks implements SnapshotHooks {
  private readonly layout: Layout;
  private readonly devices: BlockDevices;
  private readonly lock = new KeyedLock();
  private readonly idPrefix: string;
  private registry?: RegistryClient;
  private readonly detected = new Map<string, { overlaybd: boolean; size: number }>();

  constructor(
    private readonly cfg: ObdConfig,
    private readonly log: Logger,
  ) {
    this.layout = new Layout(cfg.root);
    this.devices = new BlockDevices(cfg.deviceAddress, log);
    // Device ids are per host (one deviced); the root keeps two snapshotters on one deviced apart.
    this.idPrefix = 'sn' + crypto.createHash('sha256').update(path.resolve(cfg.root)).digest('hex').slice(0, 8);
  }

  async close(): Promise<void> {
    this.devices.close();
    await this.registry?.close();
  }

  // ---- ids and paths ----
  layerDeviceId(id: number): string {
    return `${this.idPrefix}-l${id}`;
  }
  writableDeviceId(id: number): string {
    return `${this.idPrefix}-w${id}`;
  }
  private blockDir(snap: { dir: string }): string {
    return path.join(snap.dir, 'block');
  }
  private configPath(snap: { dir: string }): string {
    return path.join(snap.dir, 'block', 'config.v1.json');
  }
  private mountpoint(snap: { dir: string }): string {
    return path.join(snap.dir, 'block', 'mountpoint');
  }

  /** The device config of an overlaybd snapshot; undefined for plain directory snapshots. */
  readConfig(snap: { dir: string }): ImageConfig | undefined {
    try {
      return JSON.parse(fs.readFileSync(this.configPath(snap), 'utf8')) as ImageConfig;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new Error(`${this.configPath(snap)}: ${(err as Error).message}`);
    }
  }

  private writableMode(snap: { dir: string }): 'dir' | 'dev' | undefined {
    try {
      const m = fs.readFileSync(path.join(this.blockDir(snap), 'rwmode'), 'utf8').trim();
      return m === 'dir' || m === 'dev' ? m : undefined;
    } catch {
      return undefined;
    }
  }

  private fsTypeOf(labels: Record<string, string>): string {
    return (labels[Labels.fsType] || this.cfg.defaultFsType).split(';')[0];
  }

  // ---- remote layers (Prepare with containerd.io/snapshot.ref) ----

  async beforeCreate(req: CreateRequest, tx: Transaction): Promise<{ committed: string } | undefined> {
    const target = req.labels[Labels.targetRef];
    if (req.kind !== 'active' || !target) return undefined;
    const parent = req.parent ? tx.get(req.parent) : undefined;
    const parentLink = parent ? { dir: this.layout.snapshotDir(parent.id) } : undefined;
    const parentCfg = parentLink ? this.readConfig(parentLink) : undefined;
    const layer = await this.classify(req.labels);
    const name = req.labels[Labels.blobDigest] || req.labels[Labels.criLayerDigest] || target;
    if (layer.kind === 'plain') {
      if (parentCfg)
        throw invalidArgument(
          `layer ${name}: a plain OCI layer on top of the overlaybd layer ${req.parent}: images that mix overlaybd and OCI layers are not supported`,
        );
      return undefined;
    }
    if (layer.kind === 'local') return undefined;
    if (parent && !parentCfg)
      throw invalidArgument(
        `layer ${layer.kind === "turbo" ? layer.metaDigest : layer.digest}: an overlaybd layer on top of the plain OCI layer ${req.parent}: images that mix overlaybd and OCI layers are not supported`,
      );
    const existing = tx.get(target);
    if (existing) {
      if (existing.kind === 'committed' && existing.parent === req.parent) return { committed: target };
    }
    const key = existing ? `${target}@${req.key}` : target;
    if (layer.kind === 'turbo') {
      // Fetch the small meta blob first: a failure leaves no record behind.
      const meta = await this.fetchTurboMeta(layer);
      const labels = { ...req.labels, [Labels.remote]: REMOTE_SNAPSHOT, [Labels.path]: 'turbo' };
      const rec = tx.createCommitted(key, req.parent, labels, { size: 0, inodes: 0 });
      await this.makeLayerDir(rec, layer.imageRef, parentCfg, (fsDir) => {
        unpackTurboMeta(meta, layer, fsDir);
        return turboLowerConfig(layer, fsDir);
      });
      this.log.log('info', 'TurboOCI layer', { key, meta: layer.metaDigest, target: layer.targetDigest, image: layer.imageRef, id: rec.id });
      return { committed: key };
    }
    const labels = { ...req.labels, [Labels.remote]: REMOTE_SNAPSHOT, [Labels.path]: 'remote' };
    const rec = tx.createCommitted(key, req.parent, labels, { size: 0, inodes: 0 });
    await this.makeRemoteLayerDir(rec, layer, parentCfg);
    this.log.log('info', 'remote layer', { key, digest: layer.digest, size: layer.size, image: layer.imageRef, id: rec.id });
    return { committed: key };
  }

  private async fetchTurboMeta(layer: TurboLayer): Promise<Buffer> {
    const ref = parseReference(layer.imageRef);
    this.registry ??= new RegistryClient(registryOptionsFromConfig(this.cfg, { operationDeadlineMs: 20_000 }));
    try {
      return await this.registry.getBlob(ref.host, ref.repo, layer.metaDigest, { maxBytes: layer.metaSize });
    } catch (err) {
      throw failedPrecondition(`TurboOCI layer ${layer.metaDigest}: fetching its meta blob from ${ref.host}/${ref.repo}: ${(err as Error).message}`);
    }
  }

  /** A committed layer's dir (fs/ filled by `fill`, which returns this layer's lower) with the chain's device config. */
  private async makeLayerDir(rec: SnapshotRecord, imageRef: string, parentCfg: ImageConfig | undefined, fill: (fsDir: string) => LayerConfig): Promise<void> {
    const final = this.layout.snapshotDir(rec.id);
    await this.layout.stageSnapshotDir(rec.id, (tmp) => {
      fs.mkdirSync(path.join(tmp, 'fs'), { recursive: true, mode: 0o755 });
      fs.mkdirSync(path.join(tmp, 'block', 'mountpoint'), { recursive: true, mode: 0o711 });
      fs.writeFileSync(path.join(tmp, 'image_ref'), imageRef);
      const own = fill(path.join(tmp, 'fs'));
      // paths in the config name the final dir
      const lower = Object.fromEntries(Object.entries(own).map(([k, v]) => [k, typeof v === 'string' ? v.split(tmp).join(final) : v])) as LayerConfig;
      const config: ImageConfig = {
        repoBlobUrl: repoBlobUrl(imageRef, this.cfg.mirrorRegistry),
        lowers: [...(parentCfg?.lowers ?? []), lower],
        resultFile: path.join(final, 'block', 'init-debug.log'),
      };
      writeJsonAtomic(path.join(tmp, 'block', 'config.v1.json'), config, 0o600);
    });
  }

  private async makeRemoteLayerDir(rec: SnapshotRecord, layer: Extract<LayerKind, { kind: 'remote' }>, parentCfg?: ImageConfig): Promise<void> {
    await this.makeLayerDir(rec, layer.imageRef, parentCfg, (fsDir) => ({ digest: layer.digest, size: layer.size, dir: fsDir }));
  }

  private async classify(labels: Record<string, string>): Promise<LayerKind> {
    const imageRef = labels[Labels.imageRef] || labels[Labels.criImageRef];
    let turbo;
    try {
      turbo = turboFromLabels(labels);
    } catch (err) {
      throw invalidArgument((err as Error).message);
    }
    if (turbo) {
      if (!turbo.imageRef)
        throw invalidArgument(`TurboOCI layer ${turbo.metaDigest}: needs the label ${Labels.imageRef} (pull with obd rpull or CRI) to find its original layer blob`);
      return { ...turbo, imageRef: turbo.imageRef };
    }
    const digest = labels[Labels.blobDigest];
    const sizeText = labels[Labels.blobSize];
    if (digest && sizeText) {
      const size = Number(sizeText);
      if (!Number.isSafeInteger(size) || size <= 0) throw invalidArgument(`label ${Labels.blobSize}=${JSON.stringify(sizeText)}: must be a positive integer`);
      if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw invalidArgument(`label ${Labels.blobDigest}=${JSON.stringify(digest)}: not a sha256 digest`);
      return imageRef ? { kind: 'remote', digest, size, imageRef } : { kind: 'local' };
    }
    // No overlaybd annotations: CRI still names the layer's blob; one range read of its header decides.
    const layerDigest = labels[Labels.criLayerDigest];
    if (imageRef && layerDigest && /^sha256:[0-9a-f]{64}$/.test(layerDigest)) {
      const d = await this.detectRemote(imageRef, layerDigest);
      if (d?.overlaybd) return { kind: 'remote', digest: layerDigest, size: d.size, imageRef };
    }
    return { kind: 'plain' };
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

  // ---- container snapshots ----

  /** The rwMode for a new snapshot: its label, else the config; writable modes need an overlaybd parent (or none). */
  private modeFor(labels: Record<string, string>): RwMode {
    const m = labels[Labels.writable] || this.cfg.rwMode;
    return m === 'dir' || m === 'dev' ? m : 'overlayfs';
  }

  async afterCreate(snap: ChainLink, req: CreateRequest, ancestors: ChainLink[] = []): Promise<void> {
    if (req.labels[Labels.targetRef]) return; // an image layer being unpacked by containerd
    const mode = this.modeFor(req.labels);
    const parentCfg = ancestors.length > 0 ? this.readConfig(ancestors[0]) : undefined;
    const trace = req.labels[Labels.recordTracePath];
    if (trace !== undefined && (!path.isAbsolute(trace) || !fs.existsSync(trace)))
      throw invalidArgument(`label ${Labels.recordTracePath}=${JSON.stringify(trace)}: must name an existing file (empty: record a trace, else: prefetch it)`);
    if (ancestors.length > 0 && !parentCfg) return;
    // Without a parent, only an explicit label makes a fresh writable disk (ACI's converter does this);
    // the global rwMode applies to containers of overlaybd images.
    if (ancestors.length === 0 && !req.labels[Labels.writable]) return;
    if (mode === 'overlayfs') {
      if (trace && parentCfg) await this.setLayerTrace(ancestors[0], trace);
      return;
    }
    const block = this.blockDir(snap);
    fs.mkdirSync(path.join(block, 'mountpoint'), { recursive: true, mode: 0o711 });
    const data = path.join(block, 'writable_data');
    const index = path.join(block, 'writable_index');
    const vsizeGB = Number(req.labels[Labels.vsize] || 64);
    if (!Number.isInteger(vsizeGB) || vsizeGB <= 0) throw invalidArgument(`label ${Labels.vsize}=${JSON.stringify(req.labels[Labels.vsize])}: must be a positive integer (GB)`);
    createWritableLayer(data, index, { vsize: vsizeGB * GiB });
    const config: ImageConfig = {
      ...(parentCfg?.repoBlobUrl ? { repoBlobUrl: parentCfg.repoBlobUrl } : {}),
      lowers: parentCfg?.lowers ?? [],
      upper: { index, data },
      resultFile: path.join(block, 'init-debug.log'),
      ...(trace ? { recordTracePath: trace } : {}),
    };
    writeJsonAtomic(this.configPath(snap), config);
    fs.writeFileSync(path.join(block, 'rwmode'), mode);
    if (!parentCfg) {
      // A fresh disk: make the filesystem now (ACI: mkfs only for the bottom writable layer).
      await this.lock.run(this.writableDeviceId(snap.record.id), async () => {
        const dev = await this.devices.attach(this.writableDeviceId(snap.record.id), this.configPath(snap));
        await this.devices.mkfs(dev.path, this.fsTypeOf(req.labels));
      });
    }
    this.log.log('info', 'writable device snapshot', { key: snap.key, id: snap.record.id, mode, vsizeGB });
  }

  async mounts(req: MountRequest): Promise<Mount[] | undefined> {
    const snap = req.snapshot;
    if (snap.record.kind === 'committed') return undefined;
    const readonly = snap.record.kind === 'view';
    const mode = this.writableMode(snap);
    if (mode) {
      const id = this.writableDeviceId(snap.record.id);
      return this.lock.run(id, async () => {
        const dev = await this.devices.attach(id, this.configPath(snap));
        if (mode === 'dev') return [{ type: this.fsTypeOf(snap.record.labels), source: dev.path, options: [readonly ? 'ro' : 'rw', 'discard'] }];
        await this.devices.ensureMounted(dev, this.mountpoint(snap), this.fsTypeOf(snap.record.labels), 'rw,discard');
        return [{ type: 'bind', source: this.mountpoint(snap), options: [readonly ? 'ro' : 'rw', 'rbind'] }];
      });
    }
    const parent = req.ancestors[0];
    if (!parent || !this.readConfig(parent)) return undefined;
    const lower = await this.ensureLayerMounted(parent);
    if (readonly && req.extraLowers.length === 0) return [{ type: 'bind', source: lower, options: ['ro', 'rbind'] }];
    const options: string[] = overlayIndexOff ? ['index=off'] : [];
    if (!readonly) options.push(`workdir=${req.workDir}`, `upperdir=${snap.fsDir}`);
    options.push(`lowerdir=${[lower, ...req.extraLowers].join(':')}`);
    return [{ type: 'overlay', source: 'overlay', options }];
  }

  /**
   * Puts the shared device of an image top layer into trace mode (record or prefetch, ACI's
   * recordTracePath) or back to normal: the device is re-attached with the new config, which needs
   * it unused.
   */
  private setLayerTrace(layer: ChainLink, trace: string | undefined): Promise<void> {
    const id = this.layerDeviceId(layer.record.id);
    return this.lock.run(id, async () => {
      const cfg = this.readConfig(layer)!;
      // Same trace, already replaying: containers of one image share the prefetched device. A device
      // that was recording into the file (now non-empty) is re-attached to replay it.
      const modeFile = path.join(this.blockDir(layer), 'trace-mode');
      const mode = trace ? traceMode(trace) : 'none';
      const was = fs.existsSync(modeFile) ? fs.readFileSync(modeFile, 'utf8') : 'none';
      if (cfg.recordTracePath === trace && was === mode) return;
      if (!(await this.devices.unmount(this.mountpoint(layer), false)))
        throw failedPrecondition(`image layer ${layer.key}: its device is in use by other containers; stop them to record or replay a trace`);
      await this.devices.detach(id, false);
      const next: ImageConfig = { ...cfg };
      if (trace) next.recordTracePath = trace;
      else delete next.recordTracePath;
      writeJsonAtomic(this.configPath(layer), next);
      fs.writeFileSync(modeFile, mode);
      this.log.log('info', trace ? 'image device in trace mode' : 'image device back to normal', { layer: layer.key, trace });
    });
  }

  /** The shared read-only device of an image top layer, attached and mounted; returns the mountpoint. */
  ensureLayerMounted(layer: ChainLink): Promise<string> {
    const id = this.layerDeviceId(layer.record.id);
    return this.lock.run(id, async () => {
      const dev = await this.devices.attach(id, this.configPath(layer));
      const mp = this.mountpoint(layer);
      await this.devices.ensureMounted(dev, mp, this.fsTypeOf(layer.record.labels), 'ro,noload');
      return mp;
    });
  }

  // ---- commit: seal a writable upper into a layer ----

  async beforeCommit(snap: ChainLink, name: string, ancestors: ChainLink[] = []): Promise<Record<string, string> | undefined> {
    const mode = this.writableMode(snap);
    const sealed = path.join(snap.fsDir, 'overlaybd.sealed');
    if (mode) {
      const id = this.writableDeviceId(snap.record.id);
      await this.lock.run(id, async () => {
        if (!(await this.devices.unmount(this.mountpoint(snap), false)))
          throw failedPrecondition(`commit ${snap.key}: its filesystem is still in use at ${this.mountpoint(snap)} (stop the container first)`);
        await this.devices.detach(id, false);
        const cfg = this.readConfig(snap)!;
        const block = this.blockDir(snap);
        commitLayer(path.join(block, 'writable_data'), path.join(block, 'writable_index'), sealed);
        const config: ImageConfig = { ...cfg, lowers: [...(cfg.lowers ?? []), { dir: snap.fsDir }] };
        delete config.upper;
        writeJsonAtomic(this.configPath(snap), config);
        for (const f of ['writable_data', 'writable_index', 'rwmode']) fs.rmSync(path.join(block, f), { force: true });
      });
      this.log.log('info', 'sealed writable layer', { key: snap.key, name, file: sealed });
      return { [Labels.localCommitPath]: sealed, [Labels.path]: 'local' };
    }
    // An overlaybd blob that containerd downloaded and untarred (pull without an image ref).
    const blob = path.join(snap.fsDir, 'overlaybd.commit');
    const parentCfg = ancestors.length > 0 ? this.readConfig(ancestors[0]) : undefined;
    if (fs.existsSync(blob) && this.hasOverlaybdHeader(blob)) {
      if (ancestors.length > 0 && !parentCfg)
        throw invalidArgument(`commit ${name}: an overlaybd layer on top of the plain OCI layer ${ancestors[0].key}: mixed images are not supported`);
      fs.mkdirSync(path.join(this.blockDir(snap), 'mountpoint'), { recursive: true, mode: 0o711 });
      const config: ImageConfig = {
        ...(parentCfg?.repoBlobUrl ? { repoBlobUrl: parentCfg.repoBlobUrl } : {}),
        lowers: [...(parentCfg?.lowers ?? []), { dir: snap.fsDir }],
        resultFile: path.join(this.blockDir(snap), 'init-debug.log'),
      };
      writeJsonAtomic(this.configPath(snap), config);
      return { [Labels.localCommitPath]: blob, [Labels.path]: 'local' };
    }
    return undefined;
  }

  private hasOverlaybdHeader(file: string): boolean {
    const fd = fs.openSync(file, 'r');
    try {
      const b = Buffer.alloc(DETECT_BYTES);
      const n = fs.readSync(fd, b, 0, b.length, 0);
      return looksLikeOverlaybd(b.subarray(0, n));
    } finally {
      fs.closeSync(fd);
    }
  }

  // ---- remove ----

  async beforeRemoveDir(snap: ChainLink, ancestors: ChainLink[] = [], siblings = 0): Promise<void> {
    // The record is gone already: a failure here must not fail the Remove; Cleanup retries the dir.
    await this.releaseDevices(snap, ancestors, siblings).catch((err: Error) =>
      this.log.log('warn', 'releasing the devices of a removed snapshot failed', { key: snap.key, id: snap.record.id, err: err.message }),
    );
  }

  private async releaseDevices(snap: ChainLink, ancestors: ChainLink[], siblings: number): Promise<void> {
    if (this.writableMode(snap)) {
      const id = this.writableDeviceId(snap.record.id);
      await this.lock.run(id, async () => {
        await this.devices.unmount(this.mountpoint(snap), true);
        await this.devices.detach(id, true);
      });
    } else if (snap.record.kind === 'committed' && this.readConfig(snap)) {
      // The layer's own shared device (its children are gone: containerd removes them first).
      const id = this.layerDeviceId(snap.record.id);
      await this.lock.run(id, async () => {
        await this.devices.unmount(this.mountpoint(snap), true);
        await this.devices.detach(id, true);
      });
    }
    const parent = ancestors[0];
    // Only when no other snapshot of the image exists: a new one may just have put the device into
    // replay mode (or be between its Mounts and containerd's mount).
    if (snap.record.labels[Labels.recordTracePath] && siblings === 0 && parent && this.readConfig(parent)?.recordTracePath) {
      // The recording (or replaying) container is gone: the next container gets a normal device.
      await this.setLayerTrace(parent, undefined).catch((err: Error) =>
        this.log.log('warn', 'image device stays in trace mode', { layer: parent.key, err: err.message }),
      );
    }
    // Another snapshot of the same image may be between its Mounts and containerd's mount: keep the device.
    if (this.cfg.autoRemoveDev && snap.record.kind !== 'committed' && siblings === 0 && parent && this.readConfig(parent)) {
      const id = this.layerDeviceId(parent.record.id);
      await this.lock.run(id, async () => {
        // Busy (another container's overlay still uses it) → keep it; Mounts re-attaches on demand anyway.
        if (!(await this.devices.unmount(this.mountpoint(parent), false))) return;
        await this.devices.detach(id, false).catch((err: Error) => this.log.log('warn', 'autoRemoveDev: detach failed', { id, err: err.message }));
      });
    }
  }

  /** Bytes fetched from the registry for the device of `layer` (tests, demo). */
  async layerStats(layer: ChainLink) {
    return this.devices.stats(this.layerDeviceId(layer.record.id));
  }
}
