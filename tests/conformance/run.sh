#!/usr/bin/env bash
# Runs conformance.mjs: run.sh <path to ckptd> <spec dir>
# Installs the pinned npm packages (package-lock.json) when node_modules is
# missing or older than the lock file; nothing else is fetched.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 <ckptd> <spec dir>" >&2; exit 2; }
ckptd="$(realpath "$1")"
spec="$(realpath "$2")"
cd "$(dirname "$0")"
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
exec node conformance.mjs "$ckptd" "$spec"
