#!/bin/sh
# smoke.sh SOURCE_DIR WORK_DIR SECONDS [TARGET...]
# Builds each libFuzzer target with clang (ASan + UBSan) from the sources it
# needs and fuzzes it for SECONDS, starting from the corpus in
# tests/fuzz-corpus (copied: new inputs do not land in the repository).
# A crash fails the run and leaves its input in WORK_DIR for a regression test.
#
# Short runs (SECONDS <= 60, as in the test suite) are reproducible: a fixed
# seed and a fixed number of runs per target (about 10 s each on 2 cores), so
# CI explores exactly what a developer's run explored, or a prefix of it on a
# slower machine. Longer runs use a random seed and only the time limit.
set -eu
src=$1 work=$2 secs=$3
shift 3
targets=${*:-payload mime_in config cdr smtp_reply imap track}
mkdir -p "$work"
# libetpan.pc leaks Debian's "-specs=...no-pie-link.specs": drop it
libs=$(pkg-config --cflags --libs gmime-3.0 jansson libcjson inih gnutls libetpan libcurl libmicrohttpd sqlite3 zlib libpq libxml-2.0 |
	sed 's/-specs=[^ ]*//g')
for t in $targets; do
	case $t in
	payload) extra="mailbridge/payload.c mailbridge/config.c" runs=1500000 ;;
	config) extra="mailbridge/config.c" runs=100000 ;;
	mime_in) extra="mailbridge/mime_in.c mailbridge/mime_out.c mailbridge/html_text.c" runs=150000 ;;
	cdr) extra="plugins/calllog/calllog.c" runs=1200000 ;;
	smtp_reply) extra="fuzz/relay.c smtp/smtp_client.c smtp/smtp_policy.c transport/netstream.c" runs=40000 ;;
	imap) extra="fuzz/relay.c $(cd "$src" && ls mailbridge/*.c smtp/*.c imap/*.c transport/*.c store/*.c fsm/*.c ghl/*.c | grep -v -x -e mailbridge/main.c -e mailbridge/daemon.c -e 'mailbridge/ctl.*\.c' -e mailbridge/cli.c)"
		runs=20000 ;;
	track) extra="mailbridge/tracking.c mailbridge/engagement.c mailbridge/config.c mailbridge/http.c mailbridge/metrics.c ghl/ghl.c fsm/engage.c fsm/job.c fsm/inbound_fsm.c $(cd "$src" && ls store/*.c)"
		runs=200000 ;;
	*) echo "unknown target $t" >&2; exit 2 ;;
	esac
	( cd "$src" && clang -g -O1 -D_GNU_SOURCE -DMB_VERSION=\"fuzz\" -DMB_COMMIT=\"fuzz\" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
		-Imailbridge -Ismtp -Iimap -Ibase -Itransport -Istore/include -Istore -Ifsm -Ighl -Ifuzz -I. -o "$work/fuzz_$t" "fuzz/fuzz_$t.c" $extra base/util.c base/log.c base/netaddr.c base/poller.c $libs -lpthread -ldl -lm )
	rm -rf "$work/corpus_$t"
	cp -r "$src/tests/fuzz-corpus/$t" "$work/corpus_$t"
	if [ "$secs" -le 60 ]; then limit="-seed=1 -runs=$runs"; else limit=""; fi
	( cd "$work" && LSAN_OPTIONS="suppressions=$src/fuzz/lsan.supp" "./fuzz_$t" $limit -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 "corpus_$t" \
		>"fuzz_$t.log" 2>&1 ) || { tail -40 "$work/fuzz_$t.log"; exit 1; }
	grep -E "Done [0-9]+ runs" "$work/fuzz_$t.log" | tail -1 | sed "s/^/$t: /"
done
