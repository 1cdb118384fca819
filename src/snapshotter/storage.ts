// Snapshot metadata: the one place where snapshot state transitions happen (as containerd's
// snapshots/storage). Records live in LevelDB under `snap/<key>`; every change is one atomic batch,
// changes are serialised through a single writer queue, and the whole index is mirrored in memory
// (only this process writes it) so reads and parent-chain walks never touch the disk.
//
// Directories are never named by key: each record has a numeric id, allocated here and never reused.
import { Level } from 'level';
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from './errors';

export type Kind = 'view' | 'active' | 'committed';

export interface Usage {
  size: number;
  inodes: number;
}

export interface SnapshotRecord {
  id: number;
  kind: Kind;
  /** Key of the parent snapshot, "" for none. */
  parent: string;
  labels: Record<string, string>;
  /** Nanoseconds since the epoch. */
  created: bigint;
  updated: bigint;
  /** Fixed when the snapshot is committed. */
  usage?: Usage;
}

/** What Stat/Walk/Update answer: a record seen by its key. */
export interface Info {
  name: string;
  parent: string;
  kind: Kind;
  labels: Record<string, string>;
  created: bigint;
  updated: bigint;
}

interface StoredRecord {
  id: number;
  kind: Kind;
  parent: string;
  labels: Record<string, string>;
  created: string;
  updated: string;
  usage?: Usage;
}

const SNAP_PREFIX = 'snap/';
const NEXT_ID_KEY = 'meta/nextId';
const MAX_LABEL_BYTES = 4096;

/** Wall-clock time in nanoseconds with microsecond resolution (Date.now() only has milliseconds). */
export function nowNanos(): bigint {
  const precise = performance.timeOrigin + performance.now();
  const coarse = Date.now();
  // If the wall clock was stepped since start, the monotonic clock no longer tracks it: trust Date.
  const ms = Math.abs(precise - coarse) < 2 ? precise : coarse;
  return BigInt(Math.floor(ms * 1000)) * 1000n;
}

/** containerd's labels.Validate: key and value together at most 4096 bytes. */
export function validateLabels(labels: Record<string, string>): void {
  for (const [k, v] of Object.entries(labels)) {
    if (Buffer.byteLength(k) + Buffer.byteLength(v) > MAX_LABEL_BYTES) {
      throw invalidArgument(
        `label key and value greater than maximum size (${MAX_LABEL_BYTES} bytes), key: ${k.slice(0, 64)}`,
      );
    }
  }
}

/** Labels with empty values are dropped, as containerd's storage does. */
function cleanLabels(labels: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) if (v !== '') out[k] = v;
  return out;
}

function encode(r: SnapshotRecord): string {
  const s: StoredRecord = {
    id: r.id,
    kind: r.kind,
    parent: r.parent,
    labels: r.labels,
    created: r.created.toString(),
    updated: r.updated.toString(),
  };
  if (r.usage) s.usage = r.usage;
  return JSON.stringify(s);
}

function decode(text: string): SnapshotRecord {
  const s = JSON.parse(text) as StoredRecord;
  return { ...s, created: BigInt(s.created), updated: BigInt(s.updated) };
}

export function toInfo(name: string, r: SnapshotRecord): Info {
  return { name, parent: r.parent, kind: r.kind, labels: { ...r.labels }, created: r.created, updated: r.updated };
}

/** The rules every new snapshot obeys (checked again inside the transaction that records it). */
export function checkCreate(view: { get(key: string): SnapshotRecord | undefined }, key: string, parent: string, labels: Record<string, string>): void {
  if (key === '') throw invalidArgument('snapshot key must not be empty');
  validateLabels(labels);
  if (view.get(key)) throw alreadyExists(`snapshot ${key} already exists`);
  if (parent !== '') {
    const p = view.get(parent);
    if (!p) throw notFound(`parent snapshot ${parent} does not exist`);
    if (p.kind !== 'committed') throw invalidArgument(`parent ${parent} is not a committed snapshot (it is ${p.kind})`);
  }
}

