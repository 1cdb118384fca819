// A self-verifying I/O workload (test/workloads/verify-io.sh) run in the background, on the host or
// inside a container, for restart tests: it records when each operation completed, so a test can
// wait for progress and measure how long a restart stalled I/O; its first failure is kept.
import { ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const VERIFY_IO_SCRIPT = path.join(__dirname, '..', '..', '..', 'test', 'workloads', 'verify-io.sh');

export class IoWorkload {
  readonly completions: number[] = []; // clockMs() of every completed operation, as the workload saw it
  failure?: string;
  private readonly proc: ChildProcess;
  private out = '';
  private waiters: Array<() => void> = [];

  /** argv runs verify-io.sh (directly on the host: the default; in a container: `ctr task exec …`). */
  constructor(
    readonly name: string,
    mode: 'read' | 'write',
    args: string[],
    argv: string[] = ['sh', VERIFY_IO_SCRIPT],
  ) {
    this.proc = spawn(argv[0], [...argv.slice(1), mode, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (s: string) => this.onOutput(s));
    this.proc.stderr!.on('data', (b: Buffer) => (this.out += b.toString()));
    this.proc.once('exit', (code, sig) => {
      if (this.stopped) return;
      this.failure ??= `${name} exited (${code ?? sig}): ${this.out.slice(-2000)}`;
      this.wake();
    });
  }

  private stopped = false;

  private onOutput(s: string): void {
    this.out += s;
    const now = clockMs();
    for (const line of s.split('\n')) {
      // "ok KIND N UPTIME": the workload's own clock (inside its container); else when we saw it.
      const up = Number(line.split(' ')[3]);
      if (line.startsWith('ok ')) this.completions.push(up > 0 ? up * 1000 : now);
      else if (line.startsWith('FAIL')) this.failure ??= `${this.name}: ${line}`;
    }
    if (this.out.length > 1 << 20) this.out = this.out.slice(-4096);
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    w.forEach((f) => f());
  }

  /** Resolves after `n` more completed operations; rejects on failure or after timeoutMs. */
  async progress(n: number, timeoutMs = 120_000): Promise<void> {
    const target = this.completions.length + n;
    const end = Date.now() + timeoutMs;
    while (this.completions.length < target) {
      if (this.failure) throw new Error(this.failure);
      if (Date.now() > end) throw new Error(`${this.name}: no progress for ${timeoutMs} ms (${this.completions.length}/${target} operations)`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 250);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    if (this.failure) throw new Error(this.failure);
  }

  stop(): void {
    this.stopped = true;
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
  }
}

/** Milliseconds on the clock the workloads print (/proc/uptime: one clock for host and containers). */
export function clockMs(): number {
  return Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]) * 1000;
}

/**
 * The stall a restart caused (`down`, `up`: clockMs()): the longest gap between consecutive completed operations among those
 * around the outage (from the last completion before `down` to the first after `up`).
 */
export function stallAround(w: IoWorkload, down: number, up: number): number {
  const c = w.completions;
  let first = c.findIndex((t) => t >= down);
  if (first < 0) return 0;
  first = Math.max(0, first - 1);
  let last = c.findIndex((t) => t > up);
  if (last < 0) last = c.length - 1;
  let gap = 0;
  for (let i = first + 1; i <= last; i++) gap = Math.max(gap, c[i] - c[i - 1]);
  return gap;
}

export function summarizeStalls(ms: number[]): string {
  const s = [...ms].sort((a, b) => a - b);
  const median = s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  return `${s.length} restarts, stall min ${Math.round(s[0])} ms, median ${Math.round(median)} ms, max ${Math.round(s[s.length - 1])} ms`;
}

/** Drops the page cache, so what is read next comes from the devices. */
export function dropCaches(): void {
  spawnSync('sync');
  fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
}
