#!/bin/sh
# deb_check.sh SOURCE_DIR WORK_DIR
# Builds the Debian package with CPack from a release build (prefix /usr),
# checks its contents and Depends, then installs it with apt as an
# administrator would, runs the installed binary on the shipped
# configuration, and purges it again. Installing needs root (or sudo -n);
# without it, or when a mailbridge package is already installed (which this
# test must not replace), it exits 77 and ctest reports it as skipped.
set -eu
src=$(cd "$1" && pwd) work=$2
rm -rf "$work" && mkdir -p "$work"
work=$(cd "$work" && pwd)

cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr -DBUILD_TESTING=OFF >/dev/null
cmake --build "$work/build" -j2 >/dev/null
(cd "$work/build" && cpack -G DEB >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log"; exit 1; }
deb=$(ls "$work"/build/mailbridge_*.deb)
dev=$(ls "$work"/build/mailbridge-dev_*.deb)
echo "built $deb $dev"

fail() { echo "deb_check: $*" >&2; exit 1; }
# lintian: no error and no warning, pedantic included (info tags may stay)
command -v lintian >/dev/null || fail "lintian is not installed (scripts/install-deps.sh --test)"
lintian --pedantic --fail-on error,warning,pedantic "$deb" "$dev" >"$work/lintian.log" 2>&1 ||
	{ cat "$work/lintian.log"; fail "lintian found problems"; }
deps=$(dpkg-deb -f "$deb" Depends)
for d in libetpan20 libgmime-3.0-0 libmicrohttpd12 libsqlite3-0 libsasl2-modules adduser; do
	echo "$deps" | grep -q "$d" || fail "Depends lacks $d: $deps"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/mailbridge/mailbridge.conf || fail "mailbridge.conf is not a conffile"
dpkg-deb -x "$deb" "$work/x"
test -f "$work/x/usr/lib/systemd/system/mailbridge.service" || fail "no systemd unit"
ls "$work"/x/usr/lib/*/mailbridge/plugins/kannel.so >/dev/null || fail "no plugins"
test -f "$work/x/usr/share/man/man8/mailbridge.8.gz" || fail "no man page"
test -f "$work/x/usr/share/doc/mailbridge/copyright" || fail "no copyright"
test -f "$work/x/usr/share/bash-completion/completions/mailbridge" || fail "no bash completion"
test ! -e "$work/x/usr/include" || fail "plugin.h belongs in mailbridge-dev"
file "$work/x/usr/sbin/mailbridge" | grep -q ", stripped" || fail "binary not stripped"
grep -qx 'ExecStart=/usr/sbin/mailbridge serve -c /etc/mailbridge/mailbridge.conf' \
	"$work/x/usr/lib/systemd/system/mailbridge.service" || fail "unit does not run the packaged paths"
dpkg-deb -x "$dev" "$work/xdev"
test -f "$work/xdev/usr/include/mailbridge/plugin.h" || fail "mailbridge-dev has no plugin.h"
ls "$work"/xdev/usr/lib/*/pkgconfig/mailbridge-plugin.pc >/dev/null || fail "mailbridge-dev has no .pc"
dpkg-deb -f "$dev" Depends | grep -q "mailbridge (= " || fail "mailbridge-dev does not depend on mailbridge"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	sudo -n true 2>/dev/null || { echo "skipped: installing needs root or sudo -n"; exit 77; }
	SUDO="sudo -n"
fi
if dpkg-query -W -f '${Status}' mailbridge 2>/dev/null | grep -q "ok installed"; then
	echo "skipped: a mailbridge package is already installed here"
	exit 77
fi
trap '$SUDO env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q mailbridge >/dev/null 2>&1 || true' EXIT
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$deb" >"$work/apt.log" 2>&1 ||
	{ cat "$work/apt.log"; fail "apt-get install failed"; }
test "$(stat -c %U:%G:%a /etc/mailbridge/mailbridge.conf)" = "root:mailbridge:640" ||
	fail "installed config is $(stat -c %U:%G:%a /etc/mailbridge/mailbridge.conf), want root:mailbridge:640"
# enabled on install, as debhelper's snippet does (the symlink; no systemd runs here)
test -L /etc/systemd/system/multi-user.target.wants/mailbridge.service || fail "the unit was not enabled"
# a reinstall (configure again, as an upgrade) leaves the administrator's mode alone
$SUDO chmod 0600 /etc/mailbridge/mailbridge.conf
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --reinstall "$deb" >>"$work/apt.log" 2>&1 ||
	{ cat "$work/apt.log"; fail "reinstall failed"; }
test "$(stat -c %a /etc/mailbridge/mailbridge.conf)" = 600 || fail "configure re-chmodded the config"
$SUDO chmod 0640 /etc/mailbridge/mailbridge.conf
# the installed binary, as the service user, on the shipped configuration
out=$($SUDO setpriv --reuid=mailbridge --regid=mailbridge --clear-groups \
	/usr/sbin/mailbridge check-config -c /etc/mailbridge/mailbridge.conf 2>&1) ||
	{ echo "$out"; fail "check-config on the installed example failed"; }
echo "$out" | grep -q "/usr/lib/.*/mailbridge/plugins" || { echo "$out"; fail "plugin dir not in effective config"; }
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q mailbridge >/dev/null 2>&1 || fail "apt-get purge failed"
test ! -e /usr/sbin/mailbridge || fail "purge left /usr/sbin/mailbridge"
test ! -e /etc/systemd/system/multi-user.target.wants/mailbridge.service || fail "purge left the unit enabled"
trap - EXIT
echo "deb_check: built, lintian-clean, installed with apt and enabled, reinstalled, check-config ran as user mailbridge, purged"
