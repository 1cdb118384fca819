// One apply child for many layers: `obdconv --turbo-oci` builds its meta layers one after another,
// each apply a fraction of a second, so starting a child (unshare + node + the addon) per layer
// would cost as much as the applies themselves. The worker is the same apply child in its `--serve`
// mode, in its own private mount namespace for its whole life; requests go one at a time. Its owner
// closes it; an aborted request kills it (whatever it had mounted goes away with its namespace).
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { ApplyTarStats } from '../addon';
import type { ApplyChildPhases, ApplyChildRequest } from './apply-child';
import { LayerBuildError } from './errors';

export interface ApplyReply {
  stats: ApplyTarStats;
  phases: ApplyChildPhases;
}

/** The apply child's reply line, or the error it stands for (`stderr`: the child's, for a crash). */
export function parseApplyReply(line: string, exit: string, stderr: string): ApplyReply {
  let msg: { ok: boolean; stats?: ApplyTarStats; phases?: ApplyChildPhases; error?: string } | undefined;
  try {
    msg = JSON.parse(line);
  } catch {
    msg = undefined;
  }
  if (msg?.ok && msg.stats && msg.phases) return { stats: msg.stats, phases: msg.phases };
  throw new LayerBuildError(msg?.error ?? `apply child ${exit}: ${stderr.trim().split('\n').slice(-3).join(' ')}`);
}

export function applyChildArgs(...childArgs: string[]): [string, string[]] {
  return ['unshare', ['-m', '--propagation', 'private', process.execPath, path.join(__dirname, 'apply-child.js'), ...childArgs]];
}

export class ApplyWorker {
  private stdoutBuf = '';
  private stderrBuf = '';
  private waiting?: { resolve: (r: ApplyReply) => void; reject: (e: Error) => void };
  private exited?: string;
  private readonly closed: Promise<void>;

  private constructor(private readonly child: ChildProcessByStdio<Writable, Readable, Readable>) {
    child.stdout.on('data', (b: Buffer) => {
      this.stdoutBuf += b.toString();
      let nl: number;
      while ((nl = this.stdoutBuf.indexOf('\n')) >= 0) {
        const line = this.stdoutBuf.slice(0, nl);
        this.stdoutBuf = this.stdoutBuf.slice(nl + 1);
        this.answer(line);
      }
    });
    child.stderr.on('data', (b: Buffer) => {
      this.stderrBuf = (this.stderrBuf + b.toString()).slice(-4096);
    });
    child.stdin.on('error', () => undefined); // a dead child: reported through 'close'
    this.closed = new Promise((resolve) => {
      child.on('error', (err) => this.gone(`could not start: ${err.message}`, resolve));
      child.on('close', (code, sig) => this.gone(`exited with ${sig ?? code}`, resolve));
    });
  }

  static start(): ApplyWorker {
    const [cmd, args] = applyChildArgs('--serve');
    return new ApplyWorker(spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] }));
  }

  apply(req: ApplyChildRequest, signal?: AbortSignal): Promise<ApplyReply> {
    if (this.exited) return Promise.reject(new LayerBuildError(`apply child ${this.exited}: ${this.stderrBuf.trim()}`));
    if (this.waiting) return Promise.reject(new Error('apply worker: one request at a time'));
    signal?.throwIfAborted();
    return new Promise<ApplyReply>((resolve, reject) => {
      const onAbort = () => this.child.kill('SIGKILL');
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = () => signal?.removeEventListener('abort', onAbort);
      this.waiting = {
        resolve: (r) => (done(), resolve(r)),
        reject: (e) => (done(), reject(signal?.aborted ? signal.reason ?? e : e)),
      };
      this.child.stdin.write(JSON.stringify(req) + '\n');
    });
  }

  /** Lets the child finish (it exits when its input ends); kills it if it does not within 10 s. */
  async close(): Promise<void> {
    if (!this.exited) this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.closed;
    clearTimeout(timer);
  }

  private answer(line: string): void {
    const w = this.waiting;
    this.waiting = undefined;
    if (!w) return;
    try {
      w.resolve(parseApplyReply(line, 'replied', this.stderrBuf));
    } catch (err) {
      w.reject(err as Error);
    }
  }

  private gone(how: string, resolve: () => void): void {
    this.exited ??= how;
    const w = this.waiting;
    this.waiting = undefined;
    w?.reject(new LayerBuildError(`apply child ${how}: ${this.stderrBuf.trim().split('\n').slice(-3).join(' ')}`));
    resolve();
  }
}
