// The snapshotter: one method per snapshots.v1 call, each short — a metadata transaction (storage.ts
// owns every rule), the directory change, the mounts (mounts.ts). Only metadata happens inside the
// serialised transaction; slow work (registry probes, device attach, mkfs, mount) runs before or
// after it, one call per snapshot key at a time (KeyedLock). Crash safety comes from ordering:
//   create: allocate an id → mkdir new-* → rename to <id> → set up devices → commit the record
//   remove: delete the record → release devices → rename <id> to rm-* → rm -rf
// A numbered dir without a record is an orphan (a crash mid-create): Cleanup releases its devices and
// removes it, like everything else in snapshots/ that no record names.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { customLowerDirs } from './custom-lower';
import { alreadyExists, failedPrecondition, notFound } from './errors';
import { parseFilters } from './filters';
import { KeyedLock } from './keyed-lock';
import { Layout } from './layout';
import { Logger, silentLogger } from '../log';
import { ChainLink, computeMounts, Mount, MountHook, MountRequest } from './mounts';
import { checkCreate, draftRecord, Info, MetaStore, SnapshotRecord, toInfo, Usage } from './storage';
import { diskUsage } from './usage';

export type { Info, Kind, Usage } from './storage';
export type { Mount } from './mounts';

export interface CreateRequest {
  kind: 'active' | 'view';
  key: string;
  parent: string;
  labels: Record<string, string>;
}

/** A committed snapshot to record instead of the requested one (containerd then skips the unpack). */
export interface TargetSnapshot {
  /** containerd's unpack target (containerd.io/snapshot.ref) */
  target: string;
  labels: Record<string, string>;
  /** Fills the new snapshot's directory (`staging`, renamed to `final` afterwards). */
  stage(staging: string, final: string): Promise<void>;
}

/**
 * Where snapshots that are not plain directories (remote overlaybd layers, writable devices)
 * plug in. Every method is optional; the mount methods come from MountHook. None of them runs
 * inside the metadata transaction.
 */
export interface SnapshotHooks extends MountHook {
  /** Before a Prepare/View (may probe a registry). A target snapshot is recorded instead and the
   *  caller gets AlreadyExists. */
  beforeCreate?(req: CreateRequest, ancestors: ChainLink[]): Promise<TargetSnapshot | undefined>;
  /** After the directory of a new snapshot exists, before its record is committed. */
  afterCreate?(snap: ChainLink, req: CreateRequest, ancestors: ChainLink[]): Promise<void>;
  /** Before an Active snapshot is committed; may return labels to add (e.g. a local commit path). */
  beforeCommit?(snap: ChainLink, name: string, ancestors: ChainLink[]): Promise<Record<string, string> | undefined>;
  /** After the commit is recorded (`snap` is the committed snapshot): finish what beforeCommit staged. */
  afterCommit?(snap: ChainLink): Promise<void>;
  /** After a record is deleted, before its directory goes (e.g. detach its device). */
  /** `siblings`: how many other snapshots still have the same parent. */
  beforeRemoveDir?(snap: ChainLink, ancestors: ChainLink[], siblings: number): Promise<void>;
  /** A snapshot dir that has no record (a create that failed or was cut short): release what it holds. */
  releaseOrphan?(id: number, dir: string): Promise<void>;
  /** At start, for every record: finish or undo what a crash interrupted. */
  recover?(snap: ChainLink): Promise<void>;
  /** Usage of snapshots whose data is not (only) in fs/. */
  usage?(snap: ChainLink): Promise<Usage | undefined>;
}

export interface SnapshotterOptions {
  root: string;
  allowedLowerPrefixes?: string[];
  /** As ACI: Remove drops the metadata only; Cleanup removes the directories. */
  asyncRemove?: boolean;
  hooks?: SnapshotHooks[];
  log?: Logger;
}

export class Snapshotter {
  private closed = false;
  private readonly keys = new KeyedLock();
  /** Ids whose directory exists while their record is not committed yet (Cleanup leaves them). */
  private readonly pending = new Set<number>();

