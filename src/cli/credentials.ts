// Registry credentials from the `--credential-file` and `-u user[:password]` flags: the user flag
// applies to the given hosts and wins over the file.
import { CredentialStore } from '../registry';

export function credentialsFromFlags(o: { credentialFile?: string; user?: string }, hosts: string[]): CredentialStore {
  const creds = o.credentialFile ? CredentialStore.fromFile(o.credentialFile) : new CredentialStore();
  if (!o.user) return creds;
  const i = o.user.indexOf(':');
  const cred = { username: i >= 0 ? o.user.slice(0, i) : o.user, password: i >= 0 ? o.user.slice(i + 1) : '' };
  return new CredentialStore(Object.fromEntries(hosts.map((h) => [h, cred]))).merge(creds);
}
