// Errors of the registry client: named classes with a stable `code`, and always the registry host,
// the repository or blob, and the HTTP status when there was one.
import type { NativeFetchFailure } from '../addon';

export interface RegistryErrorOptions {
  registry: string;
  status?: number;
  retryAfterMs?: number;
  cause?: unknown;
}

export class RegistryError extends Error {
  readonly code: string = 'ERR_REGISTRY';
  readonly registry: string;
  readonly status?: number;
  /** From a Retry-After header (429/503), in milliseconds. */
  readonly retryAfterMs?: number;
  constructor(message: string, opts: RegistryErrorOptions) {
    super(message, opts.cause !== undefined ? { cause: opts.cause } : undefined);
    this.name = new.target.name;
    this.registry = opts.registry;
    this.status = opts.status;
    this.retryAfterMs = opts.retryAfterMs;
  }
}

/** 401/403 after the auth flow ran (bad or missing credentials, token refused). */
export class RegistryAuthError extends RegistryError { override readonly code = 'ERR_REGISTRY_AUTH'; }

/** 404 / MANIFEST_UNKNOWN / BLOB_UNKNOWN. */
export class RegistryNotFoundError extends RegistryError { override readonly code = 'ERR_REGISTRY_NOT_FOUND'; }

/** Any other unexpected status (after retries, for retryable ones). */
export class RegistryHttpError extends RegistryError { override readonly code = 'ERR_REGISTRY_HTTP'; }

/** The server answered with bytes that do not match the request (Content-Range, length, digest). */
export class RegistryProtocolError extends RegistryError { override readonly code: string = 'ERR_REGISTRY_PROTOCOL'; }

/** The blob is not the size we were told (labels/manifest vs Content-Range): retrying cannot help. */
export class RegistrySizeMismatchError extends RegistryProtocolError { override readonly code = 'ERR_REGISTRY_SIZE_MISMATCH'; }

/** A whole blob read from the registry does not hash to its digest. */
export class RegistryDigestMismatchError extends RegistryProtocolError { override readonly code = 'ERR_REGISTRY_DIGEST_MISMATCH'; }

/** The per-read deadline passed before a good answer arrived. */
export class RegistryTimeoutError extends RegistryError { override readonly code = 'ERR_REGISTRY_TIMEOUT'; }

/** Transport failure (refused, reset, closed early) after the retry budget ran out. */
export class RegistryNetworkError extends RegistryError { override readonly code = 'ERR_REGISTRY_NETWORK'; }

/** The operation was aborted by its caller. */
export class RegistryAbortError extends RegistryError { override readonly code = 'ERR_REGISTRY_ABORTED'; }

/** Invalid input to the client (bad reference, bad digest, bad config). */
export class RegistryArgumentError extends RegistryError { override readonly code = 'ERR_REGISTRY_ARGUMENT'; }

/** Whether a failed attempt is worth another try. */
export function isRetryable(err: unknown): boolean {
  if (err instanceof RegistryHttpError) return err.status === 429 || (err.status ?? 0) >= 500;
  if (err instanceof RegistrySizeMismatchError) return false;
  if (err instanceof RegistryProtocolError || err instanceof RegistryNetworkError) return true;
  if (err instanceof RegistryError) return false;
  return isTransportError(err);
}

const transportCodes = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH',
  'UND_ERR_SOCKET', 'UND_ERR_CLOSED', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT', 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH', 'UND_ERR_REQ_CONTENT_LENGTH_MISMATCH',
  'HPE_INVALID_CONSTANT', 'HPE_INVALID_CHUNK_SIZE', 'ERR_STREAM_PREMATURE_CLOSE',
]);

export function isTransportError(err: unknown): boolean {
  const e = err as { code?: string; cause?: { code?: string } } | undefined;
  return !!e && (transportCodes.has(e.code ?? '') || transportCodes.has(e.cause?.code ?? ''));
}

/**
 * A failed native GET (addon: NativeFetchFailure) as the registry client's own error for the same
 * failure, so that metrics count both paths by the same kinds; undefined for answers the client
 * does not count as failures either: a 401 from the registry (it answers the challenge and sends
 * again) and a redirect (it follows it). A redirect target (`redirected`: an object store) that
 * refuses is a failure whatever it answers below 500 but 429, as the client counts it.
 */
export function nativeFetchError(f: NativeFetchFailure, registry: string, redirected = false): Error | undefined {
  const msg = `${registry}: native ${f.message}`;
  switch (f.kind) {
    case 'status':
      if (redirected && f.status < 500 && f.status !== 429) {
        return new RegistryProtocolError(`${msg} from the redirect target`, { registry, status: f.status });
      }
      if (f.status === 401 || (f.status >= 300 && f.status < 400)) return undefined;
      if (f.status === 404) return new RegistryNotFoundError(msg, { registry, status: f.status });
      if (f.status === 403) return new RegistryAuthError(msg, { registry, status: f.status });
      return new RegistryHttpError(msg, { registry, status: f.status });
    case 'reset':
      return new RegistryNetworkError(msg, { registry, cause: Object.assign(new Error(f.message), { code: 'ECONNRESET' }) });
    case 'network':
      return new RegistryNetworkError(msg, { registry });
    case 'timeout':
      return new RegistryTimeoutError(msg, { registry });
    case 'protocol':
      return new RegistryProtocolError(msg, { registry, status: f.status || undefined });
    case 'size_mismatch':
      return new RegistrySizeMismatchError(msg, { registry, status: f.status || undefined });
    default:
      return new Error(msg);
  }
}