  private constructor(
    private readonly layout: Layout,
    private readonly store: MetaStore,
    private readonly opts: SnapshotterOptions,
    private readonly hooks: SnapshotHooks[],
    private readonly log: Logger,
  ) {}

  static async open(opts: SnapshotterOptions): Promise<Snapshotter> {
    const layout = new Layout(opts.root);
    await fs.mkdir(layout.snapshotsDir, { recursive: true, mode: 0o700 });
    await fs.chmod(opts.root, 0o700);
    const store = await MetaStore.open(layout.metadataDir);
    // A crash between mkdir and the metadata commit leaves a dir whose id was never persisted.
    const onDisk = new Set<number>();
    for (const e of await fs.readdir(layout.snapshotsDir)) {
      const id = Layout.idOf(e);
      if (id !== undefined) {
        store.reserveIdsThrough(id);
        onDisk.add(id);
      }
    }
    const log = opts.log ?? silentLogger;
    // Only a power loss (renames not yet durable while the record was) can get here: say so loudly,
    // keep the record (containerd still references it) and let Remove/GC deal with it.
    for (const [key, rec] of store.entries()) {
      if (!onDisk.has(rec.id)) log.log('error', 'snapshot directory missing', { key, id: rec.id, dir: layout.snapshotDir(rec.id) });
    }
    const sn = new Snapshotter(layout, store, opts, opts.hooks ?? [], log);
    for (const [key, rec] of store.entries()) {
      if (!onDisk.has(rec.id)) continue;
      for (const h of sn.hooks) {
        await h.recover?.(sn.link(key, rec)).catch((err: Error) => log.log('error', 'recovering a snapshot failed', { key, id: rec.id, err: err.message }));
      }
    }
    return sn;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.store.close();
  }

  prepare(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.create({ kind: 'active', key, parent, labels });
  }

  view(key: string, parent: string, labels: Record<string, string>): Promise<Mount[]> {
    return this.create({ kind: 'view', key, parent, labels });
  }

  async mounts(key: string): Promise<Mount[]> {
    const rec = this.store.get(key);
    if (!rec) throw notFound(`snapshot ${key} does not exist`);
    if (rec.kind === 'committed') throw failedPrecondition(`snapshot ${key} is committed: only active snapshots and views have mounts`);
    return this.mountsOf(this.link(key, rec), this.chain(rec.parent));
  }

  commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    return this.keys.run(key, () => this.commitNow(name, key, labels));
  }

  private async commitNow(name: string, key: string, labels: Record<string, string>): Promise<void> {
    // The walk of fs/ and the hooks happen outside the writer queue; the transaction re-checks that
    // `key` is still the same Active snapshot.
    const before = this.store.get(key);
    if (!before) throw notFound(`snapshot ${key} does not exist`);
    if (before.kind !== 'active') throw failedPrecondition(`snapshot ${key} is not active (it is ${before.kind})`);
    if (this.store.get(name)) throw alreadyExists(`snapshot ${name} already exists`);
    const snap = this.link(key, before);
    const extra: Record<string, string> = {};
    const ancestors = this.chain(before.parent);
    for (const h of this.hooks) Object.assign(extra, await h.beforeCommit?.(snap, name, ancestors));
    const usage = await this.usageOf(snap);
    const rec = await this.store.update((tx) => {
      if (tx.requireActive(key).id !== before.id) throw failedPrecondition(`snapshot ${key} changed while committing`);
      return tx.commit(key, name, { ...labels, ...extra }, usage);
    });
    for (const h of this.hooks) await h.afterCommit?.(this.link(name, rec));
    this.log.log('debug', 'commit', { key, name, id: before.id });
  }

  remove(key: string): Promise<void> {
    return this.keys.run(key, () => this.removeNow(key));
  }

  private async removeNow(key: string): Promise<void> {
    const rec = await this.store.update((tx) => tx.remove(key));
    this.log.log('debug', 'remove', { key, id: rec.id });
    const snap = this.link(key, rec);
    const ancestors = rec.parent === '' || !this.store.get(rec.parent) ? [] : this.chain(rec.parent);
    const siblings = rec.parent === '' ? 0 : this.store.childCount(rec.parent);
    for (const h of this.hooks) await h.beforeRemoveDir?.(snap, ancestors, siblings);
    if (this.opts.asyncRemove) return;
    await this.removeDir(String(rec.id)).catch((err: Error) =>
      this.log.log('warn', 'removing snapshot dir failed; Cleanup will retry', { key, id: rec.id, err: err.message }),
    );
  }

  async stat(key: string): Promise<Info> {
    return this.store.info(key);
  }

  async update(info: Pick<Info, 'name' | 'labels'>, paths: readonly string[]): Promise<Info> {
    const rec = await this.store.update((tx) => tx.update(info.name, info.labels, paths));
    return toInfo(info.name, rec);
  }

  async usage(key: string): Promise<Usage> {
    const rec = this.store.get(key);
    if (!rec) throw notFound(`snapshot ${key} does not exist`);
    if (rec.kind === 'committed' && rec.usage) return rec.usage;
    return this.usageOf(this.link(key, rec));
  }

  /** Calls `fn` for each snapshot matching any of `filters` (containerd filter syntax). */
  async walk(filters: readonly string[], fn: (info: Info) => void | Promise<void>): Promise<void> {
    const match = parseFilters(filters);
    for (const [key, rec] of this.store.entries()) {
      const info = toInfo(key, rec);
      if (match((fp) => lookupField(info, fp))) await fn(info);
    }
  }

  /** Removes every entry of snapshots/ that no record names (orphans of crashes, async removes). */
  async cleanup(): Promise<number> {
    // Listed inside the writer queue, so no record is half-way; dirs of creates in progress are pending.
    const orphans = await this.store.update(async () => {
      const ids = this.store.ids();
      return (await fs.readdir(this.layout.snapshotsDir)).filter((e) => {
        const id = Layout.idOf(e);
        if (id !== undefined && this.pending.has(id)) return false;
        if (e.startsWith('new-') && this.pending.has(Number(e.split('-')[1]))) return false;
        return id === undefined || !ids.has(id);
      });
    });
    for (const e of orphans) {
      const id = Layout.idOf(e);
      if (id !== undefined) await this.releaseOrphan(id);
      await this.removeDir(e);
    }
    if (orphans.length) this.log.log('info', 'cleanup removed orphan snapshot dirs', { count: orphans.length });
    return orphans.length;
  }

  private async releaseOrphan(id: number): Promise<void> {
    for (const h of this.hooks) {
      await h.releaseOrphan?.(id, this.layout.snapshotDir(id)).catch((err: Error) =>
        this.log.log('warn', 'releasing what an orphan snapshot dir holds failed', { id, err: err.message }),
      );
    }
  }

  private create(req: CreateRequest): Promise<Mount[]> {
    return this.keys.run(req.key, () => this.createNow(req));
  }

  private async createNow(req: CreateRequest): Promise<Mount[]> {
    // Checked here for a quick answer, and again in the transaction that records the snapshot.
    checkCreate(this.store, req.key, req.parent, req.labels);
    const ancestors = req.parent === '' ? [] : this.chain(req.parent);
    for (const h of this.hooks) {
      const t = await h.beforeCreate?.(req, ancestors);
      if (t) {
        const recorded = await this.keys.run(`target ${t.target}`, () => this.createTarget(req, t));
        throw alreadyExists(`snapshot ${req.key}: target ${recorded} already exists`);
      }
    }
    const id = this.store.allocateId();
    this.pending.add(id);
    try {
      await this.makeDir(id, req.kind);
      const snap = this.link(req.key, draftRecord(id, req.kind, req.parent, req.labels));
      let mounts: Mount[];
      try {
        for (const h of this.hooks) await h.afterCreate?.(snap, req, ancestors);
        mounts = await this.mountsOf(snap, ancestors);
        await this.store.update((tx) => tx.create(req.kind, req.key, req.parent, req.labels, id));
      } catch (err) {
        await this.releaseOrphan(id);
        await this.removeDir(String(id));
        throw err;
      }
      this.log.log('debug', req.kind === 'view' ? 'view' : 'prepare', { key: req.key, parent: req.parent, id });
      return mounts;
    } finally {
      this.pending.delete(id);
    }
  }

  /** Records the committed snapshot a hook staged for containerd's unpack target; returns its key. */
  private async createTarget(req: CreateRequest, t: TargetSnapshot): Promise<string> {
    const existing = this.store.get(t.target);
    if (existing?.kind === 'committed' && existing.parent === req.parent) return t.target;
    const id = this.store.allocateId();
    this.pending.add(id);
    try {
      await this.layout.stageSnapshotDir(id, (dir) => t.stage(dir, this.layout.snapshotDir(id)));
      const made = await this.store
        .update((tx) => tx.createTarget(t.target, req.key, req.parent, t.labels, { size: 0, inodes: 0 }, id))
        .catch(async (err: Error) => {
          await this.removeDir(String(id));
          throw err;
        });
      if (!made) {
        await this.removeDir(String(id));
        return t.target;
      }
      this.log.log('info', 'committed snapshot for an unpack target', { key: made.key, target: t.target, id });
      return made.key;
    } finally {
      this.pending.delete(id);
    }
  }

  private async mountsOf(snap: ChainLink, ancestors: ChainLink[]): Promise<Mount[]> {
    const req: MountRequest = {
      snapshot: snap,
      workDir: this.layout.workDir(snap.record.id),
      ancestors,
      extraLowers: await customLowerDirs(snap.record.labels, this.opts.allowedLowerPrefixes ?? []),
    };
    return computeMounts(req, this.hooks);
  }

  private async usageOf(snap: ChainLink): Promise<Usage> {
    for (const h of this.hooks) {
      const u = await h.usage?.(snap);
      if (u) return u;
    }
    return diskUsage(snap.fsDir);
  }

  private link(key: string, record: SnapshotRecord): ChainLink {
    return { key, record, dir: this.layout.snapshotDir(record.id), fsDir: this.layout.fsDir(record.id) };
  }

  /** `parent` and its ancestors, nearest first. */
  private chain(parent: string): ChainLink[] {
    if (parent === '') return [];
    const rec = this.store.get(parent);
    if (!rec) throw notFound(`parent snapshot ${parent} does not exist`);
    return [this.link(parent, rec), ...this.store.ancestors(parent).map(([k, r]) => this.link(k, r))];
  }

  private async makeDir(id: number, kind: CreateRequest['kind']): Promise<void> {
    await this.layout.stageSnapshotDir(id, async (dir) => {
      await fs.mkdir(path.join(dir, 'fs'));
      await fs.chmod(path.join(dir, 'fs'), 0o755);
      if (kind === 'active') {
        await fs.mkdir(path.join(dir, 'work'));
        await fs.chmod(path.join(dir, 'work'), 0o711);
      }
    });
  }

  /** Renames first so a half-removed dir is never mistaken for a live one. */
  private async removeDir(entry: string): Promise<void> {
    const from = path.join(this.layout.snapshotsDir, entry);
    let target = from;
    if (Layout.idOf(entry) !== undefined) {
      target = path.join(this.layout.snapshotsDir, `rm-${entry}-${crypto.randomBytes(4).toString('hex')}`);
      try {
        await fs.rename(from, target);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw err;
      }
    }
    await fs.rm(target, { recursive: true, force: true });
  }
}

/** containerd's snapshot filter adaptor: kind, name, parent, labels.<key>. */
export function lookupField(info: Info, fieldpath: string[]): [string, boolean] {
  switch (fieldpath[0]) {
    case 'kind':
      return [info.kind, true];
    case 'name':
      return [info.name, true];
    case 'parent':
      return [info.parent, true];
    case 'labels': {
      const k = fieldpath.slice(1).join('.');
      return Object.hasOwn(info.labels, k) ? [info.labels[k], true] : ['', false];
    }
    default:
      return ['', false];
  }
}
