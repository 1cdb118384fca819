// containerd's config.toml as obd needs it: a snapshot proxy plugin on the snapshotter's socket,
// and — when the CRI plugin is on and uses obd — snapshot annotations enabled, without which CRI
// passes no image reference and every overlaybd image is downloaded in full.
import fs from 'node:fs';
import type { Check } from './report';
import { lookup, parseToml, TomlError, type TomlTable, type TomlValue } from './toml';

const CRI_V2 = 'io.containerd.grpc.v1.cri';
const CRI_IMAGES_V3 = 'io.containerd.cri.v1.images';

function table(v: TomlValue | undefined): TomlTable | undefined {
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? v : undefined;
}

/** The proxy plugin whose address is the snapshotter's socket, by name. */
function proxyPluginFor(cfg: TomlTable, address: string): { name?: string; type?: string; others: string[] } {
  const plugins = table(cfg.proxy_plugins) ?? {};
  const others: string[] = [];
  for (const [name, v] of Object.entries(plugins)) {
    const p = table(v);
    if (p?.address === address) return { name, type: String(p.type ?? ''), others };
    others.push(`${name} → ${String(p?.address ?? '?')}`);
  }
  return { others };
}

interface CriSettings {
  where: string; // the table holding the settings, as written in config.toml
  snapshotter?: string;
  runtimeSnapshotters: string[];
  disableSnapshotAnnotations?: boolean;
}

/** Where CRI's image settings are for this config version (containerd 1.6/1.7: 2; 2.x: 3). */
function criSettings(cfg: TomlTable): CriSettings | undefined {
  const disabled = Array.isArray(cfg.disabled_plugins) ? cfg.disabled_plugins.map(String) : [];
  const runtimes = (t: TomlTable | undefined) =>
    Object.values(table(t?.runtimes) ?? {})
      .map((r) => table(r)?.snapshotter)
      .filter((s): s is string => typeof s === 'string');
  if (cfg.version === 3) {
    if (disabled.includes(CRI_IMAGES_V3)) return undefined;
    const images = table(lookup(cfg, 'plugins', CRI_IMAGES_V3));
    const runtime = table(lookup(cfg, 'plugins', 'io.containerd.cri.v1.runtime', 'containerd'));
    return {
      where: `[plugins.'${CRI_IMAGES_V3}']`,
      snapshotter: typeof images?.snapshotter === 'string' ? images.snapshotter : undefined,
      runtimeSnapshotters: runtimes(runtime),
      disableSnapshotAnnotations: typeof images?.disable_snapshot_annotations === 'boolean' ? images.disable_snapshot_annotations : undefined,
    };
  }
  if (disabled.includes(CRI_V2) || disabled.includes('cri')) return undefined;
  const ctd = table(lookup(cfg, 'plugins', CRI_V2, 'containerd')) ?? table(lookup(cfg, 'plugins', 'cri', 'containerd'));
  return {
    where: `[plugins."${CRI_V2}".containerd]`,
    snapshotter: typeof ctd?.snapshotter === 'string' ? ctd.snapshotter : undefined,
    runtimeSnapshotters: runtimes(ctd),
    disableSnapshotAnnotations: typeof ctd?.disable_snapshot_annotations === 'boolean' ? ctd.disable_snapshot_annotations : undefined,
  };
}

export function containerdConfigChecks(file: string, snapshotterAddress: string): Check[] {
  let cfg: TomlTable;
  try {
    cfg = parseToml(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'ENOENT' ? 'does not exist' : err instanceof TomlError ? `cannot be read: ${e.message}` : e.message;
    return [{ name: 'containerd: config', status: 'blocker', detail: `${file} ${why}; containerd needs obd registered in it` }];
  }
  const out: Check[] = [{ name: 'containerd: config', status: 'ok', detail: `${file} (version ${String(cfg.version ?? 1)})` }];
  const proxy = proxyPluginFor(cfg, snapshotterAddress);
  if (!proxy.name) {
    out.push({
      name: 'containerd: proxy plugin',
      status: 'blocker',
      detail:
        `no [proxy_plugins.<name>] has address = "${snapshotterAddress}" (the config's "address"); add ` +
        `[proxy_plugins.obd] type = "snapshot" address = "${snapshotterAddress}" and restart containerd` +
        (proxy.others.length ? ` (found: ${proxy.others.join(', ')})` : ''),
    });
    return out;
  }
  if (proxy.type !== 'snapshot') {
    out.push({ name: 'containerd: proxy plugin', status: 'blocker', detail: `[proxy_plugins.${proxy.name}] has type = "${proxy.type}": it must be "snapshot"` });
    return out;
  }
  out.push({ name: 'containerd: proxy plugin', status: 'ok', detail: `[proxy_plugins.${proxy.name}] type = "snapshot" on ${snapshotterAddress}` });
  out.push(criCheck(cfg, proxy.name));
  return out;
}

function criCheck(cfg: TomlTable, name: string): Check {
  const check = 'containerd: CRI';
  const cri = criSettings(cfg);
  if (!cri) return { name: check, status: 'info', detail: 'the CRI plugin is disabled: Kubernetes does not use this containerd' };
  const usesObd = cri.snapshotter === name || cri.runtimeSnapshotters.includes(name);
  if (!usesObd)
    return {
      name: check,
      status: 'warn',
      detail: `CRI uses snapshotter "${cri.snapshotter ?? 'overlayfs'}": pods do not run on obd; set snapshotter = "${name}" in ${cri.where}`,
    };
  if (cri.disableSnapshotAnnotations !== false)
    return {
      name: check,
      status: 'blocker',
      detail:
        `CRI uses obd but disable_snapshot_annotations is ${cri.disableSnapshotAnnotations === undefined ? 'not set (default true)' : 'true'}: ` +
        `CRI then passes no image reference and every overlaybd image is downloaded in full; set disable_snapshot_annotations = false in ${cri.where}`,
    };
  return { name: check, status: 'ok', detail: `CRI uses snapshotter "${name}" with snapshot annotations` };
}
