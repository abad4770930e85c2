#!/bin/sh
# Installs what mailbridge needs on Debian 12 (bookworm), non-interactively.
#   scripts/install-deps.sh          build + run dependencies
#   scripts/install-deps.sh --test   ... plus the real servers the tests start
#                                    (Postfix, Dovecot, PostgreSQL) and Python for the harness
# libunbound.pc names libevent in Requires.private, and libunbound-dev does
# not pull libevent-dev: pkg-config needs it listed here.
# Note: libetpan-dev pulls libcurl4-gnutls-dev, which conflicts with the
# OpenSSL flavour, so everything here is the GnuTLS build.
set -eu
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

PKGS="build-essential cmake pkg-config ca-certificates \
  libetpan-dev libcurl4-gnutls-dev libgmime-3.0-dev libjansson-dev libcjson-dev libmicrohttpd-dev \
  libsqlite3-dev zlib1g-dev libpq-dev libgnutls28-dev libinih-dev libxml2-dev libsystemd-dev libunbound-dev libevent-dev libsasl2-modules"
if [ "${1:-}" = "--test" ]; then
  # Postfix asks what kind of mail system this is: the tests bring their own config
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  # dpkg-dev (dpkg-shlibdeps, for the package's Depends) and adduser (its
  # postinst) usually come with build-essential and the base system
  PKGS="$PKGS postgresql-15 postgresql-client-15 postfix dovecot-imapd dovecot-lmtpd kannel kannel-extras python3 openssl procps groff-base clang libclang-rt-14-dev dpkg-dev adduser valgrind lintian file unbound prometheus chromium"
fi
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $PKGS
