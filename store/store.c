/* store: the engine's front (see store_private.h): the schema, opening
 * the configured backend, and the calls every aggregate file makes, passed
 * to the backend that runs them. */
#include "store.h"
#include "store_private.h"
#include "store_pg_schema.h"
#include "log.h"
#include "util.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Each entry moves the schema from version i to i+1, in SQLite's words
 * and PostgreSQL's. Never edit a shipped entry; append a new one. The
 * PostgreSQL backend began at version 13: its first entry creates that
 * schema whole (store_pg_schema.h), and later entries carry both. */
const struct store_migration store_migrations[] = {
	/* 1: the initial schema */
	{"CREATE TABLE jobs ("
	"  id INTEGER PRIMARY KEY,"
	"  message_id TEXT NOT NULL UNIQUE,"
	"  location_id TEXT NOT NULL,"
	"  type TEXT NOT NULL,"
	"  payload TEXT NOT NULL,"
	"  state TEXT NOT NULL,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  next_at INTEGER NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL,"
	"  last_code INTEGER NOT NULL DEFAULT 0,"
	"  last_error TEXT,"
	"  rfc_message_id TEXT,"
	"  report_status TEXT,"
	"  report_state TEXT NOT NULL DEFAULT 'none',"
	"  report_attempts INTEGER NOT NULL DEFAULT 0,"
	"  report_next_at INTEGER NOT NULL DEFAULT 0,"
	"  report_error TEXT,"
	"  rcpt_state TEXT);"
	"CREATE INDEX jobs_due ON jobs(state, next_at);"
	"CREATE INDEX jobs_report ON jobs(report_state, report_next_at);"
	"CREATE TABLE message_map ("
	"  rfc_message_id TEXT PRIMARY KEY,"
	"  location_id TEXT NOT NULL,"
	"  ghl_message_id TEXT,"
	"  email_message_id TEXT,"
	"  alt_id TEXT,"
	"  conversation_id TEXT,"
	"  contact_id TEXT,"
	"  refs TEXT,"
	"  reply_token TEXT UNIQUE,"
	"  created_at INTEGER NOT NULL);"
	"CREATE INDEX message_map_ghl ON message_map(location_id, ghl_message_id);"
	"CREATE INDEX message_map_email ON message_map(location_id, email_message_id);"
	"CREATE INDEX message_map_alt ON message_map(location_id, alt_id);"
	"CREATE TABLE imap_checkpoints ("
	"  account TEXT PRIMARY KEY,"
	"  uidvalidity INTEGER NOT NULL,"
	"  last_uid INTEGER NOT NULL,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE TABLE inbound_seen ("
	"  location_id TEXT NOT NULL,"
	"  dedupe_key TEXT NOT NULL,"
	"  state TEXT NOT NULL,"
	"  ghl_message_id TEXT,"
	"  error TEXT,"
	"  created_at INTEGER NOT NULL,"
	"  PRIMARY KEY (location_id, dedupe_key));"
	"CREATE TABLE tokens ("
	"  location_id TEXT PRIMARY KEY,"
	"  user_type TEXT,"
	"  company_id TEXT,"
	"  access_token TEXT,"
	"  refresh_token TEXT,"
	"  expires_at INTEGER NOT NULL DEFAULT 0,"
	"  scope TEXT,"
	"  needs_reinstall INTEGER NOT NULL DEFAULT 0,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE TABLE webhook_seen ("
	"  webhook_id TEXT PRIMARY KEY,"
	"  received_at INTEGER NOT NULL);"
	"CREATE TABLE events ("
	"  id INTEGER PRIMARY KEY,"
	"  at INTEGER NOT NULL,"
	"  message_id TEXT,"
	"  kind TEXT NOT NULL,"
	"  detail TEXT);"
	"CREATE INDEX events_msg ON events(message_id, id);",
	    NULL },
	/* 2: failed inbound messages keep their bytes for `inbound retry` */
	{"ALTER TABLE inbound_seen ADD COLUMN raw BLOB;"
	"ALTER TABLE inbound_seen ADD COLUMN summary TEXT;"
	"ALTER TABLE inbound_seen ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;",
	    NULL },
	/* 3: watcher state for `accounts`, and locations whose app was uninstalled */
	{"CREATE TABLE watchers ("
	"  location_id TEXT PRIMARY KEY,"
	"  state TEXT NOT NULL,"
	"  detail TEXT,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE TABLE uninstalled ("
	"  location_id TEXT PRIMARY KEY,"
	"  at INTEGER NOT NULL);",
	    NULL },
	/* 4: plugins' own key-value pairs (e.g. gateway id -> messageId) */
	{"CREATE TABLE plugin_kv ("
	"  plugin TEXT NOT NULL,"
	"  key TEXT NOT NULL,"
	"  value TEXT NOT NULL,"
	"  updated_at INTEGER NOT NULL,"
	"  PRIMARY KEY (plugin, key));",
	    NULL },
	/* 5: payloads in their own table, so that the several state updates
	 * of a job rewrite a small row rather than its ~10 KB payload each
	 * time; emailMessageId beside the job for the status reporter */
	{"CREATE TABLE job_payload ("
	"  job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,"
	"  payload TEXT NOT NULL);"
	"INSERT INTO job_payload (job_id, payload) SELECT id, payload FROM jobs;"
	"ALTER TABLE jobs ADD COLUMN email_message_id TEXT;"
	"UPDATE jobs SET email_message_id = CASE WHEN json_valid(payload) AND "
	"  json_type(payload, '$.emailMessageId') = 'text' THEN json_extract(payload, '$.emailMessageId') END;"
	"ALTER TABLE jobs DROP COLUMN payload;",
	    NULL },
	/* 6: after a UIDVALIDITY change, the UIDs up to rescan_upto are read
	 * again only if they arrived within keep_days (imap_session.c) */
	{"ALTER TABLE imap_checkpoints ADD COLUMN rescan_upto INTEGER NOT NULL DEFAULT 0;",
	    NULL },
	/* 7: an attempt ended after our final dot with no reply: the relay
	 * may hold the message (outbound.c checks its log before resending) */
	{"ALTER TABLE jobs ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0;",
	    NULL },
	/* 8: replay guard. A compact fingerprint (mb_fp: 12 bytes of SHA-256)
	 * of every pruned job's messageId and of app webhooks, kept for
	 * replay_days, far longer than the job: a signed body re-posted after
	 * the prune is still a duplicate. Filled from what is here. */
	{"CREATE TABLE replay_guard ("
	"  fp BLOB PRIMARY KEY,"
	"  at INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE INDEX replay_guard_at ON replay_guard(at);"
	"INSERT OR IGNORE INTO replay_guard (fp, at) SELECT mb_fp('job:' || message_id), created_at FROM jobs;"
	"INSERT OR IGNORE INTO replay_guard (fp, at) SELECT mb_fp('app:' || webhook_id), received_at FROM webhook_seen;",
	    NULL },
	/* 9: keys made on first start and kept with the data they protect
	 * (a backup of the store holds them): the reply/bounce address HMAC */
	{"CREATE TABLE secrets ("
	"  name TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL);",
	    NULL },
	/* 10: the inbound spool: a message read from a mailbox, kept until
	 * the core has handled it (posting happens off the IMAP threads) */
	{"CREATE TABLE inbound_spool ("
	"  id INTEGER PRIMARY KEY,"
	"  location_id TEXT NOT NULL,"
	"  raw BLOB NOT NULL,"
	"  received_at INTEGER NOT NULL,"
	"  next_at INTEGER NOT NULL,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  claimed INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX inbound_spool_due ON inbound_spool(claimed, next_at);",
	    NULL },
	/* 11: events name their location, for the status page's recent events */
	{"ALTER TABLE events ADD COLUMN location_id TEXT;"
	"UPDATE events SET location_id = (SELECT location_id FROM jobs WHERE jobs.message_id = events.message_id);"
	"CREATE INDEX events_location ON events(location_id, id);",
	    NULL },
	/* 12: unsubscribe requests, kept until the contact's Email DND is set */
	{"CREATE TABLE unsubscribes ("
	"  id INTEGER PRIMARY KEY,"
	"  location_id TEXT NOT NULL,"
	"  contact_id TEXT NOT NULL,"
	"  message_id TEXT,"
	"  via TEXT,"
	"  created_at INTEGER NOT NULL,"
	"  next_at INTEGER NOT NULL,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  done_at INTEGER,"
	"  error TEXT,"
	"  UNIQUE(location_id, contact_id));"
	"CREATE INDEX unsubscribes_due ON unsubscribes(done_at, next_at);",
	    NULL },
	/* 13: the engagement outbox: HighLevel's v3 event counters are merged,
	 * so each (message, event, who) is reported once (fsm/engage.h) */
	{"CREATE TABLE engagement ("
	"  message_id TEXT NOT NULL,"
	"  event TEXT NOT NULL,"
	"  who TEXT NOT NULL,"
	"  location_id TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL,"
	"  next_at INTEGER NOT NULL,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  done_at INTEGER,"
	"  error TEXT,"
	"  PRIMARY KEY (message_id, event, who));"
	"CREATE INDEX engagement_due ON engagement(done_at, next_at);"
	/* dnd_on_hard_bounce: DND only if this is still the contact's email */
	"ALTER TABLE unsubscribes ADD COLUMN if_email TEXT;",
	    STORE_PG_SCHEMA_13 },
	/* 14: instances sharing the store (store_instances.h): their
	 * heartbeats, named leases, and who holds each claimed row */
	{"CREATE TABLE instances ("
	"  name TEXT PRIMARY KEY,"
	"  started_at INTEGER NOT NULL,"
	"  heartbeat_at INTEGER NOT NULL,"
	"  detail TEXT);"
	"CREATE TABLE leases ("
	"  name TEXT PRIMARY KEY,"
	"  owner TEXT NOT NULL,"
	"  until INTEGER NOT NULL);"
	"ALTER TABLE jobs ADD COLUMN owner TEXT;"
	"ALTER TABLE inbound_spool ADD COLUMN owner TEXT;",
	"CREATE TABLE instances ("
	"  name TEXT PRIMARY KEY,"
	"  started_at BIGINT NOT NULL,"
	"  heartbeat_at BIGINT NOT NULL,"
	"  detail TEXT);"
	"CREATE TABLE leases ("
	"  name TEXT PRIMARY KEY,"
	"  owner TEXT NOT NULL,"
	"  until BIGINT NOT NULL);"
	"ALTER TABLE jobs ADD COLUMN owner TEXT;"
	"ALTER TABLE inbound_spool ADD COLUMN owner TEXT;"
	/* HighLevel's per-location window, shared by the instances: a log
	 * of request times, read and written under a per-key lock, on the
	 * server's clock (store_instances.h, store_rate_take) */
	"CREATE TABLE rate_log ("
	"  key TEXT NOT NULL,"
	"  at BIGINT NOT NULL);"
	"CREATE INDEX rate_log_key ON rate_log(key, at);"
	"CREATE FUNCTION mb_rate_take(k text, lim bigint, window_ms bigint) RETURNS bigint LANGUAGE plpgsql AS $$ "
	"DECLARE now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint; n bigint; oldest bigint; "
	"BEGIN "
	"  PERFORM pg_advisory_xact_lock(hashtext('mb_rate:' || k)); "
	"  DELETE FROM rate_log WHERE key = k AND at <= now_ms - window_ms; "
	"  SELECT count(*), min(at) INTO n, oldest FROM rate_log WHERE key = k; "
	"  IF n < lim THEN INSERT INTO rate_log (key, at) VALUES (k, now_ms); RETURN 0; END IF; "
	"  RETURN oldest + window_ms - now_ms + 1; "
	"END $$;" },
	/* 15: the claims' order (due time, then id) read from the index. In
	 * SQLite every index already ends with the rowid (the id); PostgreSQL
	 * sorted all due rows for each claim, 1.5 ms a job in a burst
	 * (auto_explain in bench/outbound.py --pg-options) */
	{"",
	"CREATE INDEX jobs_due_id ON jobs(state, next_at, id);"
	"DROP INDEX jobs_due;"
	"CREATE INDEX jobs_report_id ON jobs(report_state, report_next_at, id);"
	"DROP INDEX jobs_report;"
	"CREATE INDEX inbound_spool_due_id ON inbound_spool(claimed, next_at, id);"
	"DROP INDEX inbound_spool_due;"
	"CREATE INDEX unsubscribes_due_id ON unsubscribes(done_at, next_at, id);"
	"DROP INDEX unsubscribes_due;" },
	/* 16: the shared window leases a batch of slots at once (ghl.h,
	 * ghl_share_fn): one round trip for several HighLevel calls. Each
	 * granted slot is logged at the lease's end, the latest moment it may
	 * be spent, so a window counted from any log entry covers the real
	 * call. mb_rate_take stays for an older instance still running. */
	{"",
	"CREATE FUNCTION mb_rate_lease(k text, lim bigint, window_ms bigint, lease_ms bigint, want bigint, "
	"  OUT granted bigint, OUT wait_ms bigint) LANGUAGE plpgsql AS $$ "
	"DECLARE now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint; n bigint; oldest bigint; "
	"BEGIN "
	"  PERFORM pg_advisory_xact_lock(hashtext('mb_rate:' || k)); "
	"  DELETE FROM rate_log WHERE key = k AND at <= now_ms - window_ms; "
	"  SELECT count(*), min(at) INTO n, oldest FROM rate_log WHERE key = k; "
	"  granted := least(greatest(want, 1), lim - n); "
	"  IF granted > 0 THEN "
	"    INSERT INTO rate_log (key, at) SELECT k, now_ms + lease_ms FROM generate_series(1, granted); "
	"    wait_ms := 0; "
	"  ELSE "
	"    granted := 0; wait_ms := greatest(oldest + window_ms - now_ms + 1, 1); "
	"  END IF; "
	"END $$;" },
	/* 17: indexes that hold only what is looked for. A pending report,
	 * an engagement event not yet told, a message with an altId: every
	 * lookup names that in its WHERE, and the rest (all finished work,
	 * every outbound message without an altId) was written into these
	 * indexes for nothing, a page or more of the WAL per message each
	 * (bench/outbound.py, WAL frames by table). events_msg served no
	 * query at all: `trace` matches details too, and scans */
	{"CREATE INDEX jobs_report_pending ON jobs(report_next_at) WHERE report_state = 'pending';"
	"DROP INDEX jobs_report;"
	"CREATE INDEX engagement_pending ON engagement(next_at) WHERE done_at IS NULL;"
	"DROP INDEX engagement_due;"
	"CREATE INDEX message_map_alt_set ON message_map(location_id, alt_id) WHERE alt_id IS NOT NULL;"
	"DROP INDEX message_map_alt;"
	"DROP INDEX events_msg;",
	"CREATE INDEX jobs_report_pending ON jobs(report_next_at, id) WHERE report_state = 'pending';"
	"DROP INDEX jobs_report_id;"
	"CREATE INDEX engagement_pending ON engagement(next_at) WHERE done_at IS NULL;"
	"DROP INDEX engagement_due;"
	"CREATE INDEX message_map_alt_set ON message_map(location_id, alt_id) WHERE alt_id IS NOT NULL;"
	"DROP INDEX message_map_alt;"
	"DROP INDEX events_msg;" },
	/* 18: SQLite packs payloads (store_pack.c), and reads them in SQL
	 * through mb_payload(), a function of its connection. PostgreSQL
	 * compresses large values itself (TOAST) and keeps them as text: its
	 * mb_payload is the value as it is. */
	{"",
	"CREATE FUNCTION mb_payload(p text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT p';" },
	/* 19: PostgreSQL compresses the payloads and the spooled mail with
	 * lz4, not its default pglz: the payload's INSERT took 0.40 ms a
	 * message, pglz_compress 5 % of the server's CPU; with lz4 0.18-0.22
	 * ms, for 0.7 KiB more WAL a message (pg_stat_statements in
	 * bench/outbound.py, two runs each). Values already stored keep
	 * theirs. A server built without lz4 (Debian's has it) keeps pglz:
	 * the ALTER is dynamic, so that its error is caught, not the DO's */
	{"",
	"DO $$ BEGIN "
	"  EXECUTE 'ALTER TABLE job_payload ALTER COLUMN payload SET COMPRESSION lz4'; "
	"  EXECUTE 'ALTER TABLE inbound_spool ALTER COLUMN raw SET COMPRESSION lz4'; "
	"EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN "
	"  RAISE NOTICE 'mailbridge: this server has no lz4; payloads stay compressed with pglz'; "
	"END $$;" },
	/* 20: the shared window as one row a key, its slots' times in an
	 * array, locked with the row: a lease is one read and one update (HOT:
	 * the key does not change) where rate_log took an advisory lock, a
	 * DELETE, a count and an INSERT of a row and an index entry a slot.
	 * pgbench, 2 clients, 100 keys, always granting, alternated: 1,396-
	 * 1,628 leases a second with rate_log, 2,469-3,387 with this.
	 * Unchanged rows are not written. mb_rate_take (instances older than
	 * schema 16) leases from the same rows, so both still share one
	 * window. */
	{"",
	"CREATE TABLE rate_window ("
	"  key TEXT PRIMARY KEY,"
	"  ats BIGINT[] NOT NULL);"
	"INSERT INTO rate_window (key, ats) SELECT key, array_agg(at ORDER BY at) FROM rate_log GROUP BY key;"
	"CREATE OR REPLACE FUNCTION mb_rate_lease(k text, lim bigint, window_ms bigint, lease_ms bigint, want bigint, "
	"  OUT granted bigint, OUT wait_ms bigint) LANGUAGE plpgsql AS $$ "
	"DECLARE now_ms bigint := (extract(epoch FROM clock_timestamp()) * 1000)::bigint; a bigint[]; live bigint[]; "
	"  n int; "
	"BEGIN "
	"  SELECT ats INTO a FROM rate_window WHERE key = k FOR UPDATE; "
	"  IF NOT FOUND THEN "
	"    INSERT INTO rate_window (key, ats) VALUES (k, '{}') ON CONFLICT (key) DO NOTHING; "
	"    SELECT ats INTO a FROM rate_window WHERE key = k FOR UPDATE; "
	"  END IF; "
	"  live := ARRAY(SELECT x FROM unnest(a) AS x WHERE x > now_ms - window_ms ORDER BY x); "
	"  n := coalesce(array_length(live, 1), 0); "
	"  granted := least(greatest(want, 1), lim - n); "
	"  IF granted > 0 THEN "
	"    live := live || array_fill(now_ms + lease_ms, ARRAY[granted::int]); "
	"    wait_ms := 0; "
	"  ELSE "
	"    granted := 0; wait_ms := greatest(live[1] + window_ms - now_ms + 1, 1); "
	"  END IF; "
	"  IF granted > 0 OR n <> coalesce(array_length(a, 1), 0) THEN "
	"    UPDATE rate_window SET ats = live WHERE key = k; "
	"  END IF; "
	"END $$;"
	"CREATE OR REPLACE FUNCTION mb_rate_take(k text, lim bigint, window_ms bigint) RETURNS bigint "
	"  LANGUAGE sql AS $$ SELECT CASE WHEN granted > 0 THEN 0 ELSE wait_ms END "
	"  FROM mb_rate_lease(k, lim, window_ms, 0, 1) $$;"
	"DROP TABLE rate_log;" },
};
const int store_schema_version = (int)(sizeof(store_migrations) / sizeof(store_migrations[0]));

