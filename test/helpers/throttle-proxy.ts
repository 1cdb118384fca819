// A throttling TCP proxy on 127.0.0.1 (this kernel has no netem): every byte from the target to the
// client passes one shared token bucket (the link rate), and each chunk waits a fixed one-way
// latency. Used by the cold-start benchmark to put the registry "far away" for both contenders, and
// by tests as the byte counter in front of the registry (`bytes`: everything the registry sent to
// obd, headers included; rate 0 = no throttling).
import net from 'node:net';

export class ThrottleProxy {
  private server?: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private nextFree = 0; // ms timestamp when the link is free again
  port = 0;
  bytes = 0;

  constructor(
    private readonly target: { host: string; port: number },
    private readonly bytesPerSec: number,
    private readonly latencyMs = 0,
  ) {}

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.server = net.createServer((client) => this.handle(client));
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  private handle(client: net.Socket): void {
    const upstream = net.connect(this.target.port, this.target.host);
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (b) => upstream.write(b));
    client.on('end', () => upstream.end());
    // Per connection, chunks leave in order from one queue: (arrival time, bytes).
    const queue: Array<{ at: number; b: Buffer }> = [];
    let timer: NodeJS.Timeout | undefined;
    const pump = () => {
      timer = undefined;
      const now = Date.now();
      while (queue.length > 0 && queue[0].at <= now) {
        const { b } = queue.shift()!;
        if (!client.destroyed) client.write(b);
      }
      if (queue.length > 0) timer = setTimeout(pump, queue[0].at - now);
      if (upstream.isPaused() && (queue.length === 0 || queue[queue.length - 1].at - now < 50)) upstream.resume();
    };
    upstream.on('data', (b: Buffer) => {
      // A chunk leaves when the shared link has carried the ones before it and arrives one latency
      // later; the sender pauses while more than 100 ms of data waits on this connection.
      const now = Date.now();
      this.nextFree = Math.max(now, this.nextFree) + (this.bytesPerSec > 0 ? (b.length / this.bytesPerSec) * 1000 : 0);
      this.bytes += b.length;
      queue.push({ at: this.nextFree + this.latencyMs, b });
      if (!timer) timer = setTimeout(pump, queue[0].at - now);
      if (queue[queue.length - 1].at - now > 100) upstream.pause();
    });
    upstream.on('end', () => {
      const finish = () => (queue.length === 0 ? client.end() : setTimeout(finish, 10));
      finish();
    });
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
