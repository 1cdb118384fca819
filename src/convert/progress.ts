// What obdconv shows while it works: on a TTY one redrawn line per layer (stage, bytes, rate); in
// logs one plain line per finished stage. `--json` replaces both with a summary at the end.
import type { ConvertEvent, Stage } from './converter';

function mib(n: number): string {
  return `${(n / 1048576).toFixed(1)} MiB`;
}
function rate(bytes: number, ms: number): string {
  return ms > 0 ? `${(bytes / 1048576 / (ms / 1000)).toFixed(1)} MiB/s` : '-';
}

export class ProgressPrinter {
  private lines: string[] = [];
  private drawn = 0;
  private starts = new Map<string, number>();
  private lastDraw = 0;

  constructor(private readonly out: NodeJS.WriteStream, private readonly tty: boolean) {}

  onEvent(ev: ConvertEvent): void {
    if (ev.type === 'start') {
      this.lines = Array.from({ length: ev.layers }, (_, i) => `layer ${i + 1}/${ev.layers}: waiting`);
      this.log(`converting ${ev.source} → ${ev.target} (${ev.layers} layers)`);
      return;
    }
    if (ev.type === 'log') return this.log(ev.message);
    if (ev.type === 'layer-done') {
      const r = ev.report;
      this.lines[r.index] = `layer ${r.index + 1}/${this.lines.length}: ${r.cached ? 'cached' : 'converted'} ${r.digest.slice(0, 19)} ${mib(r.size)} (${r.push})`;
      if (this.tty) this.draw(true);
      return;
    }
    const key = `${ev.layer}:${ev.stage}`;
    if (ev.state === 'start') this.starts.set(key, Date.now());
    const ms = ev.ms ?? Date.now() - (this.starts.get(key) ?? Date.now());
    const text = `layer ${ev.layer + 1}/${this.lines.length}: ${verb(ev.stage, ev.state)} ${mib(ev.bytes)}${ev.total ? `/${mib(ev.total)}` : ''} ${rate(ev.bytes, ms)}`;
    this.lines[ev.layer] = text;
    if (this.tty) this.draw(ev.state !== 'progress');
    else if (ev.state === 'done') this.out.write(`${text} in ${(ms / 1000).toFixed(2)} s\n`);
  }

  finish(result: { target: string; manifestDigest: string; seconds: number }): void {
    if (this.tty) this.draw(true);
    this.out.write(`done: ${result.target} ${result.manifestDigest} in ${result.seconds.toFixed(2)} s\n`);
  }

  private log(msg: string): void {
    if (this.tty && this.drawn) this.out.write(`\x1b[${this.drawn}F\x1b[J`);
    this.out.write(`${msg}\n`);
    this.drawn = 0;
    if (this.tty) this.draw(true);
  }

  private draw(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    if (this.drawn) this.out.write(`\x1b[${this.drawn}F`);
    for (const l of this.lines) this.out.write(`\x1b[2K${l}\n`);
    this.drawn = this.lines.length;
  }
}

function verb(stage: Stage, state: string): string {
  const names: Record<Stage, [string, string]> = {
    download: ['downloading', 'downloaded'], apply: ['applying', 'applied'], compress: ['compressing', 'compressed'],
    upload: ['uploading', 'uploaded'],
  };
  return names[stage][state === 'done' ? 1 : 0];
}
