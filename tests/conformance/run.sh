#!/usr/bin/env bash
# Runs conformance.mjs: run.sh <path to ckptd> <spec dir>
# Installs the pinned npm packages (package-lock.json) when node_modules is
# missing or older than the lock file; nothing else is fetched.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
exec node conformance.mjs "$@"
