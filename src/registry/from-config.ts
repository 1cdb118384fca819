// Registry client options from obd's config.json (src/config): `mirrorRegistry` (tried in order,
// then the origin; insecure = plain http), `credentialFile` (docker config.json / overlaybd
// cred.json). Shared by deviced (lazy reads), the snapshotter and obdconv (pushes).
import type { ObdConfig } from '../config';
import { CredentialStore } from './credentials';
import type { RegistryClientOptions } from './client';

export function registryOptionsFromConfig(cfg: Pick<ObdConfig, 'mirrorRegistry' | 'credentialFile'>,
  extra: Partial<RegistryClientOptions> = {}): RegistryClientOptions {
  return {
    mirrors: cfg.mirrorRegistry ?? [],
    // Named by the config key, so that a 401 says where deviced looks for credentials.
    credentials: cfg.credentialFile
      ? CredentialStore.fromFile(cfg.credentialFile, `credentialFile ${cfg.credentialFile}`)
      : new CredentialStore({}, 'credentialFile (empty in the config)'),
    ...extra,
  };
}
