// A registry that lies: it serves whatever bytes it was given under whatever digest it was told,
// on 127.0.0.1 (plain http). Manifests by tag or digest, blobs with HEAD, GET and single Range
// requests — enough for obd rpull, containerd and deviced's range reads. Tests of cache poisoning
// put another image's bytes under a popular layer's digest here.
import http from 'node:http';
import type { AddressInfo } from 'node:net';

export interface LyingObject {
  data: Buffer;
  mediaType?: string;
}

export class LyingRegistry {
  private server?: http.Server;
  private port = 0;
  /** `/v2/<repo>/manifests/<ref>` or `/v2/<repo>/blobs/<digest>` → what to answer. */
  readonly objects = new Map<string, LyingObject>();
  readonly requests: string[] = [];

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  manifest(repo: string, ref: string, data: Buffer, mediaType: string): void {
    this.objects.set(`/v2/${repo}/manifests/${ref}`, { data, mediaType });
  }

  blob(repo: string, digest: string, data: Buffer): void {
    this.objects.set(`/v2/${repo}/blobs/${digest}`, { data, mediaType: 'application/octet-stream' });
  }

  async start(): Promise<void> {
    this.server = http.createServer((req, res) => {
      const url = (req.url ?? '').split('?')[0];
      this.requests.push(`${req.method} ${url}${req.headers.range ? ' ' + req.headers.range : ''}`);
      if (url === '/v2/' || url === '/v2') {
        res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        return;
      }
      const o = this.objects.get(url);
      if (!o) {
        res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"BLOB_UNKNOWN"}]}');
        return;
      }
      const headers: Record<string, string | number> = { 'content-type': o.mediaType ?? 'application/octet-stream', 'accept-ranges': 'bytes' };
      const digest = url.slice(url.lastIndexOf('/') + 1);
      if (digest.startsWith('sha256:')) headers['docker-content-digest'] = digest;
      const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
      let body = o.data;
      let status = 200;
      if (range) {
        const start = Number(range[1]);
        const end = range[2] ? Math.min(Number(range[2]), o.data.length - 1) : o.data.length - 1;
        if (start >= o.data.length) {
          res.writeHead(416, { 'content-range': `bytes */${o.data.length}` }).end();
          return;
        }
        body = o.data.subarray(start, end + 1);
        status = 206;
        headers['content-range'] = `bytes ${start}-${end}/${o.data.length}`;
      }
      headers['content-length'] = body.length;
      res.writeHead(status, headers);
      res.end(req.method === 'HEAD' ? undefined : body);
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (!s) return;
    s.closeAllConnections();
    await new Promise<void>((resolve) => s.close(() => resolve()));
  }
}