void
store_fp_text(const void *text, size_t len, unsigned char fp[STORE_FP_LEN])
{
	unsigned char digest[32];

	gnutls_hash_fast(GNUTLS_DIG_SHA256, text, len, digest);
	memcpy(fp, digest, STORE_FP_LEN);
}

void
store_fp(const char *kind, const char *key, unsigned char fp[STORE_FP_LEN])
{
	char *text = xasprintf("%s:%s", kind, key);

	store_fp_text(text, strlen(text), fp);
	free(text);
}

struct store *
store_open_conf(const struct store_conf *c, bool readonly, char **error_r)
{
	struct store *st;

	if (!c->backend || strcmp(c->backend, "sqlite") == 0) {
		st = store_sqlite_open(c->data_dir, readonly, c->cache_kib > 0 ? c->cache_kib : 512, error_r);
	} else if (strcmp(c->backend, "postgresql") == 0) {
		if (!c->dsn || !*c->dsn) {
			*error_r = xstrdup("[store] backend = postgresql needs dsn or dsn_file");
			return NULL;
		}
		st = store_pg_open(c->dsn, c->pool > 0 ? c->pool : 4, readonly, error_r);
	} else {
		*error_r = xasprintf("[store] backend \"%s\": sqlite or postgresql", c->backend);
		return NULL;
	}
	if (st) {
		st->instance = xstrdup("local");
		st->lease_ms = 30000;
		if (st->ops->pipelined && !readonly)
			st->adds = store_job_adds_new();
	}
	return st;
}

