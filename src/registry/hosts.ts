// Where requests for a registry host go: the mirrors of `mirrorRegistry` in order, then the origin
// host itself; each spoken to over http when it is marked insecure (ACI semantics: insecure = plain
// http) or listed as plain-http, else https. docker.io is served by registry-1.docker.io.
import { RegistryArgumentError } from './errors';

export interface MirrorRegistry {
  host: string;
  insecure?: boolean;
}

export interface Endpoint {
  host: string;    // "host[:port]" the request goes to
  origin: string;  // "http(s)://host[:port]"
  mirror: boolean; // true unless this is the image's own registry
}

export interface HostsOptions {
  mirrors?: MirrorRegistry[];
  plainHttpHosts?: string[];
  /** Loopback hosts (127.0.0.1, localhost, [::1]) default to http, as docker does. Default true. */
  loopbackPlainHttp?: boolean;
}

export function canonicalHost(host: string): string {
  return host === 'docker.io' || host === 'index.docker.io' ? 'registry-1.docker.io' : host;
}

export class Hosts {
  private readonly mirrors: MirrorRegistry[];
  private readonly plain: Set<string>;

  constructor(private readonly opts: HostsOptions = {}) {
    this.mirrors = (opts.mirrors ?? []).map((m, i) => {
      if (!m || typeof m.host !== 'string' || !m.host) {
        throw new RegistryArgumentError(`mirrorRegistry[${i}].host must be a non-empty string`, { registry: '' });
      }
      return { host: m.host.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, ''), insecure: !!m.insecure };
    });
    this.plain = new Set(opts.plainHttpHosts ?? []);
  }

  isPlainHttp(host: string): boolean {
    if (this.plain.has(host)) return true;
    if (this.mirrors.some((m) => m.host === host && m.insecure)) return true;
    if (this.opts.loopbackPlainHttp !== false && /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/.test(host)) return true;
    return false;
  }

  endpoint(host: string, mirror = false): Endpoint {
    const h = canonicalHost(host);
    return { host: h, origin: `${this.isPlainHttp(h) ? 'http' : 'https'}://${h}`, mirror };
  }

  /** Endpoints for pulls from `host`: mirrors in order, then the origin. Pushes use endpoint(host). */
  pullEndpoints(host: string): Endpoint[] {
    const h = canonicalHost(host);
    const out = this.mirrors.filter((m) => canonicalHost(m.host) !== h).map((m) => this.endpoint(m.host, true));
    out.push(this.endpoint(h));
    return out;
  }
}
