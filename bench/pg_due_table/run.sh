#!/bin/sh
# Session 15's experiment (README, Performance "Session 15"): one outbound
# message's job statements, replayed by pgbench on three shapes of the
# jobs table, on a throwaway PostgreSQL in a temp dir.
#   today.sql       the jobs row as it is (state in jobs_due_id): no update is HOT
#   due_tables.sql  state apart, in job_due and report_due (every jobs update HOT)
#   schema.sql with the due index partial on the waiting states, + today.sql
# Usage: bench/pg_due_table/run.sh [PORT] [SECONDS]   (prints tps per shape)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
port=${1:-29500}
secs=${2:-15}
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl | tail -1)")
dir=$(mktemp -d /tmp/mb-pgdue-XXXXXX)
as=""
if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; as="runuser -u postgres --"; fi
$as "$bin/initdb" -D "$dir/data" -U mb --auth=trust --no-sync >/dev/null
$as "$bin/pg_ctl" -D "$dir/data" -o "-k $dir -p $port -c listen_addresses=''" -l "$dir/log" -w start >/dev/null
pid=$(head -1 "$dir/data/postmaster.pid")
stop() { kill -INT "$pid" 2>/dev/null; sleep 1; rm -rf "$dir"; }
trap stop EXIT
trap 'exit 1' INT TERM HUP PIPE
P="-h $dir -p $port -U mb"
sed "s/CREATE INDEX jobs_due_id ON jobs(state, next_at, id);/CREATE INDEX jobs_due_id ON jobs(next_at, id) WHERE state IN ('queued', 'waiting');/" \
    "$here/schema.sql" > "$dir/schema_partial.sql"
psql $P -d postgres -qc "CREATE DATABASE exp"
run() {
	psql $P -d exp -q -f "$1" 2>/dev/null
	printf '%s + %s: ' "$(basename "$1")" "$2"
	pgbench $P -n -c 4 -j 2 -T "$secs" -f "$here/$2" exp 2>&1 | sed -n 's/^tps = \([0-9.]*\).*/\1 tps/p'
}
for i in 1 2; do
	run "$here/schema.sql" today.sql
	run "$here/schema.sql" due_tables.sql
	run "$dir/schema_partial.sql" today.sql
done
