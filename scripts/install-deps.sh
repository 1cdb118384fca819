#!/usr/bin/env bash
# Installs everything obd needs on a fresh Debian 12 machine (idempotent, quiet when all is there):
# Debian packages for the addon build and the real components the tests and the demo start,
# then the npm packages (npm ci) and the builds (addon with cmake-js, TypeScript with tsc).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "install-deps: must run as root (apt-get, loop devices, mounts)" >&2
  exit 1
fi

# command or file that proves a package is installed → package name
declare -A need=(
  [/usr/bin/g++]=g++ [/usr/bin/make]=make [/usr/bin/cmake]=cmake [/usr/bin/pkg-config]=pkg-config
  [/usr/include/liburing.h]=liburing-dev [/usr/include/lz4.h]=liblz4-dev [/usr/include/zstd.h]=libzstd-dev [/usr/include/archive.h]=libarchive-dev [/usr/include/zlib.h]=zlib1g-dev [/usr/include/openssl/evp.h]=libssl-dev
  [/usr/bin/curl-config]=libcurl4-openssl-dev
  [/usr/sbin/mkfs.ext4]=e2fsprogs [/usr/sbin/losetup]=mount [/usr/bin/lz4]=lz4 [/usr/bin/zstd]=zstd
  [/usr/bin/fio]=fio [/usr/bin/curl]=curl [/usr/bin/htpasswd]=apache2-utils
  [/usr/bin/containerd]=containerd [/usr/sbin/runc]=runc [/usr/bin/docker-registry]=docker-registry
  [/usr/bin/skopeo]=skopeo [/usr/bin/go]=golang-go
  [/usr/share/gocode/src/github.com/containerd/containerd/snapshots/testsuite]=golang-github-containerd-containerd-dev
  [/usr/bin/busybox]=busybox-static
)
missing=()
for f in "${!need[@]}"; do [ -e "$f" ] || missing+=("${need[$f]}"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
modprobe loop 2>/dev/null || true
modprobe fuse 2>/dev/null || true
modprobe overlay 2>/dev/null || true

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npm run build
