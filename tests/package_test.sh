#!/usr/bin/env bash
# Builds ckptd's Debian package with cpack and checks it:
#   - contents: exactly the binary, both units, the sysusers.d file, the
#     example config and the man page, at Debian 12's paths, byte-identical to
#     the sources;
#   - control: conffiles, maintainer scripts, Depends;
#   - the packaged binary runs.
# As root, and only when CI=true or CKPTD_TEST_DPKG_INSTALL=1, it also runs
# dpkg -i, dpkg -r and dpkg --purge for real and checks the user, the files
# and their removal. That part refuses to run on a machine that already has a
# ckptd package, user or state directory, and purges on any failure.
#
# Usage: package_test.sh SOURCE_DIR BUILD_DIR HAVE_MAN_PAGE(0|1)
# Exit status 77 (CTest: skipped) when cpack or dpkg-deb is missing.
set -euo pipefail

src=$1
build=$2
have_man=${3:-0}

skip() { echo "SKIP: $*"; exit 77; }
fail() { echo "FAIL: $*" >&2; exit 1; }

command -v cpack >/dev/null || skip "cpack is missing"
command -v dpkg-deb >/dev/null || skip "dpkg-deb is missing (not a Debian system)"

tmp=$(mktemp -d)
installed_by_us=0
cleanup() {
  if [ "$installed_by_us" = 1 ]; then
    echo "cleanup: dpkg --purge ckptd"
    dpkg --purge ckptd >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== cpack -G DEB"
# cpack first brings the build up to date (its preinstall step builds "all").
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
if ! cpack -G DEB --config "$build/CPackConfig.cmake" -B "$tmp/out" >"$tmp/cpack.log" 2>&1; then
  cat "$tmp/cpack.log"
  tail -40 "$tmp/out/_CPack_Packages/Linux/DEB/PreinstallOutput.log" 2>/dev/null || true
  fail "cpack -G DEB failed"
fi
debs=("$tmp"/out/ckptd_*.deb)
if [ ${#debs[@]} -ne 1 ] || [ ! -f "${debs[0]}" ]; then
  fail "expected one ckptd_*.deb, got: ${debs[*]}"
fi
deb=${debs[0]}
basename "$deb"

echo "== dpkg-deb -I"
dpkg-deb -I "$deb"
echo "== dpkg-deb -c"
dpkg-deb -c "$deb" | tee "$tmp/contents"

# ---- Contents -----------------------------------------------------------------
expected=(
  ./etc/ckptd/ckptd.conf
  ./lib/systemd/system/ckptd.service
  ./lib/systemd/system/ckptd.socket
  ./usr/bin/ckptd
  ./usr/lib/sysusers.d/ckptd.conf
)
[ "$have_man" = 1 ] && expected+=(./usr/share/man/man8/ckptd.8.gz)
# Regular files only (type '-' in the mode column), in a stable order.
awk '$1 ~ /^-/ { print $6 }' "$tmp/contents" | LC_ALL=C sort >"$tmp/files"
printf '%s\n' "${expected[@]}" | LC_ALL=C sort >"$tmp/expected"
if ! diff -u "$tmp/expected" "$tmp/files"; then
  fail "the package's files differ from the expected list (- expected, + packaged)"
fi
grep -q '^-rwxr-xr-x root/root .* \./usr/bin/ckptd$' "$tmp/contents" ||
  fail "./usr/bin/ckptd is not an executable owned by root"

dpkg-deb -x "$deb" "$tmp/tree"
cmp "$src/systemd/ckptd.service" "$tmp/tree/lib/systemd/system/ckptd.service" ||
  fail "the packaged ckptd.service differs from systemd/ckptd.service"
cmp "$src/systemd/ckptd.socket" "$tmp/tree/lib/systemd/system/ckptd.socket" ||
  fail "the packaged ckptd.socket differs from systemd/ckptd.socket"
cmp "$src/systemd/ckptd.sysusers" "$tmp/tree/usr/lib/sysusers.d/ckptd.conf" ||
  fail "the packaged sysusers.d/ckptd.conf differs from systemd/ckptd.sysusers"
cmp "$src/etc/ckptd.conf" "$tmp/tree/etc/ckptd/ckptd.conf" ||
  fail "the packaged ckptd.conf differs from etc/ckptd.conf"
grep -qx 'ExecStart=/usr/bin/ckptd --config /etc/ckptd/ckptd.conf' \
  "$tmp/tree/lib/systemd/system/ckptd.service" ||
  fail "ckptd.service does not run /usr/bin/ckptd with /etc/ckptd/ckptd.conf"
"$tmp/tree/usr/bin/ckptd" --version | grep -q '^ckptd ' ||
  fail "the packaged binary does not run (ckptd --version)"
if [ "$have_man" = 1 ]; then
  gzip -dc "$tmp/tree/usr/share/man/man8/ckptd.8.gz" | grep -q '^\.TH CKPTD "*8' ||
    fail "ckptd.8.gz is not a section 8 man page"
fi

# ---- Control area ---------------------------------------------------------------
dpkg-deb -e "$deb" "$tmp/control"
[ "$(cat "$tmp/control/conffiles")" = /etc/ckptd/ckptd.conf ] ||
  fail "conffiles must list exactly /etc/ckptd/ckptd.conf"
for script in postinst prerm postrm; do
  [ -x "$tmp/control/$script" ] || fail "maintainer script $script is missing or not executable"
  sh -n "$tmp/control/$script" || fail "$script is not valid sh"
  if command -v shellcheck >/dev/null; then
    shellcheck -s sh "$tmp/control/$script" || fail "shellcheck finds problems in $script"
  fi
done
grep -q 'systemd-sysusers' "$tmp/control/postinst" || fail "postinst does not create the user"

field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = ckptd ] || fail "Package is not ckptd"
[ "$(field Architecture)" = "$(dpkg --print-architecture)" ] || fail "Architecture is not $(dpkg --print-architecture)"
depends=$(field Depends)
for dep in librocksdb7.8 libboost-json1.81.0 libboost-program-options1.81.0 procps 'adduser | systemd'; do
  case ", $depends," in
    *", $dep"[,\ ]*) ;;
    *) fail "Depends lacks $dep: $depends" ;;
  esac
