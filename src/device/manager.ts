// DeviceManager: owns every device of this host. Attach/Detach/List/Stats, the on-disk state that
// survives restarts (one directory per device holding its config.v1.json), and recovery on start:
// whatever a killed predecessor left in the kernel is cleaned up, what was attached is re-attached.
//
// State dir (<root>/deviced):
//   devices/<id>/config.v1.json   the device's config (overlaybd schema), written before the attach
//   devices/<id>/attachment.json  {id, sourcePath, attachedAt}: present ⇔ the device should be attached
//   devices/<id>/fuse-init        the FUSE_INIT request its connection began with (fuse-loop; a
//                                 successor replays it when it takes the connection over)
//   devices/<id>/page-cache-when-local  present ⇔ a lazy device whose FUSE file was opened for a later
//                                 switch to the page cache (deviceCache auto); a successor may still switch it
//   mnt/<id>/                     private FUSE mount serving the device's backing file (fuse-loop)
// A fuse-loop device's /dev/fuse and /dev/loopN descriptors live in a DeviceFdStore as well, so a
// restart or crash of deviced leaves the device running: the next start takes it over (same
// /dev/loopN, same mounts), and the kernel resends what the dead process had read and not answered.
// With transport tcmu a device is the configfs backstore core/user_<hba>/dev_<id> (its dev_config names
// devices/<id>/config.v1.json) exported through tcm_loop as /dev/sdX; it outlives deviced's restarts.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as addon from '../addon';
import { writeFileAtomic } from '../atomic-file';
import type { DeviceCache } from '../config';
import type { Logger } from '../log';
import { DeviceError, fromAddonError } from './errors';
import { closeLowers, ImageConfig, parseImageConfig, ResolvedLower, resolveLowers, writeResultFile } from './image-config';
import { openRegularFileSync, pathOfFd } from '../untrusted-file';
import type { DeviceFdStore, HeldDevice } from './fd-store';
import { listLoopDevices, mountPointsOf, readMountInfo } from '../kernel';
import { downloadSettings, type RecordingSession, type RemoteLowers, warmLayerEnds } from './remote';
import type { FetchTotals } from './fetch-counters';
import { checkTraceFile, readTraceFile, TracePrefetch, traceMode, TraceWriter } from '../trace/trace';

export type TransportName = 'fuse-loop' | 'tcmu';

export interface DeviceInfo {
  id: string;
  path: string;
  configPath: string;
  sourcePath: string;
  readOnly: boolean;
  size: number;
  transport: TransportName;
  directIo: boolean;
  fusePath: string; // fuse-loop: "/dev/fuse" or "io_uring"; "" for tcmu
  cache: 'page' | 'direct' | ''; // fuse-loop: page-cached or direct I/O; "" for tcmu
  attachedAtMs: number;
  mountedAt: string[];
}

export interface DeviceStatsInfo extends addon.DeviceCounters {
  id: string;
  path: string;
  fetchedBytes: number;
  cacheHits: number;
  cacheMisses: number;
  prefetchedBytes: number;
}

/** deviced-wide and cumulative since it started: devices that are gone still count. */
export interface DevicedTotals extends FetchTotals {
  deviceReadBytes: number; // read by the kernel from every device, attached or detached since
  deviceFetchedBytes: number; // fetched on behalf of every device's reads
  detachedDevices: number;
}

interface Attached {
  id: string;
  sourcePath: string;
  configText: string;
  attachedAtMs: number;
  dev: addon.AttachedDevice;
  remotes: addon.RemoteFile[];
  /** Gives back the remote lowers (their registry location is pruned with its last device). */
  releases: Array<() => void>;
  recording?: RecordingSession;
  prefetch?: TracePrefetch;
  held: boolean; // its descriptors are in the fd store: a successor can take it over
  /** deviceCache auto, a lazy device (read-only or writable): becomes page-cached once every remote blob is local. */
  pageCacheWhenLocal: boolean;
}

interface AttachmentRecord {
  id: string;
  sourcePath: string;
  attachedAt: number;
}

function cacheOf(dev: addon.AttachedDevice): DeviceInfo['cache'] {
  return dev.pageCache === undefined ? '' : dev.pageCache ? 'page' : 'direct';
}

