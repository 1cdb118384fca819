// A small client of containerd's own gRPC API (images, content, leases, snapshots) on its unix
// socket, with the namespace (and an optional lease) sent as containerd expects them: the gRPC
// metadata headers `containerd-namespace` and `containerd-lease`.
import * as grpc from '@grpc/grpc-js';
import { loadProto } from '../proto';

const FILES = [
  'containerd/services/images/v1/images.proto',
  'containerd/services/content/v1/content.proto',
  'containerd/services/leases/v1/leases.proto',
  'containerd/services/snapshots/v1/snapshots.proto',
];

type Any = any; // eslint-disable-line @typescript-eslint/no-explicit-any

export interface WireDescriptor {
  media_type: string;
  digest: string;
  size: number | string;
  annotations?: Record<string, string>;
}

export interface WireImage {
  name: string;
  labels: Record<string, string>;
  target: WireDescriptor;
}

export class ContainerdError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message);
    this.name = 'ContainerdError';
  }
}

let pkgCache: Any;
function services(): Any {
  if (!pkgCache) {
    pkgCache = (loadProto(FILES, { keepCase: true, longs: String, enums: String, defaults: true }) as Any).containerd.services;
  }
  return pkgCache;
}

export class ContainerdClient {
  private readonly images: Any;
  private readonly content: Any;
  private readonly leases: Any;
  private readonly snapshots: Any;
  private lease?: string;

  constructor(
    readonly address: string,
    readonly namespace: string,
    private readonly timeoutMs = 120_000,
  ) {
    const s = services();
    const target = `unix:${address}`;
    const creds = grpc.credentials.createInsecure();
    this.images = new s.images.v1.Images(target, creds);
    this.content = new s.content.v1.Content(target, creds);
    this.leases = new s.leases.v1.Leases(target, creds);
    this.snapshots = new s.snapshots.v1.Snapshots(target, creds);
  }

  close(): void {
    for (const c of [this.images, this.content, this.leases, this.snapshots]) c.close();
  }

  /** Later calls carry this lease (what they create is kept until the lease goes). */
  useLease(id: string | undefined): void {
    this.lease = id;
  }

  private meta(): grpc.Metadata {
    const m = new grpc.Metadata();
    m.set('containerd-namespace', this.namespace);
    if (this.lease) m.set('containerd-lease', this.lease);
    return m;
  }

  private unary<T>(client: Any, method: string, req: object): Promise<T> {
    return new Promise((resolve, reject) => {
      client[method](req, this.meta(), { deadline: Date.now() + this.timeoutMs }, (err: grpc.ServiceError | null, res: T) => {
        if (err) reject(new ContainerdError(err.code, `containerd ${method}: ${err.details || err.message}`));
        else resolve(res);
      });
    });
  }

  // ---- leases ----
  async createLease(id: string, expiresInMs: number): Promise<void> {
    const expire = new Date(Date.now() + expiresInMs).toISOString().replace(/\.\d+Z$/, 'Z');
    await this.unary(this.leases, 'Create', { id, labels: { 'containerd.io/gc.expire': expire } });
  }
  async deleteLease(id: string): Promise<void> {
    await this.unary(this.leases, 'Delete', { id, sync: false });
  }

  // ---- content ----
  async contentInfo(digest: string): Promise<{ digest: string; size: string; labels: Record<string, string> } | undefined> {
    try {
      return (await this.unary<{ info: Any }>(this.content, 'Info', { digest })).info;
    } catch (err) {
      if (err instanceof ContainerdError && err.code === grpc.status.NOT_FOUND) return undefined;
      throw err;
    }
  }

  async updateContentLabels(digest: string, labels: Record<string, string>): Promise<void> {
    await this.unary(this.content, 'Update', {
      info: { digest, labels },
      update_mask: { paths: Object.keys(labels).map((k) => `labels.${k}`) },
    });
  }

  /** Stores `data` under its digest with `labels` (or only sets the labels if it is there already). */
  async writeContent(digest: string, data: Buffer, labels: Record<string, string>): Promise<void> {
    if (await this.contentInfo(digest)) {
      await this.updateContentLabels(digest, labels);
      return;
    }
    const ref = `obd-rpull-${digest}`;
    const call = this.content.Write(this.meta(), { deadline: Date.now() + this.timeoutMs });
    const replies: Array<(v: Any) => void> = [];
    let failure: Error | undefined;
    const waiting: Array<(e: Error) => void> = [];
    call.on('data', (m: Any) => replies.shift()?.(m));
    call.on('error', (err: grpc.ServiceError) => {
      failure = new ContainerdError(err.code, `containerd content Write ${digest}: ${err.details || err.message}`);
      for (const w of waiting.splice(0)) w(failure);
    });
    const send = (msg: object) =>
      new Promise<Any>((resolve, reject) => {
        if (failure) return reject(failure);
        replies.push(resolve);
        waiting.push(reject);
        call.write(msg);
      });
    try {
      await send({ action: 'STAT', ref, total: data.length, expected: digest });
      const CHUNK = 1 << 20;
      for (let off = 0; off < data.length; off += CHUNK)
        await send({ action: 'WRITE', ref, offset: off, data: data.subarray(off, off + CHUNK) });
      await send({ action: 'COMMIT', ref, total: data.length, offset: data.length, expected: digest, labels });
      call.end();
    } catch (err) {
      call.cancel();
      if (err instanceof ContainerdError && err.code === grpc.status.ALREADY_EXISTS) {
        await this.updateContentLabels(digest, labels);
        return;
      }
      throw err;
    }
  }

  // ---- images ----
  async getImage(name: string): Promise<WireImage | undefined> {
    try {
      return (await this.unary<{ image: WireImage }>(this.images, 'Get', { name })).image;
    } catch (err) {
      if (err instanceof ContainerdError && err.code === grpc.status.NOT_FOUND) return undefined;
      throw err;
    }
  }

  async putImage(image: WireImage): Promise<void> {
    if (await this.getImage(image.name)) {
      await this.unary(this.images, 'Update', { image, update_mask: { paths: ['target', 'labels'] } });
    } else {
      await this.unary(this.images, 'Create', { image });
    }
  }

  // ---- snapshots (containerd's service: its metadata records what the backend answers) ----
  async snapshotExists(snapshotter: string, key: string): Promise<boolean> {
    try {
      await this.unary(this.snapshots, 'Stat', { snapshotter, key });
      return true;
    } catch (err) {
      if (err instanceof ContainerdError && err.code === grpc.status.NOT_FOUND) return false;
      throw err;
    }
  }

  /** Prepare; resolves 'exists' when the snapshotter answered AlreadyExists (a remote layer). */
  async prepare(snapshotter: string, key: string, parent: string, labels: Record<string, string>): Promise<'created' | 'exists'> {
    try {
      await this.unary(this.snapshots, 'Prepare', { snapshotter, key, parent, labels });
      return 'created';
    } catch (err) {
      if (err instanceof ContainerdError && err.code === grpc.status.ALREADY_EXISTS) return 'exists';
      throw err;
    }
  }

  async removeSnapshot(snapshotter: string, key: string): Promise<void> {
    await this.unary(this.snapshots, 'Remove', { snapshotter, key });
  }
}