done
# The daemon links libsystemd for sd_notify; dpkg-shlibdeps then adds it.
if ldd "$tmp/tree/usr/bin/ckptd" | grep -q libsystemd; then
  case "$depends" in *libsystemd0*) ;; *) fail "ckptd links libsystemd but Depends lacks libsystemd0" ;; esac
fi
echo "== package contents and control: ok"

# ---- Install, remove, purge (root, opt-in) -------------------------------------
if [ "$(id -u)" -ne 0 ] || { [ "${CI:-}" != true ] && [ "${CKPTD_TEST_DPKG_INSTALL:-}" != 1 ]; }; then
  echo "dpkg -i/-r/--purge not run (needs root and CI=true or CKPTD_TEST_DPKG_INSTALL=1)"
  [ "$have_man" = 1 ] || skip "help2man is missing, so the package has no man page"
  echo PASS
  exit 0
fi
if dpkg-query -W -f='${Status}' ckptd 2>/dev/null | grep -qv 'not-installed'; then
  skip "a ckptd package is already on this machine; not touching it"
fi
getent passwd ckptd >/dev/null && skip "a user ckptd already exists; not touching it"
getent group ckptd >/dev/null && skip "a group ckptd already exists; not touching it"
[ -e /var/lib/ckptd ] && skip "/var/lib/ckptd already exists; not touching it"
[ -e /etc/ckptd ] && skip "/etc/ckptd already exists; not touching it"

echo "== dpkg -i"
installed_by_us=1
dpkg -i "$deb" || fail "dpkg -i failed"
[ "$(dpkg-query -W -f='${Status}' ckptd)" = "install ok installed" ] || fail "ckptd is not installed"
entry=$(getent passwd ckptd) || fail "postinst did not create the user ckptd"
echo "user: $entry"
[ "$(echo "$entry" | cut -d: -f6)" = /var/lib/ckptd ] || fail "the home of ckptd is not /var/lib/ckptd"
[ "$(echo "$entry" | cut -d: -f7)" = /usr/sbin/nologin ] || fail "ckptd has a login shell"
[ "$(echo "$entry" | cut -d: -f3)" -lt 1000 ] || fail "ckptd is not a system user"
getent group ckptd >/dev/null || fail "postinst did not create the group ckptd"
/usr/bin/ckptd --version | grep -q '^ckptd ' || fail "/usr/bin/ckptd does not run"
for f in /lib/systemd/system/ckptd.service /lib/systemd/system/ckptd.socket \
         /usr/lib/sysusers.d/ckptd.conf /etc/ckptd/ckptd.conf; do
  [ -f "$f" ] || fail "$f is not installed"
done
dpkg-query -W -f='${Conffiles}\n' ckptd | grep -q '/etc/ckptd/ckptd.conf' ||
  fail "dpkg does not treat /etc/ckptd/ckptd.conf as a conffile"
[ ! -e /etc/systemd/system/multi-user.target.wants/ckptd.service ] ||
  fail "the package enabled ckptd.service"
# What systemd's StateDirectory= would create on the first start.
install -d -o ckptd -g ckptd -m 0750 /var/lib/ckptd
runuser -u ckptd -- touch /var/lib/ckptd/index-file || fail "ckptd cannot write its state directory"
echo "# edited" >>/etc/ckptd/ckptd.conf

echo "== dpkg -r"
dpkg -r ckptd || fail "dpkg -r failed"
[ "$(dpkg-query -W -f='${Status}' ckptd)" = "deinstall ok config-files" ] ||
  fail "after dpkg -r, ckptd is not in state config-files"
[ ! -e /usr/bin/ckptd ] || fail "dpkg -r left /usr/bin/ckptd"
[ ! -e /lib/systemd/system/ckptd.service ] || fail "dpkg -r left ckptd.service"
grep -q '^# edited' /etc/ckptd/ckptd.conf || fail "dpkg -r did not keep the edited conffile"
[ -f /var/lib/ckptd/index-file ] || fail "dpkg -r removed the index (only purge should)"
getent passwd ckptd >/dev/null || fail "dpkg -r removed the user (only purge should)"

echo "== dpkg --purge"
dpkg --purge ckptd || fail "dpkg --purge failed"
installed_by_us=0
dpkg-query -W -f='${Status}' ckptd 2>/dev/null | grep -q 'install ok' && fail "ckptd is still known to dpkg"
[ ! -e /etc/ckptd ] || fail "purge left /etc/ckptd"
[ ! -e /var/lib/ckptd ] || fail "purge left /var/lib/ckptd"
! getent passwd ckptd >/dev/null || fail "purge left the user ckptd"
! getent group ckptd >/dev/null || fail "purge left the group ckptd"
echo "== dpkg -i/-r/--purge: ok"

[ "$have_man" = 1 ] || skip "help2man is missing, so the package has no man page"
echo PASS