const LOCAL_BLOBS_CHECK_MS = 2000;
const PAGE_CACHE_WHEN_LOCAL = 'page-cache-when-local';

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export interface TransportDecision {
  transport?: TransportName; // undefined: the wanted transport cannot run here
  reason: string;
}

/** The one rule (deviced at start, `obd doctor`): auto = tcmu where the kernel can serve it, else fuse-loop. */
export function decideTransport(wanted: 'auto' | 'tcmu' | 'fuse-loop', tcmu: () => addon.TcmuSupport): TransportDecision {
  if (wanted === 'fuse-loop') return { transport: 'fuse-loop', reason: 'configured' };
  const t = tcmu();
  if (wanted === 'tcmu')
    return t.ok
      ? { transport: 'tcmu', reason: 'configured' }
      : { reason: `transport "tcmu" needs target_core_user, tcm_loop and their dependencies: ${t.reason} (or set "transport": "fuse-loop")` };
  return t.ok ? { transport: 'tcmu', reason: 'kernel supports tcmu' } : { transport: 'fuse-loop', reason: t.reason };
}

/** deviced's choice at start (TCMU modules loaded on demand); a transport that cannot run stops it. */
export function chooseTransport(wanted: 'auto' | 'tcmu' | 'fuse-loop', log: Logger): TransportName {
  const d = decideTransport(wanted, () => addon.tcmuSupported(true));
  if (!d.transport) throw new DeviceError('FailedPrecondition', d.reason);
  if (wanted === 'auto') log.log('info', 'transport chosen', { transport: d.transport, reason: d.reason });
  return d.transport;
}

/**
 * Whether a new fuse-loop device runs page-cached. auto: only when every lower is local (layer files,
 * fully downloaded blobs); a lazy device starts direct, so its remote misses overlap, and switches once
 * its blobs are local (see docs/architecture.md "The fuse-loop data path").
 */
export function pageCached(mode: DeviceCache, remoteLowers: number): boolean {
  return mode === 'page' || (mode === 'auto' && remoteLowers === 0);
}

/** The TCMU HBA (core/user_<hba>): the config's tenant, else accelerated-container-image's. */
export function tcmuHba(tenant: number): number {
  return tenant >= 0 ? tenant : addon.TCMU_DEFAULT_HBA;
}

/** A number for the tcm_loop WWN (naa.199 + 13 digits): a numeric id (a snapshot id) as is, else from its hash. */
function loopbackId(id: string): number {
  if (/^\d{1,13}$/.test(id)) return Number(id);
  return parseInt(crypto.createHash('sha256').update(id).digest('hex').slice(0, 12), 16) % 1e13;
}

export class DeviceManager {
  private readonly devices = new Map<string, Attached>();
  private readonly retired = { readBytes: 0, fetchedBytes: 0, devices: 0 }; // detached devices' last counters
  private readonly busy = new Set<string>(); // ids with an attach/detach in progress
  private localBlobsTimer?: NodeJS.Timeout;
  readonly devicesDir: string;
  readonly mntDir: string;

  constructor(
    readonly stateDir: string,
    readonly transport: TransportName,
    private readonly log: Logger,
    private readonly remote?: RemoteLowers,
    private readonly hba = addon.TCMU_DEFAULT_HBA,
    private readonly fdStore?: DeviceFdStore,
    private readonly fuseIoUring = false,
    private readonly deviceCache: DeviceCache = 'direct',
  ) {
    this.devicesDir = path.join(stateDir, 'devices');
    this.mntDir = path.join(stateDir, 'mnt');
  }

