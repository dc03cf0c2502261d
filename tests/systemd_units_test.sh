#!/usr/bin/env bash
# Checks ckptd's systemd units the way they are installed:
#   1. `cmake --install --prefix /usr` into a staging root puts the units where
#      Debian 12 looks for them, byte-identical to systemd/, and the binary
#      where ExecStart= says;
#   2. `systemd-analyze verify` passes on ckptd.service and ckptd.socket
#      without a single warning;
#   3. `systemd-analyze security --offline=yes` rates the service's exposure
#      at most 1.5;
#   4. systemd-sysusers accepts the sysusers.d file.
#
# verify resolves ExecStart= and ExecReload= binaries, the units' dependencies
# (sysinit.target, sockets.target...) and, with man pages on, Documentation=.
# So it runs with --root= on the staging root, which holds the installed
# ckptd, the host's own system units, /bin/kill, and the generated man page
# (found through MANPATH). The units checked are the files the package ships.
#
# Usage: systemd_units_test.sh SOURCE_DIR BUILD_DIR HAVE_MAN_PAGE(0|1)
# Exit status 77 (CTest: skipped) when systemd-analyze is not installed.
set -euo pipefail

src=$1
build=$2
have_man=${3:-0}
max_exposure=1.5

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

command -v systemd-analyze >/dev/null || skip "systemd-analyze is missing (Debian package systemd)"
[ -d /usr/lib/systemd/system ] || skip "the host has no /usr/lib/systemd/system to resolve unit dependencies"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root

echo "== staging install with prefix /usr"
DESTDIR=$root cmake --install "$build" --prefix /usr >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; fail "cmake --install failed (build the whole project first)"; }
for unit in ckptd.service ckptd.socket; do
  [ -f "$root/lib/systemd/system/$unit" ] || fail "$unit is not installed in /lib/systemd/system"
  cmp "$src/systemd/$unit" "$root/lib/systemd/system/$unit" ||
    fail "the installed $unit differs from systemd/$unit"
done
exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$root/lib/systemd/system/ckptd.service")
[ "$exec_start" = /usr/bin/ckptd ] || fail "ExecStart= runs '$exec_start', not /usr/bin/ckptd"
[ -x "$root$exec_start" ] || fail "ExecStart= binary $exec_start is not installed"
config=$(sed -n 's/^ExecStart=.*--config \([^ ]*\).*/\1/p' "$root/lib/systemd/system/ckptd.service")
[ -f "$root$config" ] || fail "the unit's --config $config is not installed"

# What verify needs besides ckptd: the host's units (minus any installed
# ckptd, which would shadow the staged one: /usr/lib precedes /lib) and the
# ExecReload= binary.
mkdir -p "$root/usr/lib/systemd/system" "$root/bin"
cp -a /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
rm -f "$root"/usr/lib/systemd/system/ckptd.*
if [ -x /bin/kill ]; then
  cp /bin/kill "$root/bin/kill"
else
  printf '#!/bin/sh\n' >"$root/bin/kill" && chmod 755 "$root/bin/kill"
  echo "note: /bin/kill (procps) is not installed here; a stand-in was used"
fi

if [ "$have_man" = 1 ] && [ ! -f "$root/usr/share/man/man8/ckptd.8.gz" ]; then
  fail "help2man was found but cmake --install put no ckptd.8.gz in share/man/man8"
fi
man_flag=--man=no
if [ -f "$root/usr/share/man/man8/ckptd.8.gz" ] && command -v man >/dev/null; then
  man_flag=--man=yes
  export MANPATH=$root/usr/share/man
else
  echo "note: Documentation=man:ckptd(8) is not checked (no man page built, or no man)"
fi

echo "== systemd-analyze verify $man_flag --root=<staging> ckptd.service ckptd.socket"
if ! systemd-analyze verify "$man_flag" --root="$root" ckptd.service ckptd.socket >"$tmp/verify.log" 2>&1; then
  cat "$tmp/verify.log"
  fail "systemd-analyze verify failed"
fi
# verify only warns about unknown keys and the like; any output is a defect.
if [ -s "$tmp/verify.log" ]; then
  cat "$tmp/verify.log"
  fail "systemd-analyze verify printed warnings"
fi
echo "ok"

echo "== systemd-analyze security --offline=yes systemd/ckptd.service"
systemd-analyze security --offline=yes --no-pager "$src/systemd/ckptd.service" >"$tmp/security.log" 2>&1 || true
exposure=$(sed -n 's/.*Overall exposure level for ckptd\.service: \([0-9.]*\).*/\1/p' "$tmp/security.log")
if [ -z "$exposure" ]; then
  cat "$tmp/security.log"
  fail "no 'Overall exposure level' line in the output of systemd-analyze security"
fi
grep '✗' "$tmp/security.log" || true
echo "exposure $exposure (limit $max_exposure)"
awk -v e="$exposure" -v m="$max_exposure" 'BEGIN { exit !(e <= m) }' ||
  fail "exposure $exposure is above $max_exposure"

echo "== systemd-sysusers --dry-run ckptd.conf"
if command -v systemd-sysusers >/dev/null; then
  systemd-sysusers --root="$root" --dry-run ckptd.conf >"$tmp/sysusers.log" 2>&1 ||
    { cat "$tmp/sysusers.log"; fail "systemd-sysusers rejects sysusers.d/ckptd.conf"; }
  grep -q "Creating user 'ckptd'" "$tmp/sysusers.log" ||
    { cat "$tmp/sysusers.log"; fail "sysusers.d/ckptd.conf does not create the user ckptd"; }
  echo "ok"
else
  echo "note: systemd-sysusers is missing; sysusers.d/ckptd.conf not checked"
fi

echo "PASS"
