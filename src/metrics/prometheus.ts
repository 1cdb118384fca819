// Counters, gauges and histograms with labels, rendered as Prometheus text (format 0.0.4), and the
// HTTP endpoint both processes serve them on. No client library: these few types are all we need.
import http from 'node:http';

type Labels = Record<string, string>;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labelText(l: Labels): string {
  const parts = Object.entries(l).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

function keyOf(l: Labels): string {
  return JSON.stringify(Object.entries(l).sort(([a], [b]) => (a < b ? -1 : 1)));
}

abstract class Family<T> {
  protected readonly series = new Map<string, { labels: Labels; value: T }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  protected at(labels: Labels, init: () => T): T {
    const k = keyOf(labels);
    let s = this.series.get(k);
    if (!s) this.series.set(k, (s = { labels, value: init() }));
    return s.value;
  }
  abstract render(): string[];
}

export class Counter extends Family<{ n: number }> {
  inc(labels: Labels = {}, by = 1): void {
    this.at(labels, () => ({ n: 0 })).n += by;
  }
  get(labels: Labels = {}): number {
    return this.series.get(keyOf(labels))?.value.n ?? 0;
  }
  render(): string[] {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`, ...[...this.series.values()].map((s) => `${this.name}${labelText(s.labels)} ${s.value.n}`)];
  }
}

/** A gauge (or a counter kept elsewhere, e.g. by the addon) whose series are computed when scraped. */
export class ComputedGauge {
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly compute: () => Array<{ labels: Labels; value: number }>,
    private readonly type: 'gauge' | 'counter' = 'gauge',
  ) {}
  render(): string[] {
    return [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`, ...this.compute().map((s) => `${this.name}${labelText(s.labels)} ${s.value}`)];
  }
}

/** A counter whose value is kept elsewhere and read when scraped. */
export class ComputedCounter extends ComputedGauge {
  constructor(name: string, help: string, compute: () => Array<{ labels: Labels; value: number }>) {
    super(name, help, compute, 'counter');
  }
}

export class Histogram extends Family<{ buckets: number[]; sum: number; count: number }> {
  constructor(
    name: string,
    help: string,
    readonly bounds: number[],
  ) {
    super(name, help);
  }
  observe(labels: Labels, v: number): void {
    const h = this.at(labels, () => ({ buckets: this.bounds.map(() => 0), sum: 0, count: 0 }));
    this.bounds.forEach((b, i) => {
      if (v <= b) h.buckets[i]++;
    });
    h.sum += v;
    h.count++;
  }
  render(): string[] {
    const out = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const { labels, value } of this.series.values()) {
      this.bounds.forEach((b, i) => out.push(`${this.name}_bucket${labelText({ ...labels, le: String(b) })} ${value.buckets[i]}`));
      out.push(`${this.name}_bucket${labelText({ ...labels, le: '+Inf' })} ${value.count}`);
      out.push(`${this.name}_sum${labelText(labels)} ${value.sum}`, `${this.name}_count${labelText(labels)} ${value.count}`);
    }
    return out;
  }
}

export function renderFamilies(families: Array<{ render(): string[] }>): string {
  return families.map((f) => f.render().join('\n')).join('\n') + '\n';
}

/** 0.1 ms … ~100 s, doubling: snapshot calls range from a map lookup to an attach and mkfs. */
export const SECONDS_BUCKETS = Array.from({ length: 21 }, (_, i) => Number((0.0001 * 2 ** i).toPrecision(3)));

export interface Endpoint {
  address: string;
  port: number;
  uriPrefix: string;
}

/** Serves `render()` at http://address:port/uriPrefix; everything else is a 404. */
export function serveMetrics(ep: Endpoint, render: () => string, what: string): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== ep.uriPrefix) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(render());
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err) => reject(new Error(`${what} metrics: listen on ${ep.address}:${ep.port}: ${err.message}`)));
    server.listen(ep.port, ep.address, () => resolve(server));
  });
}
