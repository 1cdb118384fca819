// Opens a registry blob through deviced's RemoteLowers as a remote lower (not a verified local copy),
// the way an attached device does; the tests that look at the cache and its metrics share it.
import assert from 'node:assert/strict';
import type { OpenedLower, RemoteLowers } from '../../src/device/remote';

export function openRemoteLower(r: RemoteLowers, host: string, repo: string, digest: string, size: number): Extract<OpenedLower, { kind: 'remote' }> {
  const o = r.open(`http://${host}/v2/${repo}/blobs/${digest}`, digest, size);
  assert.equal(o.kind, 'remote');
  if (o.kind !== 'remote') throw new Error('unreachable');
  return o;
}
