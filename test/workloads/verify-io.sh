#!/bin/sh
# I/O that checks itself, for restart tests (runs under dash on the host and busybox sh in containers).
#   verify-io.sh write DIR       rewrites DIR/w0..w3 with random data forever; before each rewrite the
#                                slot's previous content is read back and checked against its sha256
#   verify-io.sh read FILE...    reads the files forever; every read must match the first one's sha256
# One line per completed operation ("ok KIND N UPTIME", UPTIME from /proc/uptime, read where the I/O
# runs, so a stall is measured inside the container); the first failure prints "FAIL …" and exits 1.
set -u
mode=$1
shift
fail() {
  echo "FAIL $*"
  exit 1
}
n=0
if [ "$mode" = write ]; then
  dir=$1
  mkdir -p "$dir" || fail "mkdir $dir"
  while :; do
    slot=$((n % 4))
    f="$dir/w$slot"
    eval "want=\${sum$slot:-}"
    if [ -n "$want" ]; then
      got=$(sha256sum <"$f") || fail "read $f"
      [ "$got" = "$want" ] || fail "content of $f: $got != $want"
    fi
    sum=$(dd if=/dev/urandom bs=65536 count=4 2>/dev/null | tee "$f" | sha256sum) || fail "write $f"
    [ -s "$f" ] || fail "write $f: empty"
    sync "$f" || fail "sync $f"
    eval "sum$slot=\$sum"
    n=$((n + 1))
    read -r up _ </proc/uptime
    echo "ok write $n $up"
  done
fi
if [ "$mode" = read ]; then
  i=0
  for f in "$@"; do
    s=$(sha256sum <"$f") || fail "read $f"
    eval "sum$i=\$s"
    i=$((i + 1))
  done
  while :; do
    i=0
    for f in "$@"; do
      eval "want=\$sum$i"
      got=$(sha256sum <"$f") || fail "read $f"
      [ "$got" = "$want" ] || fail "content of $f: $got != $want"
      i=$((i + 1))
      n=$((n + 1))
      read -r up _ </proc/uptime
      echo "ok read $n $up"
    done
  done
fi
fail "usage: verify-io.sh write DIR | read FILE..."
