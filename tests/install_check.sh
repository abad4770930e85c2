#!/bin/sh
# install_check.sh PREFIX BUILD_DIR SOURCE_DIR
# cmake --install into a scratch prefix; the installed binary must accept
# the installed configuration, the unit and plugins must be there, and a
# plugin must build out of tree with only `pkg-config mailbridge-plugin`.
set -eu
prefix=$1 build=$2 src=$3
rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
"$prefix/sbin/mailbridge" check-config -c "$prefix/etc/mailbridge/mailbridge.conf" | grep -q 'data_dir = /var/lib/mailbridge'
test -f "$prefix/lib/systemd/system/mailbridge.service"
# the unit: valid, and its exposure (systemd-analyze security, 0-10) at
# most 2.0 (it was 3.4 before the SystemCallFilter/ProtectProc hardening)
if command -v systemd-analyze >/dev/null; then
	mkdir -p "$prefix/unit-check"
	sed "s|/usr/sbin/mailbridge|$prefix/sbin/mailbridge|g" "$prefix/lib/systemd/system/mailbridge.service" \
		>"$prefix/unit-check/mailbridge.service"
	systemd-analyze verify --man=no "$prefix/unit-check/mailbridge.service"
	systemd-analyze security --offline=true --threshold=20 "$prefix/unit-check/mailbridge.service" >/dev/null ||
		{ systemd-analyze security --offline=true "$prefix/unit-check/mailbridge.service"; exit 1; }
	grep -q 'check-config -q' "$prefix/unit-check/mailbridge.service"
fi
# the man pages render without troff warnings
for page in "$prefix"/share/man/man8/mailbridge.8 "$prefix"/share/man/man5/mailbridge.conf.5; do
	test -f "$page"
	if command -v groff >/dev/null; then
		test -z "$(groff -man -Tutf8 -ww -z "$page" 2>&1)"
	fi
done
pcdir=$(dirname "$(find "$prefix" -name mailbridge-plugin.pc | head -n 1)")
plugindir=$(PKG_CONFIG_PATH=$pcdir pkg-config --define-variable=prefix="$prefix" --variable=plugindir mailbridge-plugin)
test -f "$plugindir/kannel.so" && test -f "$plugindir/calllog.so"
cflags=$(PKG_CONFIG_PATH=$pcdir pkg-config --define-variable=prefix="$prefix" --cflags mailbridge-plugin)
# shellcheck disable=SC2086
cc -shared -fPIC $cflags -o "$prefix/outoftree.so" "$src/tests/plugins/badabi.c"
test -f "$prefix/outoftree.so"
echo "install check ok"
