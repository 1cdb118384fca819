// Registry credentials: from the config and from docker's config.json (`auths`, base64 `auth` or
// username/password). Lookup follows overlaybd's rule (docs/configuration.md): candidates are
// HOST, HOST/SEG1, HOST/SEG1/SEG2, … of the repository, and the first `auths` entry (in file order)
// whose key equals a candidate wins. Keys written by `docker login` (https://HOST/v1/) are normalised.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { RegistryArgumentError, RegistryAuthError } from './errors';

export interface Credential {
  username: string;
  password: string;
}

export interface AuthsEntry {
  auth?: string;
  username?: string;
  password?: string;
}

const dockerHubAliases = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

/** docker's credential helpers: `credHelpers` per registry host, `credsStore` for the rest. */
export interface CredentialHelpers {
  credHelpers?: Record<string, string>;
  credsStore?: string;
}

export class CredentialStore {
  private readonly entries: [string, Credential][] = [];
  private helpers: CredentialHelpers = {};
  private readonly fromHelpers = new Map<string, Credential | null>(); // host → answer of its helper

  /** Where the entries come from, for messages ("credentialFile /etc/…", a file path). */
  readonly source: string;

  constructor(auths: Record<string, AuthsEntry> = {}, source = 'the given credentials', helpers: CredentialHelpers = {}) {
    this.source = source;
    for (const [key, entry] of Object.entries(auths)) {
      const cred = decodeEntry(entry, `${source}: auths["${key}"]`);
      if (cred) this.entries.push([normaliseKey(key), cred]);
    }
    this.helpers = helpers;
  }

  /**
   * lookup(), after asking a credential helper (`docker-credential-NAME get`, host on stdin) when
   * the config names one for this host and no `auths` entry matches. Answers are cached per host.
   */
  async resolve(host: string, repo = ''): Promise<Credential | undefined> {
    const found = this.lookup(host, repo);
    if (found || this.fromHelpers.has(host)) return found;
    const name = this.helpers.credHelpers?.[host] ?? this.helpers.credsStore;
    if (!name) return undefined;
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) throw new RegistryArgumentError(`credential helper name "${name}" is not valid`, { registry: host });
    const cred = await new Promise<Credential | null>((resolve, reject) => {
      const child = execFile(`docker-credential-${name}`, ['get'], { timeout: 10_000 }, (err, stdout, stderr) => {
        if (err) {
          // Helpers say "credentials not found in native keychain" for unknown hosts: anonymous then.
          if (/not found/i.test(String(stderr) + String(stdout))) return resolve(null);
          return reject(new RegistryAuthError(`${host}: credential helper docker-credential-${name}: ${String(stderr).trim() || err.message}`, { registry: host }));
        }
        try {
          const j = JSON.parse(stdout) as { Username?: string; Secret?: string };
          resolve(j.Secret ? { username: j.Username ?? '', password: j.Secret } : null);
        } catch {
          reject(new RegistryAuthError(`${host}: credential helper docker-credential-${name} did not answer JSON`, { registry: host }));
        }
      });
      child.stdin?.end(host);
    });
    this.fromHelpers.set(host, cred);
    return cred ?? undefined;
  }

  /** Reads docker's config.json (or overlaybd's cred.json, same shape). A missing file is empty. */
  static fromFile(file: string, source = file): CredentialStore {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new CredentialStore({}, `${source} (no such file)`);
      throw err;
    }
    let json: { auths?: Record<string, AuthsEntry> } & CredentialHelpers;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new RegistryArgumentError(`${file}: not valid JSON: ${(err as Error).message}`, { registry: '' });
    }
    return new CredentialStore(json.auths ?? {}, source, { credHelpers: json.credHelpers, credsStore: json.credsStore });
  }

  /** Entries of `other` come after ours (ours win). */
  merge(other: CredentialStore): CredentialStore {
    const out = new CredentialStore({}, `${this.source}, then ${other.source}`);
    out.entries.push(...this.entries, ...other.entries);
    out.helpers = { credHelpers: { ...other.helpers.credHelpers, ...this.helpers.credHelpers },
      credsStore: this.helpers.credsStore ?? other.helpers.credsStore };
    return out;
  }

  get size(): number {
    return this.entries.length;
  }

  lookup(host: string, repo = ''): Credential | undefined {
    const hosts = dockerHubAliases.includes(host) ? dockerHubAliases : [host];
    const candidates = new Set<string>();
    for (const h of hosts) {
      candidates.add(h);
      let prefix = h;
      for (const seg of repo.split('/').filter(Boolean)) {
        prefix += '/' + seg;
        candidates.add(prefix);
      }
    }
    return this.entries.find(([key]) => candidates.has(key))?.[1] ?? this.fromHelpers.get(host) ?? undefined;
  }
}

function normaliseKey(key: string): string {
  return key.replace(/^[a-z]+:\/\//i, '').replace(/\/+$/, '').replace(/\/v[12]$/, '');
}

function decodeEntry(entry: AuthsEntry, where: string): Credential | undefined {
  if (entry.auth) {
    const text = Buffer.from(entry.auth, 'base64').toString('utf8');
    const i = text.indexOf(':');
    if (i < 0) throw new RegistryArgumentError(`${where}: "auth" is not base64 of user:password`, { registry: '' });
    return { username: text.slice(0, i), password: text.slice(i + 1) };
  }
  if (entry.username !== undefined) return { username: entry.username, password: entry.password ?? '' };
  return undefined;
}
