// Retries with exponential backoff and full jitter, bounded by an attempt budget and a deadline.
// undici's RetryHandler resumes bodies nicely but has neither jitter nor an overall deadline and
// cannot judge a wrong Content-Range, so the policy lives here and wraps whole attempts; undici
// still does pooling, keep-alive and the per-request header/body timeouts.
import { RegistryAbortError, RegistryError, RegistryTimeoutError, isRetryable } from './errors';

export interface RetryOptions {
  maxAttempts?: number; // total attempts, default 6
  baseDelayMs?: number; // first backoff ceiling, default 50
  maxDelayMs?: number;  // backoff ceiling, default 2000
  maxRetryAfterMs?: number; // a longer Retry-After is capped to this, default 10000
}

export interface RetryContext {
  /** Absolute time (ms since epoch) after which no attempt starts and the current one is aborted. */
  deadline: number;
  signal?: AbortSignal;
  registry: string;
  what: string; // for error messages: "GET blob sha256:… bytes 0-1023"
  /** Called before each retry (after a failure) — e.g. to drop a cached redirect or token. */
  onRetry?: (err: unknown, attempt: number) => void;
}

export class RetryHandler {
  readonly maxAttempts: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly maxRetryAfterMs: number;
  retries = 0; // counter over the handler's life (metrics, tests)

  constructor(opts: RetryOptions = {}) {
    this.maxAttempts = Math.max(1, opts.maxAttempts ?? 6);
    this.baseDelayMs = opts.baseDelayMs ?? 50;
    this.maxDelayMs = opts.maxDelayMs ?? 2000;
    this.maxRetryAfterMs = opts.maxRetryAfterMs ?? 10_000;
  }

  /** Delay before attempt `attempt + 1` (attempt counts from 1). */
  delayFor(err: unknown, attempt: number): number {
    const ra = err instanceof RegistryError ? err.retryAfterMs : undefined;
    if (ra !== undefined) return Math.min(ra, this.maxRetryAfterMs);
    const ceiling = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** (attempt - 1));
    return Math.random() * ceiling;
  }

  async run<T>(attemptFn: (signal: AbortSignal, attempt: number) => Promise<T>, ctx: RetryContext): Promise<T> {
    let lastErr: unknown;
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      if (ctx.signal?.aborted) throw new RegistryAbortError(`${ctx.registry}: ${ctx.what}: aborted`, { registry: ctx.registry });
      const left = ctx.deadline - Date.now();
      if (left <= 0) break;
      // A plain timer (not AbortSignal.timeout): cleared as soon as the attempt ends, so thousands of
      // reads do not leave thousands of pending timers behind.
      const deadline = new AbortController();
      const timer = setTimeout(() => deadline.abort(new DOMException('deadline exceeded', 'TimeoutError')), left);
      const signal = ctx.signal ? AbortSignal.any([ctx.signal, deadline.signal]) : deadline.signal;
      try {
        return await attemptFn(signal, attempt);
      } catch (err) {
        lastErr = err;
        if (ctx.signal?.aborted) throw new RegistryAbortError(`${ctx.registry}: ${ctx.what}: aborted`, { registry: ctx.registry, cause: err });
        const timedOut = signal.aborted;
        if (!timedOut && !isRetryable(err)) throw err;
        if (attempt === this.maxAttempts) break;
        const delay = this.delayFor(err, attempt);
        if (Date.now() + delay >= ctx.deadline) break;
        ctx.onRetry?.(err, attempt);
        this.retries++;
        await sleep(delay, ctx.signal);
      } finally {
        clearTimeout(timer);
      }
    }
    const reason = lastErr instanceof Error ? lastErr.message : 'no attempt could start';
    if (Date.now() >= ctx.deadline || !lastErr) {
      throw new RegistryTimeoutError(`${ctx.registry}: ${ctx.what}: deadline exceeded (${reason})`, {
        registry: ctx.registry, cause: lastErr, status: (lastErr as RegistryError | undefined)?.status });
    }
    if (lastErr instanceof RegistryError) throw lastErr;
    throw new RegistryTimeoutError(`${ctx.registry}: ${ctx.what}: gave up after ${this.maxAttempts} attempts (${reason})`, {
      registry: ctx.registry, cause: lastErr });
  }
}

/** Parses Retry-After (delta-seconds or HTTP date) into milliseconds. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const t = Date.parse(v);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