  /** Creates the state dirs, cleans what a previous instance left, re-attaches recorded devices. */
  async recover(): Promise<void> {
    fs.mkdirSync(this.devicesDir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(this.mntDir, { recursive: true, mode: 0o700 });
    const handed = this.fdStore?.takeInherited() ?? new Map<string, HeldDevice>();
    const live = new Set([...handed].filter(([id, h]) => this.canTakeOver(id, h)).map(([id]) => id));
    this.cleanStaleKernelState(live);
    if (this.transport === 'tcmu') this.cleanStaleTcmu();
    for (const id of fs.readdirSync(this.devicesDir)) {
      await this.reattach(id, live.has(id) ? handed.get(id) : undefined);
      handed.delete(id);
    }
    for (const [id, h] of handed) await this.dropHeld(id, h, 'no device record');
  }

  /** A device the previous deviced left running: its descriptors, record and FUSE_INIT are all here. */
  private canTakeOver(id: string, h: HeldDevice): boolean {
    const dir = path.join(this.devicesDir, id);
    return (
      this.transport === 'fuse-loop' &&
      h.fuseFd !== undefined &&
      h.loopFd !== undefined &&
      fs.existsSync(path.join(dir, 'attachment.json')) &&
      fs.existsSync(path.join(dir, 'fuse-init'))
    );
  }

  /** Handed-over descriptors nobody will serve: closing the last copy ends the connection. */
  private async dropHeld(id: string, h: HeldDevice, why: string): Promise<void> {
    try {
      await this.fdStore?.forget(id);
    } catch (err) {
      this.log.log('warn', 'could not drop held descriptors', { id, err: (err as Error).message });
    }
    if (h.fuseFd !== undefined) addon.closeFd(h.fuseFd);
    if (h.loopFd !== undefined) addon.closeFd(h.loopFd);
    this.log.log('info', 'dropped a device the previous deviced left', { id, reason: why });
  }

  /** Backstores of our HBA without a record are stale (a recorded one is adopted by reattach). */
  private cleanStaleTcmu(): void {
    for (const name of addon.tcmuListBackstores(this.hba)) {
      const id = name.startsWith('dev_') ? name.slice(4) : '';
      if (id && fs.existsSync(path.join(this.devicesDir, id, 'attachment.json'))) continue;
      try {
        addon.tcmuRemoveStale(this.hba, name);
        this.log.log('info', 'removed stale tcmu device', { backstore: `user_${this.hba}/${name}` });
      } catch (err) {
        this.log.log('warn', 'could not remove stale tcmu device', { backstore: `user_${this.hba}/${name}`, err: (err as Error).message });
      }
    }
  }

  /** Loop devices and FUSE mounts under mnt/ that no one will serve; `live` ones are taken over. */
  private cleanStaleKernelState(live: Set<string>): void {
    const prefix = this.mntDir + path.sep;
    const isLive = (p: string) => live.has(p.slice(prefix.length).split(path.sep)[0]);
    const mounts = readMountInfo();
    for (const loop of listLoopDevices()) {
      if (!loop.backingFile.startsWith(prefix) || isLive(loop.backingFile)) continue;
      const at = mountPointsOf(loop.major, loop.minor, mounts);
      if (at.length > 0) {
        this.log.log('warn', 'stale loop device from a previous deviced is still mounted; its I/O fails until it is unmounted, then the kernel frees it', {
          device: loop.path,
          backing: loop.backingFile,
          mountedAt: at.join(','),
        });
        continue;
      }
      try {
        addon.loopClear(loop.path);
        this.log.log('info', 'cleaned stale loop device', { device: loop.path, backing: loop.backingFile });
      } catch (err) {
        this.log.log('warn', 'could not clean stale loop device', { device: loop.path, err: (err as Error).message });
      }
    }
    for (const m of mounts) {
      if (!m.mountPoint.startsWith(prefix) || isLive(m.mountPoint)) continue;
      try {
        addon.unmountLazy(m.mountPoint);
        this.log.log('info', 'cleaned stale FUSE mount', { mountPoint: m.mountPoint, source: m.source });
      } catch (err) {
        this.log.log('warn', 'could not unmount stale FUSE mount', { mountPoint: m.mountPoint, err: (err as Error).message });
      }
    }
    for (const name of fs.readdirSync(this.mntDir)) {
      if (live.has(name)) continue;
      try {
        fs.rmdirSync(path.join(this.mntDir, name));
      } catch {
        // still busy (lazily unmounted mount with users); harmless, reused or swept next start
      }
    }
  }

  private async reattach(id: string, held?: HeldDevice): Promise<void> {
    const dir = path.join(this.devicesDir, id);
    const recFile = path.join(dir, 'attachment.json');
    const cfgFile = path.join(dir, 'config.v1.json');
    let rec: AttachmentRecord | undefined;
    let text = '';
    try {
      rec = JSON.parse(fs.readFileSync(recFile, 'utf8')) as AttachmentRecord;
      text = fs.readFileSync(cfgFile, 'utf8');
    } catch {
      this.log.log('warn', 'removed stale device entry (never finished attaching)', { id });
      fs.rmSync(dir, { recursive: true, force: true });
      return;
    }
    let takeover: addon.FuseTakeover | undefined;
    if (held) takeover = { fuseFd: held.fuseFd!, loopFd: held.loopFd!, init: fs.readFileSync(path.join(dir, 'fuse-init')) };
    try {
      const d = await this.attachFromText(id, text, rec.sourcePath, rec.attachedAt, true, takeover);
      if (d.dev.tookOver) this.logTakeover(id, d);
      else this.log.log('info', 're-attached device', { id, device: d.dev.path });
    } catch (err) {
      this.log.log('warn', 'removed stale device entry: re-attach failed', { id, err: (err as Error).message });
      fs.rmSync(dir, { recursive: true, force: true });
      if (held) {
        await this.dropHeld(id, held, 'take-over failed');
        held = undefined;
        try {
          addon.unmountLazy(path.join(this.mntDir, id));
        } catch {
          // not mounted
        }
      }
      if (this.transport === 'tcmu' && addon.tcmuListBackstores(this.hba).includes(`dev_${id}`)) {
        try {
          addon.tcmuRemoveStale(this.hba, `dev_${id}`);
        } catch (e) {
          this.log.log('warn', 'could not remove stale tcmu device', { id, err: (e as Error).message });
        }
      }
    }
  }

  /** Attach from a config.v1.json path or its content; idempotent for the same id and content. */
  async attach(req: { id?: string; configPath?: string; configJson?: string }): Promise<DeviceInfo> {
    if (!!req.configPath === !!req.configJson)
      throw new DeviceError('InvalidArgument', 'give exactly one of config_path and config_json');
    let text: string;
    let sourcePath = '';
    if (req.configPath) {
      sourcePath = path.resolve(req.configPath);
      let fd: number | undefined;
      try {
        fd = openRegularFileSync(sourcePath);
      } catch (err) {
        throw new DeviceError('InvalidArgument', `config ${(err as Error).message}`);
      }
      if (fd === undefined) throw new DeviceError('NotFound', `config ${sourcePath}: no such file`);
      try {
        text = fs.readFileSync(fd, 'utf8');
      } finally {
        fs.closeSync(fd);
      }
    } else {
      text = req.configJson!;
    }
    const id = req.id || crypto.createHash('sha256').update(sourcePath || text).digest('hex').slice(0, 16);
    if (!ID_RE.test(id)) throw new DeviceError('InvalidArgument', `device id ${JSON.stringify(id)}: use letters, digits, "._-" (max 128)`);
    const existing = this.devices.get(id);
    if (existing) {
      if (existing.configText === text) return this.info(existing);
      throw new DeviceError('AlreadyExists', `device ${id} is already attached (${existing.dev.path}) with a different config`);
    }
    return this.info(await this.attachFromText(id, text, sourcePath, Date.now()));
  }

  private logTakeover(id: string, a: Attached): void {
    this.log.log('info', 'took over device from the previous deviced', { id, device: a.dev.path });
    if (a.dev.resendError)
      this.log.log('warn', 'kernel cannot resend requests (FUSE_NOTIFY_RESEND needs Linux 6.9): I/O the previous deviced had read but not answered stays unanswered, its callers wait until the device is detached', {
        id,
        err: a.dev.resendError,
      });
  }

  /**
   * adopt: serve a tcmu device an earlier deviced left in the kernel (its /dev/sdX and mounts stay).
   * takeover: serve the live fuse-loop device whose descriptors the fd store handed back.
   */
  private async attachFromText(
    id: string,
    text: string,
    sourcePath: string,
    attachedAt: number,
    adopt = false,
    takeover?: addon.FuseTakeover,
  ): Promise<Attached> {
    if (this.busy.has(id)) throw new DeviceError('FailedPrecondition', `device ${id}: another attach or detach is in progress`);
    this.busy.add(id);
    let cfg: ImageConfig | undefined;
    let recording: RecordingSession | undefined;
    let localLowers: ResolvedLower[] = [];
    const releases: Array<() => void> = [];
    const dir = path.join(this.devicesDir, id);
    const mountDir = path.join(this.mntDir, id);
    try {
      cfg = parseImageConfig(text, sourcePath || `device ${id}`);
      const opts: addon.DeviceAttachOptions = { id, mountDir, transport: this.transport, takeover, fuseIoUring: this.fuseIoUring };
      if (this.transport === 'tcmu') {
        const cfgString = `overlaybd/${path.join(dir, 'config.v1.json')}`;
        opts.tcmu = { hba: this.hba, name: `dev_${id}`, cfgString, loopbackId: loopbackId(id), adoptExisting: adopt };
      }
      const remotes: addon.RemoteFile[] = [];
      const byDigest = new Map<string, addon.RemoteFile>();
      const overlaybdRemotes: addon.RemoteFile[] = []; // remote overlaybd layers (not TurboOCI targets)
      // recordTracePath (ACI): an empty file records the blob ranges this device touches, a non-empty one is replayed.
      // deviced opens trace files as root: only regular files in the configured trace directory.
      if (this.remote && cfg.recordTracePath) {
        try {
          checkTraceFile(cfg.recordTracePath, this.remote.traceDir);
        } catch (err) {
          throw new DeviceError('InvalidArgument', `recordTracePath ${JSON.stringify(cfg.recordTracePath)}: ${(err as Error).message}`);
        }
      }
      const trace = this.remote && cfg.recordTracePath ? traceMode(cfg.recordTracePath) : 'none';
      if (trace === 'record') recording = this.remote!.openRecording(path.join(this.stateDir, 'trace-cache', id), () => new TraceWriter(cfg!.recordTracePath!));
      if (cfg.rawImage) {
        opts.rawFile = cfg.rawImage.file;
        opts.rawWritable = !!cfg.rawImage.writable;
        opts.pageCache = pageCached(this.deviceCache, 0);
      } else {
        // TurboOCI targets get no background download (as overlaybd): their reads are spans, the meta is local.
        const openRemote = (url: string, digest: string, size: number, download = true): string | addon.RemoteFile => {
          if (!this.remote) throw new DeviceError('Unimplemented', `remote lower ${digest} (${url}): registry-backed layers are not supported by this deviced`);
          const opened = this.remote.open(url, digest, size, recording, download ? downloadSettings(cfg!.download) : undefined);
          releases.push(opened.release);
          if (opened.kind === 'verified') return opened.path;
          remotes.push(opened.file);
          byDigest.set(digest, opened.file);
          return opened.file;
        };
        localLowers = resolveLowers(cfg);
        const lowers: NonNullable<addon.DeviceAttachOptions['lowers']> = [];
        for (const l of localLowers) {
          // The data path opens exactly the file checked here (no second lookup of the path).
          if (l.kind === 'file') lowers.push(pathOfFd(l.fd));
          else if (l.kind === 'remote') {
            const lower = openRemote(l.url, l.digest, l.size);
            lowers.push(lower);
            if (typeof lower !== 'string') overlaybdRemotes.push(lower);
          }
          else lowers.push(await this.turboLower(l, openRemote));
        }
        opts.lowers = lowers;
        opts.pageCache = pageCached(this.deviceCache, remotes.length);
        // A successor cannot see how its predecessor opened the file: the record says.
        opts.cacheableFile = takeover
          ? fs.existsSync(path.join(dir, PAGE_CACHE_WHEN_LOCAL))
          : this.deviceCache === 'auto' && !opts.pageCache;
        if (cfg.upper?.data) {
          opts.upperData = cfg.upper.data;
          opts.upperIndex = cfg.upper.index;
        }
      }
      // Record first: if we die mid-attach, the next start finds a dir without attachment.json and removes it.
      fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
      writeFileAtomic(path.join(dir, 'config.v1.json'), text, 0o600);
      warmLayerEnds(overlaybdRemotes);
      let dev: addon.AttachedDevice;
      try {
        dev = await addon.deviceAttach(opts);
      } catch (err) {
        // The addon saw the layer files through /proc/self/fd: errors name them by their paths again.
        const byFd = new Map(localLowers.flatMap((l) => (l.kind === 'file' ? [[l.fd, l.path] as const] : [])));
        const e = err as Error;
        e.message = e.message.replace(/\/proc\/self\/fd\/(\d+)/g, (m, n: string) => byFd.get(Number(n)) ?? m);
        throw fromAddonError(e, `attach ${id}`);
      }
      const pageCacheWhenLocal = !!opts.cacheableFile && dev.pageCache === false;
      const a: Attached = { id, sourcePath, configText: text, attachedAtMs: attachedAt, dev, remotes, releases, recording, held: false, pageCacheWhenLocal };
      if (pageCacheWhenLocal) this.watchLocalBlobs();
      if (takeover) {
        addon.closeFd(takeover.fuseFd); // the device serves its own duplicates
        addon.closeFd(takeover.loopFd);
      }
      if (dev.bdiError)
        this.log.log('warn', 'page-cached device keeps the kernel\'s FUSE dirty limits: its writes are throttled to FUSE_WRITE round trips', { id, err: dev.bdiError });
      a.held = await this.holdDescriptors(id, dev);
      if (trace === 'replay') a.prefetch = this.startPrefetch(id, cfg.recordTracePath!, byDigest);
      if (recording) this.log.log('info', 'recording a trace', { id, trace: cfg.recordTracePath });
      this.devices.set(id, a);
      if (pageCacheWhenLocal) writeFileAtomic(path.join(dir, PAGE_CACHE_WHEN_LOCAL), '', 0o600);
      writeFileAtomic(path.join(dir, 'attachment.json'), JSON.stringify({ id, sourcePath, attachedAt } satisfies AttachmentRecord) + '\n', 0o600);
      writeResultFile(cfg);
      this.log.log('info', 'attached device', { id, device: dev.path, transport: this.transport, readOnly: dev.readOnly, size: dev.size, directIo: dev.directIo, fusePath: dev.fusePath, cache: cacheOf(dev) });
      return a;
    } catch (err) {
      if (!this.devices.has(id)) {
        fs.rmSync(dir, { recursive: true, force: true });
        try {
          fs.rmdirSync(mountDir);
        } catch {
          // not created or already removed by the addon
        }
      }
      if (cfg) writeResultFile(cfg, (err as Error).message);
      if (!this.devices.has(id)) {
        recording?.close();
        for (const r of releases) r();
      }
      this.log.log('warn', 'attach failed', { id, err: (err as Error).message });
      throw err;
    } finally {
      closeLowers(localLowers);
      this.busy.delete(id);
    }
  }

  /** Puts a fuse-loop device's descriptors into the fd store (and its INIT next to its record). */
  private async holdDescriptors(id: string, dev: addon.AttachedDevice): Promise<boolean> {
    if (!this.fdStore || !dev.handover || dev.handover.init.length === 0) return false;
    try {
      writeFileAtomic(path.join(this.devicesDir, id, 'fuse-init'), dev.handover.init, 0o600);
      await this.fdStore.keep(id, { fuseFd: dev.handover.fuseFd, loopFd: dev.handover.loopFd });
      return true;
    } catch (err) {
      this.log.log('warn', 'device will not survive a deviced restart: fd store refused its descriptors', { id, err: (err as Error).message });
      return false;
    }
  }

  private find(idOrPath: string): Attached {
    const byId = this.devices.get(idOrPath);
    if (byId) return byId;
    for (const a of this.devices.values()) if (a.dev.path === idOrPath) return a;
    throw new DeviceError('NotFound', `no attached device ${idOrPath}`);
  }

  async detach(idOrPath: string, force: boolean): Promise<void> {
    const a = this.find(idOrPath);
    if (this.busy.has(a.id)) throw new DeviceError('FailedPrecondition', `device ${a.id}: another attach or detach is in progress`);
    const at = mountPointsOf(a.dev.major, a.dev.minor);
    if (at.length > 0 && !force)
      throw new DeviceError('FailedPrecondition', `device ${a.id} (${a.dev.path}) is mounted at ${at.join(', ')}: unmount it first or detach with force`);
    this.busy.add(a.id);
    const last = this.statsOf(a);
    try {
      // The store's copies go first: our close must be the last one, or the connection would live on.
      if (a.held) await this.fdStore!.forget(a.id);
      await addon.deviceDetach(a.dev.handle, force);
    } catch (err) {
      if (a.held) a.held = await this.holdDescriptors(a.id, a.dev);
      throw fromAddonError(err, `detach ${a.id} (${a.dev.path})`);
    } finally {
      this.busy.delete(a.id);
    }
    this.devices.delete(a.id);
    this.retired.readBytes += last.readBytes;
    this.retired.fetchedBytes += a.remotes.reduce((n, f) => n + f.stats().fetchedBytes, 0);
    this.retired.devices++;
    this.releaseResources(a);
    fs.rmSync(path.join(this.devicesDir, a.id), { recursive: true, force: true });
    this.log.log('info', 'detached device', { id: a.id, device: a.dev.path, force, mountedAt: at.length ? at.join(',') : undefined });
  }

  list(): DeviceInfo[] {
    const mounts = readMountInfo();
    return [...this.devices.values()].map((a) => this.info(a, mounts));
  }

  /** Fetch and read totals of this deviced's life (they survive detach); zeros without remote support. */
  totals(): DevicedTotals {
    const live = this.stats();
    const empty: FetchTotals = { receivedBytes: 0, fetches: 0, failedFetches: 0, bytes: { demand: 0, readahead: 0, prefetch: 0, background: 0 },
      seconds: { buckets: [], sum: 0, count: 0 }, linkBytesPerSec: 0 };
    return {
      ...(this.remote?.totals() ?? empty),
      deviceReadBytes: this.retired.readBytes + live.reduce((n, s) => n + s.readBytes, 0),
      deviceFetchedBytes: this.retired.fetchedBytes + live.reduce((n, s) => n + s.fetchedBytes, 0),
      detachedDevices: this.retired.devices,
    };
  }

  stats(idOrPath?: string): DeviceStatsInfo[] {
    const which = idOrPath ? [this.find(idOrPath)] : [...this.devices.values()];
    return which.map((a) => this.statsOf(a));
  }

  private statsOf(a: Attached): DeviceStatsInfo {
    const r = a.remotes.map((f) => f.stats());
    const sum = (k: (s: addon.RemoteFileStats) => number) => r.reduce((n, s) => n + k(s), 0);
    return {
      id: a.id,
      path: a.dev.path,
      ...addon.deviceStats(a.dev.handle),
      fetchedBytes: sum((s) => s.fetchedBytes),
      cacheHits: sum((s) => s.hits),
      cacheMisses: sum((s) => s.reads - s.hits),
      prefetchedBytes: a.prefetch?.bytes ?? 0,
    };
  }

  /** A TurboOCI lower: local fs meta, the target blob (local, or remote through the block cache) and its gzip index. */
  private async turboLower(l: Extract<ResolvedLower, { kind: 'turbo' }>,
    openRemote: (url: string, digest: string, size: number, download?: boolean) => string | addon.RemoteFile): Promise<addon.WarpLower> {
    let target: string | addon.RemoteFile;
    if (l.target.kind === 'file') {
      target = l.target.path;
    } else {
      if (!this.remote) throw new DeviceError('Unimplemented', `TurboOCI target ${l.target.digest}: registry-backed layers are not supported by this deviced`);
      let size: number;
      try {
        size = await this.remote.blobSize(l.target.url, l.target.digest);
      } catch (err) {
        throw new DeviceError('Unavailable', `TurboOCI target ${l.target.url}: ${(err as Error).message}`);
      }
      target = openRemote(l.target.url, l.target.digest, size, false);
    }
    return { meta: l.meta, target, ...(l.gzipIndex ? { gzipIndex: l.gzipIndex } : {}), gzipCacheBytes: this.remote?.gzipCacheBytes ?? 8 << 20 };
  }

  /** Prefetches the ranges of a trace into the block cache, in trace order, in the background. */
  private startPrefetch(id: string, file: string, files: Map<string, addon.RemoteFile>): TracePrefetch | undefined {
    const p = new TracePrefetch(readTraceFile(file), files);
    this.log.log('info', 'prefetch started', { id, trace: file });
    void p.done.then(() =>
      p.error
        ? this.log.log('warn', 'trace not usable; no prefetch', { id, trace: file, err: p.error.message })
        : this.log.log('info', 'prefetch done', { id, bytes: p.bytes, ranges: p.ranges, errors: p.errors, ms: p.finishedAt - p.startedAt }),
    );
    return p;
  }

  private releaseResources(a: Attached): void {
    for (const r of a.releases) r();
    a.prefetch?.stop();
    if (a.recording) {
      this.log.log('info', 'trace recorded', { id: a.id, trace: a.recording.writer.file, ranges: a.recording.writer.ranges, bytes: a.recording.writer.bytes });
      a.recording.close();
    }
  }

  /** Checks now and then whether a lazy device's blobs are all local, then makes it page-cached. */
  private watchLocalBlobs(): void {
    if (this.localBlobsTimer) return;
    this.localBlobsTimer = setInterval(() => void this.pageCacheLocalDevices(), LOCAL_BLOBS_CHECK_MS);
    this.localBlobsTimer.unref();
  }

  /**
   * deviceCache auto: a lazy device whose every remote blob is now in the block cache (read,
   * prefetched or downloaded) has nothing left to overlap: it becomes page-cached like a local one.
   */
  async pageCacheLocalDevices(): Promise<void> {
    for (const a of this.devices.values()) {
      if (!a.pageCacheWhenLocal || this.busy.has(a.id)) continue;
      const local = a.remotes.every((f) => {
        const s = f.stats();
        return s.units > 0 && s.presentUnits >= s.units;
      });
      if (!local) continue;
      a.pageCacheWhenLocal = false;
      this.busy.add(a.id);
      try {
        await addon.deviceUsePageCache(a.dev.handle);
        a.dev.pageCache = true;
        a.dev.directIo = false;
        if (a.dev.bdiError) this.log.log('warn', 'page-cached device keeps the kernel\'s FUSE dirty limits', { id: a.id, err: a.dev.bdiError });
        this.log.log('info', 'device is page-cached now: all its blobs are local', { id: a.id, device: a.dev.path });
      } catch (err) {
        this.log.log('warn', 'device stays direct: switching it to the page cache failed', { id: a.id, err: (err as Error).message });
      } finally {
        this.busy.delete(a.id);
      }
    }
    if (this.localBlobsTimer && ![...this.devices.values()].some((a) => a.pageCacheWhenLocal)) {
      clearInterval(this.localBlobsTimer); // nothing left to switch: the next such attach starts it again
      this.localBlobsTimer = undefined;
    }
  }

  /** Stops serving every device (process exit). Records stay: the next start re-attaches (tcmu: adopts) them. */
  async closeAll(): Promise<void> {
    if (this.localBlobsTimer) clearInterval(this.localBlobsTimer);
    this.localBlobsTimer = undefined;
    await Promise.all(
      [...this.devices.values()].map(async (a) => {
        try {
          await addon.deviceRelease(a.dev.handle, a.held);
          this.releaseResources(a);
          this.log.log('info', a.held ? 'handed device over to the next deviced' : 'stopped device (will be re-attached on start)', {
            id: a.id,
            device: a.dev.path,
            transport: this.transport,
          });
        } catch (err) {
          this.log.log('warn', 'stopping device failed', { id: a.id, err: (err as Error).message });
        }
      }),
    );
    this.devices.clear();
  }

  private info(a: Attached, mounts = readMountInfo()): DeviceInfo {
    return {
      id: a.id,
      path: a.dev.path,
      configPath: path.join(this.devicesDir, a.id, 'config.v1.json'),
      sourcePath: a.sourcePath,
      readOnly: a.dev.readOnly,
      size: a.dev.size,
      transport: this.transport,
      directIo: a.dev.directIo,
      fusePath: a.dev.fusePath ?? '',
      cache: cacheOf(a.dev),
      attachedAtMs: a.attachedAtMs,
      mountedAt: mountPointsOf(a.dev.major, a.dev.minor, mounts),
    };
  }
}
