#!/usr/bin/env bash
# The main job end to end on this machine (run as root): installs what is missing, then starts a
# private registry, containerd and obd (deviced + snapshotter), builds a sample image, converts it to
# overlaybd with obdconv, runs it lazily with `ctr run --snapshotter obd` and prints the cold-start
# time against a normal pull + run (overlayfs snapshotter) and the bytes fetched against the image
# size. Everything it starts is stopped on exit, Ctrl-C or failure.
#   DEMO_IMAGE_MIB (256)  DEMO_WORKING_SET_MIB (8)  DEMO_RATE_MBPS (50; 0 = unthrottled)  DEMO_LATENCY_MS (5)
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

pid=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

node dist/bench/demo.js &
pid=$!
wait "$pid"
status=$?
pid=""
exit $status