struct store *
store_open(const char *data_dir, char **error_r)
{
	struct store_conf c = { .backend = "sqlite", .data_dir = data_dir };
	return store_open_conf(&c, false, error_r);
}

struct store *
store_open_readonly(const char *data_dir, char **error_r)
{
	struct store_conf c = { .backend = "sqlite", .data_dir = data_dir };
	return store_open_conf(&c, true, error_r);
}

const char *
store_backend_name(const struct store *st)
{
	return st->ops->name;
}

void
store_close(struct store *st)
{
	if (!st)
		return;
	free(st->instance);
	store_job_adds_free(st->adds);
	st->ops->close(st);
}

int
store_ping(struct store *st)
{
	return store_exec(st, "SELECT 1", "") >= 0 ? 1 : -1;
}

void
store_memory(struct store *st, int64_t *heap_r, int64_t *file_r)
{
	st->ops->memory(st, heap_r, file_r);
}

int
store_backup(struct store *st, const char *path, int64_t *bytes_r, char **error_r)
{
	return st->ops->backup(st, path, bytes_r, error_r);
}

int
store_exec(struct store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = st->ops->exec(st, false, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
store_exec_durable(struct store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = st->ops->exec(st, true, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
store_tx_begin(struct store *st, const char *what)
{
	return st->ops->tx_begin(st, what);
}

int
store_tx_step_v(struct store *st, bool extra, const char *sql, const char *fmt, va_list ap)
{
	return st->ops->tx_step(st, extra, 0, NULL, NULL, sql, fmt, ap);
}

int
store_tx_step(struct store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_tx_step_v(st, false, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* A step whose failure must not undo the change it goes with: a trace
 * event, or a threading record (a send must still be marked, a post
 * still recorded, or it would be repeated). */
int
store_tx_extra(struct store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_tx_step_v(st, true, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
store_tx_trace(struct store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = st->ops->tx_trace ? st->ops->tx_trace(st, NULL, NULL, sql, fmt, ap) : store_tx_step_v(st, true, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
store_tx_later_v(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap)
{
	if (st->ops->tx_trace)
		return st->ops->tx_trace(st, fn, arg, sql, fmt, ap);
	return st->ops->tx_step(st, false, INT_MAX, fn, arg, sql, fmt, ap) < 0 ? -1 : 0;
}

int
store_tx_later(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_tx_later_v(st, fn, arg, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
store_tx_row(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = st->ops->tx_step(st, false, 1, fn, arg, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
store_tx_row_v(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap)
{
	return st->ops->tx_step(st, false, 1, fn, arg, sql, fmt, ap);
}

int
store_tx_end(struct store *st, const char *what, bool durable)
{
	return st->ops->tx_end(st, what, durable);
}

void
store_tx_fail(struct store *st)
{
	st->ops->tx_fail(st);
}

int
store_query_row_v(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap)
{
	return st->ops->query(st, 1, fn, arg, sql, fmt, ap);
}

int
store_query_row(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_query_row_v(st, fn, arg, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
store_query_rows(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = st->ops->query(st, INT_MAX, fn, arg, sql, fmt, ap);
	va_end(ap);
	return r;
}

bool
store_col_null(const struct store_row *r, int i)
{
	return r->ops->col_null(r, i);
}

int64_t
store_col_int(const struct store_row *r, int i)
{
	return r->ops->col_int(r, i);
}

const char *
store_col_str(const struct store_row *r, int i)
{
	return r->ops->col_str(r, i);
}

const void *
store_col_blob(const struct store_row *r, int i, size_t *len_r)
{
	return r->ops->col_blob(r, i, len_r);
}

char *
store_col_text(const struct store_row *r, int i)
{
	const char *t = store_col_str(r, i);
	return t ? xstrdup(t) : NULL;
}

void
store_row_int64(const struct store_row *r, void *arg)
{
	*(int64_t *)arg = store_col_null(r, 0) ? -1 : store_col_int(r, 0);
}

void
store_row_text(const struct store_row *r, void *arg)
{
	*(char **)arg = store_col_text(r, 0);
}

void
store_row_none(const struct store_row *r, void *arg)
{
	(void)r;
	(void)arg;
}
