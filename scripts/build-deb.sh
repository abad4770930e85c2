#!/bin/sh
# build-deb.sh SOURCE_DIR WORK_DIR -> WORK_DIR/mailbridge_<version>_<arch>.deb
# A plain (not sanitized) release build installed with prefix /usr into a
# staging tree, Depends computed from the shared libraries the binary and
# plugins load (dpkg -S), plus what is needed at run time only.
set -eu
src=$(cd "$1" && pwd) work=$2
rm -rf "$work" && mkdir -p "$work"
work=$(cd "$work" && pwd)
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX=/usr >/dev/null
cmake --build "$work/build" -j2 --target mailbridge calllog kannel >/dev/null
DESTDIR="$work/stage" cmake --install "$work/build" >/dev/null
version=$(sed -n 's/^project(mailbridge VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
arch=$(dpkg --print-architecture)
deps=$(for f in "$work/stage/usr/sbin/mailbridge" "$work"/stage/usr/lib/*/mailbridge/plugins/*.so \
	"$work"/stage/usr/lib/mailbridge/plugins/*.so; do [ -f "$f" ] && ldd "$f"; done 2>/dev/null |
	awk '/=> \// {print $3}' | sort -u | while read -r lib; do
		dpkg -S "$(readlink -f "$lib")" 2>/dev/null || dpkg -S "$lib" 2>/dev/null
	done | cut -d: -f1 | sort -u | paste -sd, | sed 's/,/, /g')
mkdir -p "$work/stage/DEBIAN"
cat > "$work/stage/DEBIAN/control" <<CTL
Package: mailbridge
Version: $version
Architecture: $arch
Maintainer: mailbridge developers <root@localhost>
Depends: $deps, libsasl2-modules, ca-certificates, adduser
Section: mail
Priority: optional
Description: HighLevel conversation provider for Email beside Postfix
 Receives HighLevel's signed outbound-message webhooks, sends them through
 the location's SMTP relay and reports their status; watches IMAP mailboxes
 (or takes LMTP from Postfix) and posts replies as inbound messages.
CTL
printf '/etc/mailbridge/mailbridge.conf\n' > "$work/stage/DEBIAN/conffiles"
cat > "$work/stage/DEBIAN/postinst" <<'POST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
	getent passwd mailbridge >/dev/null || adduser --system --group --no-create-home --home /var/lib/mailbridge mailbridge
	chown mailbridge:mailbridge /etc/mailbridge/mailbridge.conf
fi
POST
chmod 755 "$work/stage/DEBIAN/postinst"
dpkg-deb --root-owner-group --build "$work/stage" "$work/mailbridge_${version}_${arch}.deb" >/dev/null
echo "$work/mailbridge_${version}_${arch}.deb"
