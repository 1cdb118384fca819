// The snapshotter: one method per snapshots.v1 call, each short — a metadata transaction (storage.ts
// owns every rule), the directory change, the mounts (mounts.ts). Crash safety comes from ordering:
//   create: mkdir new-* → rename to <id> → commit the record   (a record always has its dir)
//   remove: delete the record → rename <id> to rm-* → rm -rf    (a crash leaves only orphan dirs)
// and Cleanup removes whatever in snapshots/ no record names.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { customLowerDirs } from './custom-lower';
import { alreadyExists, failedPrecondition, notFound } from './errors';
import { parseFilters } from './filters';
import { Layout } from './layout';
import { Logger, silentLogger } from '../log';
import { ChainLink, computeMounts, Mount, MountHook, MountRequest } from './mounts';
import { Info, MetaStore, SnapshotRecord, toInfo, Transaction, Usage } from './storage';
import { diskUsage } from './usage';

export type { Info, Kind, Usage } from './storage';
export type { Mount } from './mounts';

export interface CreateRequest {
  kind: 'active' | 'view';
  key: string;
  parent: string;
  labels: Record<string, string>;
}

/**
 * Where snapshots that are not plain directories (remote overlaybd layers, writable devices)
 * plug in. Every method is optional; the mount methods come from MountHook.
 */
export interface SnapshotHooks extends MountHook {
  /** Before a Prepare/View is recorded. Return `{ committed }` after staging a committed snapshot
   *  in `tx` (e.g. a remote layer): the transaction is committed and the caller gets AlreadyExists. */
  beforeCreate?(req: CreateRequest, tx: Transaction): Promise<{ committed: string } | undefined>;
  /** After the directory of a new snapshot exists, inside its transaction. */
  afterCreate?(snap: ChainLink, req: CreateRequest, ancestors: ChainLink[]): Promise<void>;
  /** Before an Active snapshot is committed; may return labels to add (e.g. a local commit path). */
  beforeCommit?(snap: ChainLink, name: string, ancestors: ChainLink[]): Promise<Record<string, string> | undefined>;
  /** After a record is deleted, before its directory goes (e.g. detach its device). */
  /** `siblings`: how many other snapshots still have the same parent. */
  beforeRemoveDir?(snap: ChainLink, ancestors: ChainLink[], siblings: number): Promise<void>;
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
    return new Snapshotter(layout, store, opts, opts.hooks ?? [], log);
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

  async commit(name: string, key: string, labels: Record<string, string>): Promise<void> {
    // The walk of fs/ happens outside the writer queue; the transaction re-checks that `key` is
    // still the same Active snapshot.
    const before = this.store.get(key);
    if (!before) throw notFound(`snapshot ${key} does not exist`);
    if (before.kind !== 'active') throw failedPrecondition(`snapshot ${key} is not active (it is ${before.kind})`);
    if (this.store.get(name)) throw alreadyExists(`snapshot ${name} already exists`);
    const snap = this.link(key, before);
    const extra: Record<string, string> = {};
    const ancestors = this.chain(before.parent);
    for (const h of this.hooks) Object.assign(extra, await h.beforeCommit?.(snap, name, ancestors));
    const usage = await this.usageOf(snap);
    await this.store.update((tx) => {
      if (tx.requireActive(key).id !== before.id) throw failedPrecondition(`snapshot ${key} changed while committing`);
      tx.commit(key, name, { ...labels, ...extra }, usage);
    });
    this.log.log('debug', 'commit', { key, name, id: before.id });
  }

  async remove(key: string): Promise<void> {
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
    // Listed inside the writer queue, so no create is half-way (its new-* dir would look orphaned).
    const orphans = await this.store.update(async () => {
      const ids = this.store.ids();
      return (await fs.readdir(this.layout.snapshotsDir)).filter((e) => {
        const id = Layout.idOf(e);
        return id === undefined || !ids.has(id);
      });
    });
    for (const e of orphans) await this.removeDir(e);
    if (orphans.length) this.log.log('info', 'cleanup removed orphan snapshot dirs', { count: orphans.length });
    return orphans.length;
  }

  private async create(req: CreateRequest): Promise<Mount[]> {
    let shortcut: string | undefined;
    const mounts = await this.store.update(async (tx) => {
      for (const h of this.hooks) {
        const r = await h.beforeCreate?.(req, tx);
        if (r) {
          shortcut = r.committed;
          return [];
        }
      }
      const rec = tx.create(req.kind, req.key, req.parent, req.labels);
      const snap = this.link(req.key, rec);
      const ancestors = req.parent === '' ? [] : this.chain(req.parent);
      await this.makeDir(rec);
      try {
        for (const h of this.hooks) await h.afterCreate?.(snap, req, ancestors);
        return await this.mountsOf(snap, ancestors);
      } catch (err) {
        await this.removeDir(String(rec.id));
        throw err;
      }
    });
    if (shortcut !== undefined) throw alreadyExists(`snapshot ${req.key}: target ${shortcut} already exists`);
    this.log.log('debug', req.kind === 'view' ? 'view' : 'prepare', { key: req.key, parent: req.parent });
    return mounts;
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

  private async makeDir(rec: SnapshotRecord): Promise<void> {
    await this.layout.stageSnapshotDir(rec.id, async (dir) => {
      await fs.mkdir(path.join(dir, 'fs'));
      await fs.chmod(path.join(dir, 'fs'), 0o755);
      if (rec.kind === 'active') {
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