/** The record a create will store, before it is stored (hooks see it while the snapshot is set up). */
export function draftRecord(id: number, kind: Kind, parent: string, labels: Record<string, string>): SnapshotRecord {
  const now = nowNanos();
  return { id, kind, parent, labels: cleanLabels(labels), created: now, updated: now };
}

/**
 * One serialised read-modify-write: staged changes become visible (in LevelDB and in memory) only
 * when the function given to MetaStore.update resolves; if it throws, nothing changes.
 */
export class Transaction {
  private readonly staged = new Map<string, SnapshotRecord | null>();

  constructor(private readonly store: MetaStore) {}

  get(key: string): SnapshotRecord | undefined {
    const s = this.staged.get(key);
    if (s === null) return undefined;
    return s ?? this.store.get(key);
  }

  /**
   * Prepare/View: a new Active or View snapshot on a committed parent (or none). `id`: one allocated
   * before the transaction (its directory was made outside the writer queue).
   */
  create(kind: 'active' | 'view', key: string, parent: string, labels: Record<string, string>, id?: number): SnapshotRecord {
    checkCreate(this, key, parent, labels);
    const rec = draftRecord(id ?? this.store.allocateId(), kind, parent, labels);
    this.staged.set(key, rec);
    return rec;
  }

  /**
   * A committed snapshot created directly for containerd's unpack target `target` (remote layers):
   * recorded under `target`, or — when another snapshot already holds that name — under
   * `${target}@${requestKey}` (ACI's scheme; containerd then uses the existing target). Undefined when
   * the target is already committed on the same parent: nothing to record.
   */
  createTarget(target: string, requestKey: string, parent: string, labels: Record<string, string>, usage: Usage, id: number): { key: string; record: SnapshotRecord } | undefined {
    const existing = this.get(target);
    if (existing?.kind === 'committed' && existing.parent === parent) return undefined;
    const key = existing ? `${target}@${requestKey}` : target;
    checkCreate(this, key, parent, labels);
    const rec = draftRecord(id, 'committed', parent, labels);
    rec.usage = usage;
    this.staged.set(key, rec);
    return { key, record: rec };
  }

  /** Commit: the Active snapshot `key` becomes the Committed snapshot `name`, keeping its id and dir. */
  commit(key: string, name: string, labels: Record<string, string>, usage: Usage): SnapshotRecord {
    if (name === '') throw invalidArgument('commit name must not be empty');
    validateLabels(labels);
    if (this.get(name)) throw alreadyExists(`snapshot ${name} already exists`);
    const active = this.requireActive(key);
    const now = nowNanos();
    const rec: SnapshotRecord = {
      id: active.id,
      kind: 'committed',
      parent: active.parent,
      labels: cleanLabels(labels),
      created: now,
      updated: now,
      usage,
    };
    this.staged.set(key, null);
    this.staged.set(name, rec);
    return rec;
  }

  /** The Active snapshot `key`, or NotFound / FailedPrecondition. */
  requireActive(key: string): SnapshotRecord {
    const rec = this.get(key);
    if (!rec) throw notFound(`snapshot ${key} does not exist`);
    if (rec.kind !== 'active') throw failedPrecondition(`snapshot ${key} is not active (it is ${rec.kind})`);
    return rec;
  }

  remove(key: string): SnapshotRecord {
    const rec = this.get(key);
    if (!rec) throw notFound(`snapshot ${key} does not exist`);
    const children = this.store.childCount(key);
    if (children > 0) {
      throw failedPrecondition(`cannot remove snapshot ${key}: it is the parent of ${children} other snapshot(s)`);
    }
    this.staged.set(key, null);
    return rec;
  }

  /** Update: only labels are mutable; paths "labels" (replace) or "labels.KEY" (set, or remove if empty). */
  update(name: string, labels: Record<string, string>, paths: readonly string[]): SnapshotRecord {
    const cur = this.get(name);
    if (!cur) throw notFound(`snapshot ${name} does not exist`);
    let next: Record<string, string>;
    if (paths.length === 0) {
      next = { ...labels };
    } else {
      next = { ...cur.labels };
      for (const p of paths) {
        if (p === 'labels') next = { ...labels };
        else if (p.startsWith('labels.')) {
          const k = p.slice('labels.'.length);
          next[k] = Object.hasOwn(labels, k) ? labels[k] : '';
        }
        else throw invalidArgument(`cannot update ${JSON.stringify(p)} field on snapshot ${name}: only labels are mutable`);
      }
    }
    validateLabels(next);
    const rec: SnapshotRecord = { ...cur, labels: cleanLabels(next), updated: nowNanos() };
    this.staged.set(name, rec);
    return rec;
  }

