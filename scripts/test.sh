#!/usr/bin/env bash
# The README's test command: installs whatever is missing, builds, then runs `npm test`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec npm test -- "$@"
