#!/bin/sh
# install_check.sh PREFIX BUILD_DIR SOURCE_DIR
# cmake --install into a scratch prefix; the installed binary must accept
# the installed configuration, the unit and plugins must be there, and a
# plugin must build out of tree with only `pkg-config mailbridge-plugin`.
set -eu
prefix=$1 build=$2 src=$3
rm -rf "$prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
conf="$prefix/etc/mailbridge/mailbridge.conf"
eff=$("$prefix/sbin/mailbridge" check-config -c "$conf")
echo "$eff" | grep -q 'data_dir = /var/lib/mailbridge'
# the plugin directory is this prefix's, though the build was configured
# for another one (the config is written at install time)
echo "$eff" | grep -q "dir = $prefix/lib.*/mailbridge/plugins" || { echo "$eff" | grep "dir ="; exit 1; }
test "$(stat -c %a "$conf")" = 640
unit="$prefix/lib/systemd/system/mailbridge.service"
grep -qx "ExecStart=$prefix/sbin/mailbridge serve -c $conf" "$unit" || { grep ^Exec "$unit"; exit 1; }
grep -qx "ExecStartPre=$prefix/sbin/mailbridge check-config -q -c $conf" "$unit"
# the unit: valid, and its exposure (systemd-analyze security, 0-10) at
# most 2.0 (it was 3.4 before the SystemCallFilter/ProtectProc hardening)
if command -v systemd-analyze >/dev/null; then
	systemd-analyze verify --man=no "$unit"
	systemd-analyze security --offline=true --threshold=20 "$unit" >/dev/null ||
		{ systemd-analyze security --offline=true "$unit"; exit 1; }
fi
# the man pages (compressed, as Debian wants) render without troff warnings
for page in "$prefix"/share/man/man8/mailbridge.8.gz "$prefix"/share/man/man5/mailbridge.conf.5.gz; do
	test -f "$page"
	if command -v groff >/dev/null; then
		test -z "$(zcat "$page" | groff -man -Tutf8 -ww -z 2>&1)"
	fi
done
test -f "$prefix/share/bash-completion/completions/mailbridge"
bash -n "$prefix/share/bash-completion/completions/mailbridge"
pcdir=$(dirname "$(find "$prefix" -name mailbridge-plugin.pc | head -n 1)")
plugindir=$(PKG_CONFIG_PATH=$pcdir pkg-config --define-variable=prefix="$prefix" --variable=plugindir mailbridge-plugin)
test -f "$plugindir/kannel.so" && test -f "$plugindir/calllog.so"
cflags=$(PKG_CONFIG_PATH=$pcdir pkg-config --define-variable=prefix="$prefix" --cflags mailbridge-plugin)
# shellcheck disable=SC2086
cc -shared -fPIC $cflags -o "$prefix/outoftree.so" "$src/tests/plugins/badabi.c"
test -f "$prefix/outoftree.so"
echo "install check ok"
