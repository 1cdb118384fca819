// repoBlobUrl of config.v1.json from an image reference, as accelerated-container-image builds it:
// `https://<host>/v2/<repo>/blobs`, http when the host is an insecure mirrorRegistry entry (and, as
// docker and our registry client do, for loopback hosts).
import { canonicalHost, parseReference, type MirrorRegistry } from '../../registry';

export function repoBlobUrl(imageRef: string, mirrors: MirrorRegistry[] | null): string {
  const ref = parseReference(imageRef);
  const host = canonicalHost(ref.host);
  const insecure =
    (mirrors ?? []).some((m) => m.insecure && canonicalHost(m.host.replace(/^[a-z]+:\/\//i, '')) === host) ||
    /^(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:\d+)?$/.test(host);
  return `${insecure ? 'http' : 'https'}://${host}/v2/${ref.repo}/blobs`;
}
