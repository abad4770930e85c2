#!/bin/sh
# valgrind_check.sh SOURCE_DIR WORK_DIR SUITE...   (pg:SUITE: on PostgreSQL)
# The suite's main build runs under ASan+UBSan; valgrind cannot run such a
# binary, so this builds a plain one (RelWithDebInfo, with the test plugins)
# and runs the given integration suites with the daemon under valgrind
# (tests/harness/daemon.py: MB_VALGRIND). Any valgrind error or definite leak makes the daemon exit 99,
# which the suite's teardown reports as a failure.
# Its servers take ports from 23000 (MB_TEST_PORT_BASE), apart from the
# plain suites' 21000, so both can run at once (ctest -j2).
set -eu
src=$(cd "$1" && pwd) work=$2
shift 2
mkdir -p "$work"
# no _FORTIFY_SOURCE (MB_HARDEN=OFF): valgrind 3.19 reports glibc's checked
# memmove as an overlapping memcpy
cmake -S "$src" -B "$work" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMB_SANITIZE=OFF -DMB_HARDEN=OFF -DBUILD_TESTING=ON >/dev/null
cmake --build "$work" -j2 --target mailbridge calllog kannel testsms badabi >"$work/build.log" 2>&1 ||
	{ tail -30 "$work/build.log"; exit 1; }
cd "$src/tests"
# apart from the plain suites (21000 and up), so ctest -j2 may run both
MB_TEST_PORT_BASE=${MB_TEST_PORT_BASE:-23000}
export MB_TEST_PORT_BASE
# a suite named pg:NAME runs on the PostgreSQL backend (harness/pg.py)
for suite in "$@"; do
	store=sqlite
	case $suite in pg:*) store=postgresql suite=${suite#pg:} ;; esac
	echo "== $suite under valgrind ($store)"
	MB_TEST_STORE=$store MB_VALGRIND=1 MAILBRIDGE_BIN="$work/mailbridge" MB_PLUGIN_DIR="$work/plugins" \
		PYTHONDONTWRITEBYTECODE=1 python3 -m unittest "test_$suite"
done
