// Registry credentials: from the config and from docker's config.json (`auths`, base64 `auth` or
// username/password). Lookup follows overlaybd's rule (overlaybd-format.md §4.3): candidates are
// HOST, HOST/SEG1, HOST/SEG1/SEG2, … of the repository, and the first `auths` entry (in file order)
// whose key equals a candidate wins. Keys written by `docker login` (https://HOST/v1/) are normalised.
import fs from 'node:fs';
import { RegistryArgumentError } from './errors';

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

export class CredentialStore {
  private readonly entries: [string, Credential][] = [];

  constructor(auths: Record<string, AuthsEntry> = {}, source = 'credentials') {
    for (const [key, entry] of Object.entries(auths)) {
      const cred = decodeEntry(entry, `${source}: auths["${key}"]`);
      if (cred) this.entries.push([normaliseKey(key), cred]);
    }
  }

  /** Reads docker's config.json (or overlaybd's cred.json, same shape). A missing file is empty. */
  static fromFile(file: string): CredentialStore {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return new CredentialStore();
      throw err;
    }
    let json: { auths?: Record<string, AuthsEntry> };
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new RegistryArgumentError(`${file}: not valid JSON: ${(err as Error).message}`, { registry: '' });
    }
    return new CredentialStore(json.auths ?? {}, file);
  }

  /** Entries of `other` come after ours (ours win). */
  merge(other: CredentialStore): CredentialStore {
    const out = new CredentialStore();
    out.entries.push(...this.entries, ...other.entries);
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
    return this.entries.find(([key]) => candidates.has(key))?.[1];
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