  /** Staged changes as LevelDB batch operations and as in-memory updates. */
  changes(): Array<[string, SnapshotRecord | null]> {
    return [...this.staged.entries()];
  }
}

export class MetaStore {
  private readonly records = new Map<string, SnapshotRecord>();
  private readonly children = new Map<string, number>();
  private nextId = 1;
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(private readonly db: Level<string, string>) {}

  static async open(dir: string): Promise<MetaStore> {
    const db = new Level<string, string>(dir, { valueEncoding: 'utf8' });
    await db.open();
    const store = new MetaStore(db);
    for await (const [k, v] of db.iterator({ gte: SNAP_PREFIX, lt: SNAP_PREFIX + '\uffff' })) {
      store.apply(k.slice(SNAP_PREFIX.length), decode(v));
    }
    const next = await db.get(NEXT_ID_KEY);
    if (next !== undefined) store.nextId = Math.max(store.nextId, Number(next));
    return store;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.queue.catch(() => undefined);
    await this.db.close();
  }

  get(key: string): SnapshotRecord | undefined {
    return this.records.get(key);
  }

  info(key: string): Info {
    const rec = this.records.get(key);
    if (!rec) throw notFound(`snapshot ${key} does not exist`);
    return toInfo(key, rec);
  }

  childCount(key: string): number {
    return this.children.get(key) ?? 0;
  }

  /** Every record, in key order. */
  entries(): Array<[string, SnapshotRecord]> {
    return [...this.records.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  /** The committed ancestors of `key`, nearest first. */
  ancestors(key: string): Array<[string, SnapshotRecord]> {
    const out: Array<[string, SnapshotRecord]> = [];
    let parent = this.records.get(key)?.parent ?? '';
    while (parent !== '') {
      const rec = this.records.get(parent);
      if (!rec) throw new Error(`metadata corrupt: parent ${parent} of a snapshot is missing`);
      out.push([parent, rec]);
      parent = rec.parent;
    }
    return out;
  }

  ids(): Set<number> {
    return new Set([...this.records.values()].map((r) => r.id));
  }

  /** Ids are never reused; ids found on disk (a crash between mkdir and commit) are skipped. */
  reserveIdsThrough(id: number): void {
    this.nextId = Math.max(this.nextId, id + 1);
  }

  allocateId(): number {
    return this.nextId++;
  }

  /** Runs `fn` alone (writes are serialised) and applies what it staged atomically if it resolves. */
  update<T>(fn: (tx: Transaction) => Promise<T> | T): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.closed) throw new Error('metadata store is closed');
      const tx = new Transaction(this);
      const result = await fn(tx);
      const changes = tx.changes();
      if (changes.length > 0) {
        const ops = changes.map(([key, rec]) =>
          rec
            ? { type: 'put' as const, key: SNAP_PREFIX + key, value: encode(rec) }
            : { type: 'del' as const, key: SNAP_PREFIX + key },
        );
        ops.push({ type: 'put', key: NEXT_ID_KEY, value: String(this.nextId) });
        await this.db.batch(ops, { sync: true });
        for (const [key, rec] of changes) this.apply(key, rec);
      }
      return result;
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private apply(key: string, rec: SnapshotRecord | null): void {
    const old = this.records.get(key);
    if (old && old.parent !== '') this.children.set(old.parent, this.childCount(old.parent) - 1);
    if (rec) {
      this.records.set(key, rec);
      if (rec.parent !== '') this.children.set(rec.parent, this.childCount(rec.parent) + 1);
      this.nextId = Math.max(this.nextId, rec.id + 1);
    } else {
      this.records.delete(key);
    }
  }
}
