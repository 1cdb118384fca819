// File-tree snapshots for comparing a converted image with the same image unpacked the OCI way.
// The walker is a small python program (node has no xattr API): for every path below a root it
// records type, mode, uid, gid, size, sha256 of regular files, symlink target, device numbers
// and all xattrs (overlayfs hides its own trusted.overlay.* ones from listings).
//
// The reference unpack uses the kernel's overlayfs exactly like containerd's overlayfs snapshotter:
// each layer tar extracted by GNU tar into its own dir, whiteouts turned into overlay whiteouts
// (0/0 char devices, trusted.overlay.opaque=y), the dirs stacked as lowerdirs of a read-only mount.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Cleanup, mount } from '../helpers/loop';

export interface Node {
  type: string;
  mode: string;
  uid: number;
  gid: number;
  size?: number;
  sha256?: string;
  link?: string;
  rdev?: string;
  xattrs: Record<string, string>;
  mtime?: number;
}

const walker = String.raw`
import hashlib, json, os, stat, sys
root = sys.argv[1]
skip = set(sys.argv[2:])
out = {}
for dirpath, dirnames, filenames in os.walk(root):
    rel_dir = os.path.relpath(dirpath, root)
    dirnames[:] = [d for d in dirnames if os.path.normpath(os.path.join(rel_dir, d)) not in skip]
    for name in sorted(dirnames + filenames):
        p = os.path.join(dirpath, name)
        rel = os.path.normpath(os.path.join(rel_dir, name))
        if rel in skip:
            continue
        st = os.lstat(p)
        m = st.st_mode
        n = {"mode": oct(stat.S_IMODE(m)), "uid": st.st_uid, "gid": st.st_gid, "xattrs": {}}
        if stat.S_ISREG(m):
            n["type"] = "file"; n["size"] = st.st_size; n["mtime"] = int(st.st_mtime)
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for b in iter(lambda: f.read(1 << 20), b""):
                    h.update(b)
            n["sha256"] = h.hexdigest()
        elif stat.S_ISDIR(m): n["type"] = "dir"
        elif stat.S_ISLNK(m): n["type"] = "symlink"; n["link"] = os.readlink(p)
        elif stat.S_ISCHR(m): n["type"] = "char"; n["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        elif stat.S_ISBLK(m): n["type"] = "block"; n["rdev"] = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
        elif stat.S_ISFIFO(m): n["type"] = "fifo"
        else: n["type"] = "other"
        if not stat.S_ISLNK(m):
            for k in sorted(os.listxattr(p, follow_symlinks=False)):
                n["xattrs"][k] = os.getxattr(p, k, follow_symlinks=False).hex()
        out[rel] = n
json.dump(out, sys.stdout, sort_keys=True)
`;

/** Every path below root (relative) → its attributes; `skip` names paths (and subtrees) to leave out. */
export function snapshotTree(root: string, skip: string[] = []): Record<string, Node> {
  const text = execFileSync('python3', ['-c', walker, root, ...skip], { encoding: 'utf8', maxBuffer: 1 << 30 });
  return JSON.parse(text) as Record<string, Node>;
}

/** Differences between two snapshots, as readable lines (empty = identical). */
export function diffTrees(want: Record<string, Node>, got: Record<string, Node>): string[] {
  const out: string[] = [];
  for (const k of Object.keys(want)) {
    if (!(k in got)) out.push(`missing: ${k}`);
    else if (JSON.stringify(want[k]) !== JSON.stringify(got[k])) out.push(`differs: ${k}: want ${JSON.stringify(want[k])} got ${JSON.stringify(got[k])}`);
  }
  for (const k of Object.keys(got)) if (!(k in want)) out.push(`extra: ${k}`);
  return out;
}

const toOverlay = String.raw`
import os, sys
root = sys.argv[1]
for dirpath, dirnames, filenames in os.walk(root):
    for name in filenames + dirnames:
        if not name.startswith(".wh."):
            continue
        p = os.path.join(dirpath, name)
        if name == ".wh..wh..opq":
            os.remove(p)
            os.setxattr(dirpath, "trusted.overlay.opaque", b"y")
        elif name.startswith(".wh..wh."):
            os.remove(p)
        else:
            os.remove(p)
            target = os.path.join(dirpath, name[4:])
            if os.path.isdir(target) and not os.path.islink(target):
                # whited out and recreated in the same layer: the new dir hides the lower one
                os.setxattr(target, "trusted.overlay.opaque", b"y")
            elif not os.path.lexists(target):
                os.mknod(target, 0o600 | 0o020000, os.makedev(0, 0))
`;

/**
 * Unpacks layer tars (uncompressed) the way containerd's overlayfs snapshotter does and mounts the
 * merged view read-only at `mnt` (unmounted by `cleanup`).
 */
export function overlayReference(cleanup: Cleanup, work: string, tars: string[], mnt: string): void {
  const dirs = tars.map((t, i) => {
    const d = path.join(work, `ref-layer-${i}`);
    fs.mkdirSync(d, { recursive: true });
    execFileSync('tar', ['-x', '--xattrs', '--xattrs-include=*', '--numeric-owner', '--same-owner', '-p', '-C', d, '-f', t]);
    execFileSync('python3', ['-c', toOverlay, d]);
    return d;
  });
  const empty = path.join(work, 'ref-empty');
  fs.mkdirSync(empty, { recursive: true });
  fs.mkdirSync(mnt, { recursive: true });
  const lower = [...dirs].reverse().concat(empty).join(':');
  mount(cleanup, 'overlay', mnt, { type: 'overlay', options: `ro,lowerdir=${lower}` });
}
