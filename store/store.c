#include "store.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORE_BUSY_TIMEOUT_MS 5000

#define STORE_STMT_CACHE 128

struct store {
	sqlite3 *db;
	pthread_mutex_t lock;
	bool have_token_key;
	unsigned char token_key[32];
	/* prepared statements keyed by their SQL text's address: every SQL
	 * string here is a literal, so the pointer names the statement, and
	 * parsing SQL once instead of per call is most of our store CPU */
	struct { const char *sql; sqlite3_stmt *stmt; } cache[STORE_STMT_CACHE];

	/* Group commit for durable writes (store_sync_upto): every commit is
	 * NORMAL (WAL appended, not synced); a write that acknowledges
	 * something waits until an fdatasync of the WAL file covers it. One
	 * fsync then covers every commit made while the previous one ran,
	 * instead of each FULL commit holding `lock` through its own fsync. */
	char *wal_path;
	int wal_fd;                /* ours, opened lazily; -1 until then */
	atomic_uint_fast64_t committed;   /* commits so far */
	pthread_mutex_t sync_lock;
	pthread_cond_t sync_cond;
	uint64_t synced;           /* commits known to be on disk */
	bool syncing;              /* a thread is in fdatasync() */
	bool tx_failed;            /* a step of the open store_tx_begin failed */
};

/* Each entry moves the schema from version i to i+1. Never edit a shipped
 * entry; append a new one. */
static const char *const store_migrations[] = {
	/* 1: the initial schema */
	"CREATE TABLE jobs ("
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
	/* 2: failed inbound messages keep their bytes for `inbound retry` */
	"ALTER TABLE inbound_seen ADD COLUMN raw BLOB;"
	"ALTER TABLE inbound_seen ADD COLUMN summary TEXT;"
	"ALTER TABLE inbound_seen ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;",
	/* 3: watcher state for `accounts`, and locations whose app was uninstalled */
	"CREATE TABLE watchers ("
	"  location_id TEXT PRIMARY KEY,"
	"  state TEXT NOT NULL,"
	"  detail TEXT,"
	"  updated_at INTEGER NOT NULL);"
	"CREATE TABLE uninstalled ("
	"  location_id TEXT PRIMARY KEY,"
	"  at INTEGER NOT NULL);",
	/* 4: plugins' own key-value pairs (e.g. gateway id -> messageId) */
	"CREATE TABLE plugin_kv ("
	"  plugin TEXT NOT NULL,"
	"  key TEXT NOT NULL,"
	"  value TEXT NOT NULL,"
	"  updated_at INTEGER NOT NULL,"
	"  PRIMARY KEY (plugin, key));",
	/* 5: payloads in their own table, so that the several state updates
	 * of a job rewrite a small row rather than its ~10 KB payload each
	 * time; emailMessageId beside the job for the status reporter */
	"CREATE TABLE job_payload ("
	"  job_id INTEGER PRIMARY KEY REFERENCES jobs(id) ON DELETE CASCADE,"
	"  payload TEXT NOT NULL);"
	"INSERT INTO job_payload (job_id, payload) SELECT id, payload FROM jobs;"
	"ALTER TABLE jobs ADD COLUMN email_message_id TEXT;"
	"UPDATE jobs SET email_message_id = CASE WHEN json_valid(payload) AND "
	"  json_type(payload, '$.emailMessageId') = 'text' THEN json_extract(payload, '$.emailMessageId') END;"
	"ALTER TABLE jobs DROP COLUMN payload;",
	/* 6: after a UIDVALIDITY change, the UIDs up to rescan_upto are read
	 * again only if they arrived within keep_days (imap_session.c) */
	"ALTER TABLE imap_checkpoints ADD COLUMN rescan_upto INTEGER NOT NULL DEFAULT 0;",
	/* 7: an attempt ended after our final dot with no reply: the relay
	 * may hold the message (outbound.c checks its log before resending) */
	"ALTER TABLE jobs ADD COLUMN uncertain INTEGER NOT NULL DEFAULT 0;",
	/* 8: replay guard. A compact fingerprint (mb_fp: 12 bytes of SHA-256)
	 * of every pruned job's messageId and of app webhooks, kept for
	 * replay_days, far longer than the job: a signed body re-posted after
	 * the prune is still a duplicate. Filled from what is here. */
	"CREATE TABLE replay_guard ("
	"  fp BLOB PRIMARY KEY,"
	"  at INTEGER NOT NULL) WITHOUT ROWID;"
	"CREATE INDEX replay_guard_at ON replay_guard(at);"
	"INSERT OR IGNORE INTO replay_guard (fp, at) SELECT mb_fp('job:' || message_id), created_at FROM jobs;"
	"INSERT OR IGNORE INTO replay_guard (fp, at) SELECT mb_fp('app:' || webhook_id), received_at FROM webhook_seen;",
	/* 9: keys made on first start and kept with the data they protect
	 * (a backup of the store holds them): the reply/bounce address HMAC */
	"CREATE TABLE secrets ("
	"  name TEXT PRIMARY KEY,"
	"  value TEXT NOT NULL,"
	"  created_at INTEGER NOT NULL);",
};
#define STORE_SCHEMA_VERSION ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

/* mb_fp(text): the replay guard's fingerprint, 12 bytes of SHA-256: a
 * false "seen before" needs a collision among some 2^48 ids. */
#define STORE_FP_LEN 12

static void
store_sql_fp(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	unsigned char digest[32];
	const unsigned char *in = sqlite3_value_text(argv[0]);

	(void)argc;
	if (!in) {
		sqlite3_result_null(ctx);
		return;
	}
	gnutls_hash_fast(GNUTLS_DIG_SHA256, in, (size_t)sqlite3_value_bytes(argv[0]), digest);
	sqlite3_result_blob(ctx, digest, STORE_FP_LEN, SQLITE_TRANSIENT);
}

static void
store_log_error(struct store *st, const char *what)
{
	log_error("store: %s: %s", what, sqlite3_errmsg(st->db));
}

/* A ready statement for sql (a string literal). Caller holds the lock and
 * hands it back with store_stmt_done, never sqlite3_finalize. */
static sqlite3_stmt *
store_stmt(struct store *st, const char *sql)
{
	sqlite3_stmt *stmt;
	int i;

	for (i = 0; i < STORE_STMT_CACHE && st->cache[i].sql; i++)
		if (st->cache[i].sql == sql)
			return st->cache[i].stmt;
	if (sqlite3_prepare_v2(st->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
		store_log_error(st, "prepare");
		return NULL;
	}
	if (i < STORE_STMT_CACHE) {
		st->cache[i].sql = sql;
		st->cache[i].stmt = stmt;
	}
	return stmt;
}

static void
store_stmt_done(struct store *st, sqlite3_stmt *stmt)
{
	for (int i = 0; i < STORE_STMT_CACHE && st->cache[i].sql; i++)
		if (st->cache[i].stmt == stmt) {
			sqlite3_reset(stmt);
			sqlite3_clear_bindings(stmt);
			return;
		}
	sqlite3_finalize(stmt);    /* the cache was full: it was prepared for this call only */
}

/* Prepares sql and binds args described by fmt: 'i' int64_t, 's' const
 * char * (NULL binds NULL). Caller holds the lock. NULL on error (logged).
 * Strings are bound without a copy: every caller steps and resets the
 * statement (store_stmt_done) before its arguments go away. */
static sqlite3_stmt *
store_prepare(struct store *st, const char *sql, const char *fmt, va_list ap)
{
	sqlite3_stmt *stmt = store_stmt(st, sql);
	int i = 1;

	if (!stmt)
		return NULL;
	for (const char *f = fmt; *f; f++, i++) {
		if (*f == 'i') {
			sqlite3_bind_int64(stmt, i, va_arg(ap, int64_t));
		} else {
			const char *s = va_arg(ap, const char *);
			if (s)
				sqlite3_bind_text(stmt, i, s, -1, SQLITE_STATIC);
			else
				sqlite3_bind_null(stmt, i);
		}
	}
	return stmt;
}

/* fdatasync()s the WAL file, reopening it if SQLite replaced it. */
static int
store_wal_fsync(struct store *st)
{
	struct stat a, b;

	if (st->wal_fd >= 0 && (fstat(st->wal_fd, &a) < 0 || stat(st->wal_path, &b) < 0 ||
	    a.st_ino != b.st_ino || a.st_dev != b.st_dev)) {
		close(st->wal_fd);
		st->wal_fd = -1;
	}
	if (st->wal_fd < 0 && (st->wal_fd = open(st->wal_path, O_RDONLY | O_CLOEXEC)) < 0) {
		log_error("store: open %s: %s", st->wal_path, strerror(errno));
		return -1;
	}
	if (fdatasync(st->wal_fd) < 0) {
		log_error("store: fdatasync %s: %s", st->wal_path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Returns once commit number seq is on disk (0), or -1 if a sync failed.
 * The first waiter syncs for everyone committed so far; the others wait
 * for it, and only sync again if their commit came after it started. */
static int
store_sync_upto(struct store *st, uint64_t seq)
{
	int ret = 0;

	pthread_mutex_lock(&st->sync_lock);
	while (st->synced < seq) {
		uint64_t target;
		int r;
		if (st->syncing) {
			pthread_cond_wait(&st->sync_cond, &st->sync_lock);
			continue;
		}
		st->syncing = true;
		target = atomic_load(&st->committed);
		pthread_mutex_unlock(&st->sync_lock);
		r = store_wal_fsync(st);
		pthread_mutex_lock(&st->sync_lock);
		st->syncing = false;
		if (r == 0 && target > st->synced)
			st->synced = target;
		pthread_cond_broadcast(&st->sync_cond);
		if (r < 0) {
			ret = -1;
			break;
		}
	}
	pthread_mutex_unlock(&st->sync_lock);
	return ret;
}

/* Ends a write begun under st->lock. durable: returns once the commit is
 * on disk (0), or -1 if syncing failed; otherwise just unlocks (0). */
static int
store_unlock_write(struct store *st, bool durable)
{
	uint64_t seq = atomic_fetch_add(&st->committed, 1) + 1;

	pthread_mutex_unlock(&st->lock);
	return durable ? store_sync_upto(st, seq) : 0;
}

/* Prepares, binds and steps one statement (caller holds the lock). Returns
 * sqlite3_changes(), or -1 with *rc_r the step's error (SQLITE_OK when
 * preparing failed, already logged). */
static int
store_step_v(struct store *st, const char *sql, const char *fmt, va_list ap, int *rc_r)
{
	sqlite3_stmt *stmt = store_prepare(st, sql, fmt, ap);
	int changes = -1;

	*rc_r = SQLITE_OK;
	if (stmt) {
		*rc_r = sqlite3_step(stmt);
		if (*rc_r == SQLITE_DONE || *rc_r == SQLITE_ROW)
			changes = sqlite3_changes(st->db);
		store_stmt_done(st, stmt);
	}
	return changes;
}

/* Runs a statement that returns no rows. Returns sqlite3_changes() or -1.
 * durable: the commit is on disk before we return (fsynced WAL, as
 * synchronous=FULL would, but grouped: store_sync_upto); otherwise WAL
 * with synchronous=NORMAL: safe against a process crash (kill -9 loses
 * nothing committed), but the last commits may roll back on power loss.
 * Only writes that acknowledge something to the outside world (a webhook,
 * a single-use token, an inbound post) need to be durable; the rest would
 * at worst repeat work after a power cut, never lose a job: a WAL sync
 * also covers every earlier commit. */
static int
store_exec_v(struct store *st, bool durable, const char *sql, const char *fmt, va_list ap)
{
	int rc, changes;

	pthread_mutex_lock(&st->lock);
	changes = store_step_v(st, sql, fmt, ap, &rc);
	if (changes < 0 && rc == SQLITE_CONSTRAINT)
		changes = 0;
	else if (changes < 0 && rc != SQLITE_OK)
		store_log_error(st, "exec");
	if (store_unlock_write(st, durable && changes >= 0) < 0)
		return -1;
	return changes;
}

static int
store_exec(struct store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_exec_v(st, false, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* BEGIN, COMMIT or ROLLBACK from the statement cache (sqlite3_exec would
 * parse them on every call: 2 % of the daemon's CPU under load). */
static int
store_tx_run(struct store *st, const char *sql)
{
	sqlite3_stmt *stmt = store_stmt(st, sql);
	int r;

	if (!stmt)
		return SQLITE_ERROR;
	r = sqlite3_step(stmt);
	store_stmt_done(st, stmt);
	return r == SQLITE_DONE ? SQLITE_OK : r;
}

/* Several writes in one commit: fewer WAL frames (a page changed twice is
 * written once) and no trace event without the state change it tells of.
 * store_tx_begin takes the lock; store_tx_step runs one statement inside
 * (sqlite3_changes(), or -1 logged); setting tx_failed, or a failed step,
 * makes store_tx_end roll back; it unlocks and returns 0 or -1.
 * store_tx_extra is a step that may fail alone. */
static int
store_tx_begin(struct store *st, const char *what)
{
	pthread_mutex_lock(&st->lock);
	st->tx_failed = false;
	if (store_tx_run(st, "BEGIN IMMEDIATE") != SQLITE_OK) {
		store_log_error(st, what);
		pthread_mutex_unlock(&st->lock);
		return -1;
	}
	return 0;
}

static int
store_tx_step_v(struct store *st, bool extra, const char *sql, const char *fmt, va_list ap)
{
	int rc, changes;

	if (st->tx_failed)
		return -1;
	changes = store_step_v(st, sql, fmt, ap, &rc);
	if (changes < 0) {
		store_log_error(st, "write");
		/* a failed statement is undone alone while the transaction
		 * stays open (a constraint); then an extra may be dropped */
		if (!extra || sqlite3_get_autocommit(st->db))
			st->tx_failed = true;
	}
	return changes;
}

static int
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
static int
store_tx_extra(struct store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_tx_step_v(st, true, sql, fmt, ap);
	va_end(ap);
	return r;
}

static int
store_tx_end(struct store *st, const char *what, bool durable)
{
	bool ok = !st->tx_failed;

	if (ok && store_tx_run(st, "COMMIT") != SQLITE_OK) {
		store_log_error(st, what);   /* before ROLLBACK clears the message */
		ok = false;
	}
	if (!ok)
		store_tx_run(st, "ROLLBACK");
	if (store_unlock_write(st, durable && ok) < 0 || !ok)
		return -1;
	return 0;
}

#define EVENT_INSERT "INSERT INTO events (at, message_id, kind, detail) VALUES (?1,?2,?3,?4)"

static int
store_exec_durable(struct store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_exec_v(st, true, sql, fmt, ap);
	va_end(ap);
	return r;
}

static char *
col_text(sqlite3_stmt *stmt, int i)
{
	const unsigned char *t = sqlite3_column_text(stmt, i);
	return t ? xstrdup((const char *)t) : NULL;
}

/* Runs a query binding args by fmt (as store_exec) and hands its first row
 * to fn. Returns 1 with a row, 0 without, -1 on error (logged). */
static int
store_query_row_v(struct store *st, void (*fn)(sqlite3_stmt *, void *), void *arg, const char *sql,
    const char *fmt, va_list ap)
{
	sqlite3_stmt *stmt;
	int r, ret = -1;

	pthread_mutex_lock(&st->lock);
	stmt = store_prepare(st, sql, fmt, ap);
	if (stmt) {
		r = sqlite3_step(stmt);
		if (r == SQLITE_ROW) {
			fn(stmt, arg);
			ret = 1;
		} else if (r == SQLITE_DONE) {
			ret = 0;
		} else {
			store_log_error(st, "query");
		}
		store_stmt_done(st, stmt);
	}
	pthread_mutex_unlock(&st->lock);
	return ret;
}

static int
store_query_row(struct store *st, void (*fn)(sqlite3_stmt *, void *), void *arg, const char *sql,
    const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_query_row_v(st, fn, arg, sql, fmt, ap);
	va_end(ap);
	return r;
}

/* Row readers for store_query_row. */
static void
row_int64(sqlite3_stmt *stmt, void *arg)
{
	*(int64_t *)arg = sqlite3_column_type(stmt, 0) == SQLITE_NULL ? -1 : sqlite3_column_int64(stmt, 0);
}

static void
row_text(sqlite3_stmt *stmt, void *arg)
{
	*(char **)arg = col_text(stmt, 0);
}

static void
row_none(sqlite3_stmt *stmt, void *arg)
{
}

struct store *
store_open(const char *data_dir, char **error_r)
{
	struct store *st = xcalloc(1, sizeof(*st));
	char *path;
	mode_t old;
	int version = 0;
	sqlite3_stmt *stmt;

	if (mkdir(data_dir, 0700) < 0 && errno != EEXIST) {
		*error_r = xasprintf("cannot create data_dir %s: %s", data_dir, strerror(errno));
		free(st);
		return NULL;
	}
	path = xasprintf("%s/mailbridge.db", data_dir);
	old = umask(077);           /* database, -wal and -shm files: 0600 */
	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	    SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		*error_r = xasprintf("cannot open %s: %s", path, sqlite3_errmsg(st->db));
		umask(old);
		sqlite3_close(st->db);
		free(path);
		free(st);
		return NULL;
	}
	chmod(path, 0600);
	st->wal_path = xasprintf("%s-wal", path);
	st->wal_fd = -1;
	free(path);
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->sync_lock, NULL);
	pthread_cond_init(&st->sync_cond, NULL);
	sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
	/* WAL for concurrent readers (CLI beside the daemon); NORMAL, with the
	 * writes that acknowledge something synced by store_sync_upto. 1 KiB
	 * pages (new databases only): most commits change a few small rows and
	 * index entries, and each changed page is a WAL frame; 4 KiB pages
	 * wrote 165 KiB per message to disk in bench/outbound.py, 1 KiB 74. */
	if (sqlite3_create_function(st->db, "mb_fp", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, store_sql_fp,
	    NULL, NULL) != SQLITE_OK)
		goto fail;
	if (sqlite3_exec(st->db, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	    "PRAGMA foreign_keys=ON;", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	umask(old);
	old = (mode_t)-1;

	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &stmt, NULL) != SQLITE_OK)
		goto fail;
	if (sqlite3_step(stmt) == SQLITE_ROW)
		version = sqlite3_column_int(stmt, 0);
	sqlite3_finalize(stmt);
	if (version > STORE_SCHEMA_VERSION) {
		*error_r = xasprintf("database schema %d is newer than this mailbridge (%d)",
		    version, STORE_SCHEMA_VERSION);
		store_close(st);
		return NULL;
	}
	for (; version < STORE_SCHEMA_VERSION; version++) {
		char *sql = xasprintf("BEGIN; %s; PRAGMA user_version=%d; COMMIT;",
		    store_migrations[version], version + 1);
		char *msg = NULL;
		int r = sqlite3_exec(st->db, sql, NULL, NULL, &msg);
		free(sql);
		if (r != SQLITE_OK) {
			/* the message first: ROLLBACK clears it */
			*error_r = xasprintf("store: migrating to schema %d: %s", version + 1,
			    msg ? msg : sqlite3_errstr(r));
			sqlite3_free(msg);
			sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
			store_close(st);
			return NULL;
		}
		log_info("store: migrated schema to version %d", version + 1);
	}
	return st;
fail:
	if (old != (mode_t)-1)
		umask(old);
	*error_r = xasprintf("store: %s", sqlite3_errmsg(st->db));
	store_close(st);
	return NULL;
}

void
store_close(struct store *st)
{
	if (!st)
		return;
	for (int i = 0; i < STORE_STMT_CACHE && st->cache[i].sql; i++)
		sqlite3_finalize(st->cache[i].stmt);
	sqlite3_close(st->db);
	if (st->wal_fd >= 0)
		close(st->wal_fd);
	free(st->wal_path);
	pthread_mutex_destroy(&st->lock);
	pthread_mutex_destroy(&st->sync_lock);
	pthread_cond_destroy(&st->sync_cond);
	free(st);
}

int
store_ping(struct store *st)
{
	return store_exec(st, "SELECT 1", "") >= 0 ? 1 : -1;
}

void
store_job_free(struct job *job)
{
	if (!job)
		return;
	free(job->message_id);
	free(job->location_id);
	free(job->type);
	free(job->payload);
	free(job->email_message_id);
	free(job->last_error);
	free(job->rfc_message_id);
	free(job->report_error);
	free(job->rcpt_state);
	free(job);
}

/* no payload: store_job_payload() loads it when a job is worked on */
#define JOB_COLUMNS "id, message_id, location_id, type, email_message_id, state, attempts, next_at, " \
	"created_at, last_code, last_error, rfc_message_id, report_status, report_state, " \
	"report_attempts, report_error, rcpt_state, uncertain"

static struct job *
job_from_row(sqlite3_stmt *s)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->id = sqlite3_column_int64(s, 0);
	j->message_id = col_text(s, 1);
	j->location_id = col_text(s, 2);
	j->type = col_text(s, 3);
	j->email_message_id = col_text(s, 4);
	j->fsm.job = job_state_parse((const char *)sqlite3_column_text(s, 5));
	j->attempts = sqlite3_column_int(s, 6);
	j->next_at = sqlite3_column_int64(s, 7);
	j->created_at = sqlite3_column_int64(s, 8);
	j->last_code = sqlite3_column_int(s, 9);
	j->last_error = col_text(s, 10);
	j->rfc_message_id = col_text(s, 11);
	j->fsm.status = report_status_parse((const char *)sqlite3_column_text(s, 12));
	j->fsm.report = report_state_parse((const char *)sqlite3_column_text(s, 13));
	j->report_attempts = sqlite3_column_int(s, 14);
	j->report_error = col_text(s, 15);
	j->rcpt_state = col_text(s, 16);
	j->uncertain = sqlite3_column_int(s, 17) != 0;
	return j;
}

static void
row_job(sqlite3_stmt *stmt, void *arg)
{
	*(struct job **)arg = job_from_row(stmt);
}

/* Runs a query expected to return at most one job row. */
static int
store_job_query(struct store *st, struct job **job_r, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	*job_r = NULL;
	va_start(ap, fmt);
	r = store_query_row_v(st, row_job, job_r, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
store_job_add(struct store *st, const char *message_id, const char *location_id,
    const char *type, const char *email_message_id, const char *payload)
{
	int64_t now = now_ms();
	int r;

	if (store_tx_begin(st, "job add") < 0)
		return -1;
	/* a duplicate webhook is a success, stored once: its job is still
	 * here (UNIQUE message_id), or the prune left its fingerprint in the
	 * replay guard (kept replay_days). Only read here: the fingerprint is
	 * written when the job goes, in the prune's batch, not per webhook */
	r = store_tx_step(st, "INSERT INTO jobs (message_id, location_id, type, email_message_id, state, "
	    "next_at, created_at, updated_at) SELECT ?1, ?2, ?3, ?4, '" JOB_NAME_QUEUED "', ?5, ?5, ?5 "
	    "WHERE NOT EXISTS (SELECT 1 FROM replay_guard WHERE fp = mb_fp('job:' || ?1)) "
	    "ON CONFLICT(message_id) DO NOTHING", "ssssi", message_id, location_id, type, email_message_id, now);
	if (r == 1)
		store_tx_step(st, "INSERT INTO job_payload (job_id, payload) VALUES (?1, ?2)", "is",
		    sqlite3_last_insert_rowid(st->db), payload);
	/* the journey's first event rides in the same commit */
	store_tx_step(st, EVENT_INSERT, "isss", now, message_id, "webhook", r == 1 ? type : "duplicate (ignored)");
	/* durable before the webhook is acknowledged, duplicates included */
	if (store_tx_end(st, "job add", true) < 0)
		return -1;
	return r;
}

int
store_job_payload(struct store *st, struct job *job)
{
	if (job->payload)
		return 1;
	return store_query_row(st, row_text, &job->payload,
	    "SELECT payload FROM job_payload WHERE job_id=?1", "i", job->id);
}

int
store_job_claim(struct store *st, int64_t now, enum job_state from, enum job_state to, struct job **job_r)
{
	return store_job_query(st, job_r,
	    "UPDATE jobs SET state=?3, attempts=attempts+1, updated_at=?1 "
	    "WHERE id = (SELECT id FROM jobs WHERE state=?2 AND next_at<=?1 "
	    "ORDER BY next_at, id LIMIT 1) RETURNING " JOB_COLUMNS, "iss", now, job_state_name(from),
	    job_state_name(to));
}

int64_t
store_job_next_due(struct store *st, enum job_state waiting)
{
	int64_t at = -1;
	store_query_row(st, row_int64, &at, "SELECT MIN(next_at) FROM jobs WHERE state=?1", "s",
	    job_state_name(waiting));
	return at;
}

static void
row_fsm(sqlite3_stmt *s, void *arg)
{
	struct job_fsm *f = arg;
	f->job = job_state_parse((const char *)sqlite3_column_text(s, 0));
	f->report = report_state_parse((const char *)sqlite3_column_text(s, 1));
	f->status = report_status_parse((const char *)sqlite3_column_text(s, 2));
}

int
store_job_fsm(struct store *st, int64_t id, struct job_fsm *fsm_r)
{
	return store_query_row(st, row_fsm, fsm_r, "SELECT state, report_state, report_status FROM jobs WHERE id=?1",
	    "i", id);
}

/* The compare half of a compare-and-set on both states: ?1 the id, then
 * from's three names (report_status may be NULL). */
#define JOB_CAS_WHERE " WHERE id=?1 AND state=?2 AND report_state=?3 AND report_status IS ?4"
#define JOB_CAS_ARGS(from) job_state_name((from)->job), report_state_name((from)->report), \
	report_status_name((from)->status)
/* ?5 ?6 ?7: the states to write */
#define JOB_CAS_SET "state=?5, report_state=?6, report_status=?7"
#define JOB_CAS_TO(to) JOB_CAS_ARGS(to)

#define MSGMAP_UPSERT "INSERT INTO message_map (rfc_message_id, location_id, ghl_message_id, " \
	"email_message_id, alt_id, conversation_id, contact_id, refs, reply_token, created_at) " \
	"VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10) ON CONFLICT(rfc_message_id) DO UPDATE SET " \
	"ghl_message_id=COALESCE(excluded.ghl_message_id, ghl_message_id), " \
	"email_message_id=COALESCE(excluded.email_message_id, email_message_id), " \
	"alt_id=COALESCE(excluded.alt_id, alt_id), conversation_id=COALESCE(excluded.conversation_id, conversation_id), " \
	"contact_id=COALESCE(excluded.contact_id, contact_id)"
#define MSGMAP_ARGS(m) (m)->rfc_message_id, (m)->location_id, (m)->ghl_message_id, (m)->email_message_id, \
	(m)->alt_id, (m)->conversation_id, (m)->contact_id, (m)->references, (m)->reply_token, now_ms()

int
store_job_mark_sending(struct store *st, int64_t id, enum job_state from, enum job_state to, const struct msgmap *m)
{
	int r;

	if (store_tx_begin(st, "mark sending") < 0)
		return -1;
	r = store_tx_step(st, "UPDATE jobs SET state=?3, rfc_message_id=?4, updated_at=?5 WHERE id=?1 AND state=?2",
	    "isssi", id, job_state_name(from), job_state_name(to), m ? m->rfc_message_id : NULL, now_ms());
	/* the threading record only for a send that happens */
	if (r == 1 && m)
		store_tx_extra(st, MSGMAP_UPSERT, "sssssssssi", MSGMAP_ARGS(m));
	if (store_tx_end(st, "mark sending", false) < 0)
		return -1;
	return r;
}

int
store_job_finish(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    const struct job_attempt_rec *a)
{
	int64_t now = now_ms();
	int r;

	if (store_tx_begin(st, "job finish") < 0)
		return -1;
	r = store_tx_step(st, "UPDATE jobs SET " JOB_CAS_SET ", next_at=?8, last_code=?9, updated_at=?10, "
	    "last_error=IIF(?11, last_error, ?12), report_next_at=IIF(?13, ?10, report_next_at), "
	    "rcpt_state=COALESCE(?14, rcpt_state), uncertain=?15" JOB_CAS_WHERE,
	    "issssssiiiisisi", job->id, JOB_CAS_ARGS(from), JOB_CAS_TO(to), a->next_at, (int64_t)a->code, now,
	    (int64_t)a->keep_error, a->error, (int64_t)a->report_due, a->rcpt_state, (int64_t)a->uncertain);
	if (r == 1 && a->event)
		store_tx_extra(st, EVENT_INSERT, "isss", now, job->message_id, "send", a->event);
	if (store_tx_end(st, "job finish", false) < 0)
		return -1;
	return r;
}

int
store_job_move_all(struct store *st, enum job_state from, enum job_state to, bool uncertain, const char *error)
{
	return store_exec(st, "UPDATE jobs SET state=?2, uncertain=MAX(uncertain, ?3), "
	    "last_error=COALESCE(?4, last_error) WHERE state=?1", "ssis", job_state_name(from), job_state_name(to),
	    (int64_t)uncertain, error);
}

int
store_job_get(struct store *st, const char *message_id, struct job **job_r)
{
	return store_job_query(st, job_r, "SELECT " JOB_COLUMNS " FROM jobs WHERE message_id=?1",
	    "s", message_id);
}

int
store_job_list(struct store *st, int limit, void (*fn)(const struct job *, void *), void *arg)
{
	sqlite3_stmt *stmt;
	int n = 0, r;

	pthread_mutex_lock(&st->lock);
	if ((stmt = store_stmt(st, "SELECT " JOB_COLUMNS " FROM jobs ORDER BY id DESC LIMIT ?1")) == NULL) {
		store_log_error(st, "list");
		pthread_mutex_unlock(&st->lock);
		return -1;
	}
	sqlite3_bind_int(stmt, 1, limit);
	while ((r = sqlite3_step(stmt)) == SQLITE_ROW) {
		struct job *j = job_from_row(stmt);
		fn(j, arg);
		store_job_free(j);
		n++;
	}
	store_stmt_done(st, stmt);
	pthread_mutex_unlock(&st->lock);
	return r == SQLITE_DONE ? n : -1;
}

int
store_job_retry(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    int64_t next_at)
{
	/* a sent job's payload is pruned: it cannot go again */
	return store_exec(st, "UPDATE jobs SET " JOB_CAS_SET ", next_at=?8" JOB_CAS_WHERE
	    " AND id IN (SELECT job_id FROM job_payload)", "issssssi", job->id, JOB_CAS_ARGS(from),
	    JOB_CAS_TO(to), next_at);
}

int
store_job_drop(struct store *st, const struct job *job, const struct job_fsm *from)
{
	return store_exec(st, "DELETE FROM jobs" JOB_CAS_WHERE, "isss", job->id, JOB_CAS_ARGS(from));
}

int
store_job_count(struct store *st, enum job_state state)
{
	int64_t n = -1;
	store_query_row(st, row_int64, &n, "SELECT COUNT(*) FROM jobs WHERE state=?1", "s", job_state_name(state));
	return (int)n;
}

int
store_report_claim(struct store *st, int64_t now, int64_t lease_ms, struct job **job_r)
{
	return store_job_query(st, job_r,
	    "UPDATE jobs SET report_next_at=?2, report_attempts=report_attempts+1 "
	    "WHERE id = (SELECT id FROM jobs WHERE report_state='" REPORT_NAME_PENDING "' AND report_next_at<=?1 "
	    "ORDER BY report_next_at, id LIMIT 1) RETURNING " JOB_COLUMNS, "ii", now, now + lease_ms);
}

int
store_report_finish(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    int64_t next_at, const char *error, const char *posted)
{
	int r;

	if (store_tx_begin(st, "report finish") < 0)
		return -1;
	r = store_tx_step(st, "UPDATE jobs SET " JOB_CAS_SET ", report_next_at=?8, report_error=?9" JOB_CAS_WHERE,
	    "issssssis", job->id, JOB_CAS_ARGS(from), JOB_CAS_TO(to), next_at, error);
	if (r == 1 && posted)
		store_tx_extra(st, EVENT_INSERT, "isss", now_ms(), job->message_id, "status", posted);
	if (store_tx_end(st, "report finish", false) < 0)
		return -1;
	return r;
}

int
store_report_defer(struct store *st, int64_t id, int64_t next_at)
{
	return store_exec(st, "UPDATE jobs SET report_next_at=?2, report_attempts=MAX(report_attempts-1, 0) "
	    "WHERE id=?1", "ii", id, next_at) == 1 ? 1 : -1;
}

int
store_report_wake_location(struct store *st, const char *location_id)
{
	return store_exec(st, "UPDATE jobs SET report_next_at=?2 WHERE location_id=?1 "
	    "AND report_state='" REPORT_NAME_PENDING "'",
	    "si", location_id, now_ms());
}

void
store_msgmap_free(struct msgmap *m)
{
	if (!m)
		return;
	free(m->rfc_message_id);
	free(m->location_id);
	free(m->ghl_message_id);
	free(m->email_message_id);
	free(m->alt_id);
	free(m->conversation_id);
	free(m->contact_id);
	free(m->references);
	free(m->reply_token);
	free(m);
}

int
store_msgmap_put(struct store *st, const struct msgmap *m)
{
	return store_exec(st, MSGMAP_UPSERT, "sssssssssi", MSGMAP_ARGS(m)) < 0 ? -1 : 1;
}

int
store_msgmap_get(struct store *st, enum msgmap_key by, const char *location_id, const char *key,
    struct msgmap **m_r)
{
#define MSGMAP_SELECT(col) "SELECT rfc_message_id, location_id, ghl_message_id, email_message_id, " \
	"alt_id, conversation_id, contact_id, refs, reply_token FROM message_map " \
	"WHERE " col "=?1 AND location_id=?2 ORDER BY created_at DESC LIMIT 1"
	static const char *const sql_by[] = {
		[MSGMAP_BY_RFC] = MSGMAP_SELECT("rfc_message_id"),
		[MSGMAP_BY_GHL] = MSGMAP_SELECT("ghl_message_id"),
		[MSGMAP_BY_EMAIL] = MSGMAP_SELECT("email_message_id"),
		[MSGMAP_BY_ALT] = MSGMAP_SELECT("alt_id"),
		[MSGMAP_BY_TOKEN] = MSGMAP_SELECT("reply_token"),
	};
	const char *sql;
	sqlite3_stmt *stmt;
	int r, ret = -1;

	*m_r = NULL;
	if ((unsigned)by >= sizeof(sql_by) / sizeof(sql_by[0]))
		return -1;
	sql = sql_by[by];
	pthread_mutex_lock(&st->lock);
	if ((stmt = store_stmt(st, sql)) != NULL) {
		sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 2, location_id, -1, SQLITE_STATIC);
		r = sqlite3_step(stmt);
		if (r == SQLITE_ROW) {
			struct msgmap *m = xcalloc(1, sizeof(*m));
			m->rfc_message_id = col_text(stmt, 0);
			m->location_id = col_text(stmt, 1);
			m->ghl_message_id = col_text(stmt, 2);
			m->email_message_id = col_text(stmt, 3);
			m->alt_id = col_text(stmt, 4);
			m->conversation_id = col_text(stmt, 5);
			m->contact_id = col_text(stmt, 6);
			m->references = col_text(stmt, 7);
			m->reply_token = col_text(stmt, 8);
			*m_r = m;
			ret = 1;
		} else {
			ret = r == SQLITE_DONE ? 0 : -1;
		}
		store_stmt_done(st, stmt);
	} else {
		store_log_error(st, "msgmap");
	}
	pthread_mutex_unlock(&st->lock);
	return ret;
}

void
store_token_free(struct token *t)
{
	if (!t)
		return;
	free(t->location_id);
	free(t->user_type);
	free(t->company_id);
	free(t->access_token);
	free(t->refresh_token);
	free(t->scope);
	free(t);
}

/* Tokens at rest, when a key is set: "enc1:" base64(nonce | AES-256-GCM
 * ciphertext | tag), the location id as associated data so a value cannot
 * be moved to another row. */
#define TOKEN_ENC_PREFIX "enc1:"

static char *
token_seal(struct store *st, const char *location_id, const char *plain)
{
	gnutls_aead_cipher_hd_t h;
	gnutls_datum_t key = { st->token_key, 32 }, raw, b64;
	unsigned char *buf;
	size_t plen, clen;
	char *out;

	if (!plain || !st->have_token_key)
		return xstrdup(plain);
	plen = strlen(plain);
	clen = plen + 16;
	buf = xmalloc(12 + clen);
	gnutls_rnd(GNUTLS_RND_NONCE, buf, 12);
	gnutls_aead_cipher_init(&h, GNUTLS_CIPHER_AES_256_GCM, &key);
	if (gnutls_aead_cipher_encrypt(h, buf, 12, location_id, strlen(location_id), 16, plain, plen,
	    buf + 12, &clen) < 0) {
		gnutls_aead_cipher_deinit(h);
		free(buf);
		return NULL;
	}
	gnutls_aead_cipher_deinit(h);
	raw.data = buf;
	raw.size = (unsigned)(12 + clen);
	gnutls_base64_encode2(&raw, &b64);
	out = xasprintf(TOKEN_ENC_PREFIX "%.*s", (int)b64.size, (char *)b64.data);
	gnutls_free(b64.data);
	free(buf);
	return out;
}

/* NULL when the value is sealed and cannot be opened (no or wrong key). */
static char *
token_open(struct store *st, const char *location_id, char *stored)
{
	gnutls_aead_cipher_hd_t h;
	gnutls_datum_t key = { st->token_key, 32 }, in, raw = { NULL, 0 };
	char *plain = NULL;
	size_t plen;

	if (!stored || strncmp(stored, TOKEN_ENC_PREFIX, strlen(TOKEN_ENC_PREFIX)) != 0)
		return stored;
	in.data = (unsigned char *)stored + strlen(TOKEN_ENC_PREFIX);
	in.size = (unsigned)strlen((char *)in.data);
	if (st->have_token_key && gnutls_base64_decode2(&in, &raw) == 0 && raw.size > 28) {
		plen = raw.size - 12;
		plain = xmalloc(plen + 1);
		gnutls_aead_cipher_init(&h, GNUTLS_CIPHER_AES_256_GCM, &key);
		if (gnutls_aead_cipher_decrypt(h, raw.data, 12, location_id, strlen(location_id), 16,
		    raw.data + 12, raw.size - 12, plain, &plen) < 0) {
			free(plain);
			plain = NULL;
		} else {
			plain[plen] = '\0';
		}
		gnutls_aead_cipher_deinit(h);
	}
	gnutls_free(raw.data);
	if (!plain)
		log_error("store: token for %s is encrypted and cannot be opened (token_key_file?)", location_id);
	free(stored);
	return plain;
}

void
store_set_token_key(struct store *st, const unsigned char key[32])
{
	memcpy(st->token_key, key, 32);
	st->have_token_key = true;
}

int
store_token_put(struct store *st, const struct token *t)
{
	char *access = token_seal(st, t->location_id, t->access_token);
	char *refresh = token_seal(st, t->location_id, t->refresh_token);
	int r = store_exec_durable(st,
	    "INSERT INTO tokens (location_id, user_type, company_id, access_token, refresh_token, expires_at, "
	    "scope, needs_reinstall, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9) "
	    "ON CONFLICT(location_id) DO UPDATE SET user_type=excluded.user_type, company_id=excluded.company_id, "
	    "access_token=excluded.access_token, refresh_token=excluded.refresh_token, "
	    "expires_at=excluded.expires_at, scope=excluded.scope, needs_reinstall=excluded.needs_reinstall, "
	    "updated_at=excluded.updated_at",
	    "sssssisii", t->location_id, t->user_type, t->company_id, access, refresh,
	    t->expires_at, t->scope, (int64_t)t->needs_reinstall, now_ms()) < 0 ? -1 : 1;
	free(access);
	free(refresh);
	return r;
}

int
store_token_get(struct store *st, const char *location_id, struct token **t_r)
{
	sqlite3_stmt *stmt;
	int r, ret = -1;

	*t_r = NULL;
	pthread_mutex_lock(&st->lock);
	if ((stmt = store_stmt(st, "SELECT location_id, user_type, company_id, access_token, refresh_token, "
	    "expires_at, scope, needs_reinstall FROM tokens WHERE location_id=?1")) != NULL) {
		sqlite3_bind_text(stmt, 1, location_id, -1, SQLITE_STATIC);
		r = sqlite3_step(stmt);
		if (r == SQLITE_ROW) {
			struct token *t = xcalloc(1, sizeof(*t));
			t->location_id = col_text(stmt, 0);
			t->user_type = col_text(stmt, 1);
			t->company_id = col_text(stmt, 2);
			t->access_token = token_open(st, location_id, col_text(stmt, 3));
			t->refresh_token = token_open(st, location_id, col_text(stmt, 4));
			t->expires_at = sqlite3_column_int64(stmt, 5);
			t->scope = col_text(stmt, 6);
			t->needs_reinstall = sqlite3_column_int(stmt, 7) != 0;
			*t_r = t;
			ret = 1;
		} else {
			ret = r == SQLITE_DONE ? 0 : -1;
		}
		store_stmt_done(st, stmt);
	}
	pthread_mutex_unlock(&st->lock);
	return ret;
}

int
store_token_delete(struct store *st, const char *location_id)
{
	return store_exec(st, "DELETE FROM tokens WHERE location_id=?1", "s", location_id) < 0 ? -1 : 1;
}

int
store_token_mark_reinstall(struct store *st, const char *location_id)
{
	return store_exec(st, "UPDATE tokens SET needs_reinstall=1, updated_at=?2 WHERE location_id=?1",
	    "si", location_id, now_ms()) < 0 ? -1 : 1;
}

static int
secret_from_hex(const char *have, unsigned char key_r[32])
{
	if (strlen(have) != 64 || strspn(have, "0123456789abcdef") != 64)
		return -1;
	for (int i = 0; i < 32; i++) {
		unsigned v;
		sscanf(have + 2 * i, "%2x", &v);
		key_r[i] = (unsigned char)v;
	}
	return 1;
}

int
store_secret(struct store *st, const char *name, unsigned char key_r[32])
{
	unsigned char fresh[32];
	char hex[65], *have = NULL;
	int r;

	/* read first: a store that is there already needs no write (the
	 * read-only commands run where they cannot write) */
	r = store_query_row(st, row_text, &have, "SELECT value FROM secrets WHERE name=?1", "s", name);
	if (r == 0) {
		if (gnutls_rnd(GNUTLS_RND_KEY, fresh, sizeof(fresh)) < 0)
			return -1;
		for (int i = 0; i < 32; i++)
			snprintf(hex + 2 * i, 3, "%02x", fresh[i]);
		memset(fresh, 0, sizeof(fresh));
		/* two first starts at once: the first key stays, both read it */
		r = store_exec_durable(st, "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3) "
		    "ON CONFLICT DO NOTHING", "ssi", name, hex, now_ms());
		memset(hex, 0, sizeof(hex));
		if (r < 0)
			return -1;
		r = store_query_row(st, row_text, &have, "SELECT value FROM secrets WHERE name=?1", "s", name);
	}
	if (r != 1)
		return -1;
	r = secret_from_hex(have, key_r);
	memset(have, 0, strlen(have));
	free(have);
	return r;
}

int
store_webhook_seen(struct store *st, const char *webhook_id, int64_t now)
{
	int r = store_exec_durable(st, "INSERT INTO replay_guard (fp, at) VALUES (mb_fp('app:' || ?1), ?2) "
	    "ON CONFLICT DO NOTHING", "si", webhook_id, now);
	return r < 0 ? -1 : r;
}

static void
row_checkpoint(sqlite3_stmt *stmt, void *arg)
{
	struct imap_checkpoint *c = arg;
	c->uidvalidity = (uint32_t)sqlite3_column_int64(stmt, 0);
	c->last_uid = (uint32_t)sqlite3_column_int64(stmt, 1);
	c->rescan_upto = (uint32_t)sqlite3_column_int64(stmt, 2);
}

int
store_checkpoint_get(struct store *st, const char *account, struct imap_checkpoint *c)
{
	memset(c, 0, sizeof(*c));
	return store_query_row(st, row_checkpoint, c, "SELECT uidvalidity, last_uid, rescan_upto "
	    "FROM imap_checkpoints WHERE account=?1", "s", account);
}

int
store_checkpoint_put(struct store *st, const char *account, const struct imap_checkpoint *c)
{
	return store_exec(st, "INSERT INTO imap_checkpoints (account, uidvalidity, last_uid, rescan_upto, updated_at) "
	    "VALUES (?1,?2,?3,?4,?5) ON CONFLICT(account) DO UPDATE SET uidvalidity=excluded.uidvalidity, "
	    "last_uid=excluded.last_uid, rescan_upto=excluded.rescan_upto, updated_at=excluded.updated_at",
	    "siiii", account, (int64_t)c->uidvalidity, (int64_t)c->last_uid, (int64_t)c->rescan_upto,
	    now_ms()) < 0 ? -1 : 1;
}

int
store_inbound_state(struct store *st, const char *location_id, const char *key, enum inbound_state *state_r)
{
	char *name = NULL;
	int r = store_query_row(st, row_text, &name, "SELECT state FROM inbound_seen "
	    "WHERE location_id=?1 AND dedupe_key=?2", "ss", location_id, key);
	int s = inbound_state_parse(name);

	*state_r = r == 1 && s > IN_NEW ? (enum inbound_state)s : IN_NEW;
	if (r == 1 && s <= IN_NEW) {
		log_error("store: inbound %s/%s has an unknown state \"%s\"", location_id, key, name ? name : "");
		r = -1;
	}
	free(name);
	return r;
}

#define INBOUND_UPSERT "INSERT INTO inbound_seen (location_id, dedupe_key, state, ghl_message_id, error, " \
	"summary, raw, attempts, created_at) VALUES (?1,?2,?3,?4,?5,?6,?7,1,?8) " \
	"ON CONFLICT(location_id, dedupe_key) DO UPDATE SET state=excluded.state, " \
	"ghl_message_id=excluded.ghl_message_id, error=excluded.error, " \
	"summary=COALESCE(excluded.summary, summary), raw=excluded.raw, attempts=attempts+1"

int
store_inbound_record(struct store *st, const char *location_id, const char *key, enum inbound_state state,
    const char *ghl_message_id, const char *error, const char *summary, const void *raw, size_t raw_len)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	pthread_mutex_lock(&st->lock);
	if ((stmt = store_stmt(st, INBOUND_UPSERT)) != NULL) {
		sqlite3_bind_text(stmt, 1, location_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 2, key, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 3, inbound_state_name(state), -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 4, ghl_message_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 5, error, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 6, summary, -1, SQLITE_STATIC);
		if (raw)
			sqlite3_bind_blob(stmt, 7, raw, (int)raw_len, SQLITE_STATIC);
		else
			sqlite3_bind_null(stmt, 7);
		sqlite3_bind_int64(stmt, 8, now_ms());
		ret = sqlite3_step(stmt) == SQLITE_DONE ? 1 : -1;
		if (ret < 0)
			store_log_error(st, "inbound record");
		store_stmt_done(st, stmt);
	}
	if (store_unlock_write(st, ret > 0) < 0)   /* durable: see store_exec_v */
		ret = -1;
	return ret;
}

int
store_inbound_posted(struct store *st, const char *location_id, const char *key, const char *ghl_message_id,
    const char *summary, const struct msgmap *m, const char *parent_ghl_id, const char *event)
{
	int64_t now = now_ms();

	if (store_tx_begin(st, "inbound posted") < 0)
		return -1;
	if (m)
		store_tx_extra(st, MSGMAP_UPSERT, "sssssssssi", MSGMAP_ARGS(m));
	store_tx_step(st, INBOUND_UPSERT, "sssssssi", location_id, key, inbound_state_name(IN_POSTED), ghl_message_id,
	    (const char *)NULL, summary, (const char *)NULL, now);
	if (parent_ghl_id)
		store_tx_extra(st, EVENT_INSERT, "isss", now, parent_ghl_id, "reply", event);
	store_tx_extra(st, EVENT_INSERT, "isss", now, ghl_message_id, "inbound", event);
	/* durable: HighLevel has it; a re-read must not post it again */
	return store_tx_end(st, "inbound posted", true) < 0 ? -1 : 1;
}

int
store_inbound_list(struct store *st, enum inbound_state state, void (*fn)(const struct inbound_row *, void *),
    void *arg)
{
	sqlite3_stmt *stmt;
	int n = 0, r;

	pthread_mutex_lock(&st->lock);
	if ((stmt = store_stmt(st, "SELECT location_id, dedupe_key, state, ghl_message_id, error, summary, "
	    "attempts, created_at FROM inbound_seen WHERE ?1 IS NULL OR state=?1 ORDER BY created_at DESC LIMIT 1000")) == NULL) {
		pthread_mutex_unlock(&st->lock);
		return -1;
	}
	sqlite3_bind_text(stmt, 1, inbound_state_name(state), -1, SQLITE_STATIC);
	while ((r = sqlite3_step(stmt)) == SQLITE_ROW) {
		int state_of = inbound_state_parse((const char *)sqlite3_column_text(stmt, 2));
		struct inbound_row row = {
			.location_id = (const char *)sqlite3_column_text(stmt, 0),
			.key = (const char *)sqlite3_column_text(stmt, 1),
			.ghl_message_id = (const char *)sqlite3_column_text(stmt, 3),
			.error = (const char *)sqlite3_column_text(stmt, 4),
			.summary = (const char *)sqlite3_column_text(stmt, 5),
			.state = state_of > 0 ? (enum inbound_state)state_of : IN_NEW,
			.attempts = sqlite3_column_int(stmt, 6), .created_at = sqlite3_column_int64(stmt, 7),
		};
		fn(&row, arg);
		n++;
	}
	store_stmt_done(st, stmt);
	pthread_mutex_unlock(&st->lock);
	return r == SQLITE_DONE ? n : -1;
}

int
store_inbound_raw(struct store *st, const char *location_id, const char *key, char **raw_r, size_t *len_r)
{
	sqlite3_stmt *stmt;
	int ret = -1;

	*raw_r = NULL;
	pthread_mutex_lock(&st->lock);
	if ((stmt = store_stmt(st, "SELECT raw FROM inbound_seen WHERE location_id=?1 AND dedupe_key=?2 "
	    "AND raw IS NOT NULL")) != NULL) {
		sqlite3_bind_text(stmt, 1, location_id, -1, SQLITE_STATIC);
		sqlite3_bind_text(stmt, 2, key, -1, SQLITE_STATIC);
		if (sqlite3_step(stmt) == SQLITE_ROW) {
			*len_r = (size_t)sqlite3_column_bytes(stmt, 0);
			*raw_r = xmalloc(*len_r + 1);
			memcpy(*raw_r, sqlite3_column_blob(stmt, 0), *len_r);
			(*raw_r)[*len_r] = '\0';
			ret = 1;
		} else {
			ret = 0;
		}
		store_stmt_done(st, stmt);
	}
	pthread_mutex_unlock(&st->lock);
	return ret;
}

int
store_job_dsn(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    bool report_due, int code, const char *error, const char *event)
{
	int64_t now = now_ms();
	int r;

	if (store_tx_begin(st, "job dsn") < 0)
		return -1;
	r = store_tx_step(st, "UPDATE jobs SET " JOB_CAS_SET ", report_attempts=0, updated_at=?8, "
	    "report_next_at=IIF(?9, ?8, report_next_at), last_code=IIF(?10 > 0, ?10, last_code), "
	    "last_error=COALESCE(?11, last_error)" JOB_CAS_WHERE,
	    "issssssiiis", job->id, JOB_CAS_ARGS(from), JOB_CAS_TO(to), now, (int64_t)report_due, (int64_t)code,
	    error);
	if (r == 1 && event)
		store_tx_extra(st, EVENT_INSERT, "isss", now, job->message_id, "dsn", event);
	if (store_tx_end(st, "job dsn", false) < 0)
		return -1;
	return r;
}

int
store_watcher_state(struct store *st, const char *location_id, const char *state, const char *detail)
{
	return store_exec(st, "INSERT INTO watchers (location_id, state, detail, updated_at) VALUES (?1,?2,?3,?4) "
	    "ON CONFLICT(location_id) DO UPDATE SET state=excluded.state, detail=excluded.detail, "
	    "updated_at=excluded.updated_at", "sssi", location_id, state, detail, now_ms()) < 0 ? -1 : 1;
}

struct watcher_row {
	char **state, **detail;
	int64_t *at;
};

static void
row_watcher(sqlite3_stmt *stmt, void *arg)
{
	struct watcher_row *w = arg;
	*w->state = col_text(stmt, 0);
	*w->detail = col_text(stmt, 1);
	*w->at = sqlite3_column_int64(stmt, 2);
}

int
store_watcher_get(struct store *st, const char *location_id, char **state_r, char **detail_r, int64_t *at_r)
{
	struct watcher_row w = { state_r, detail_r, at_r };
	*state_r = *detail_r = NULL;
	return store_query_row(st, row_watcher, &w, "SELECT state, detail, updated_at FROM watchers "
	    "WHERE location_id=?1", "s", location_id);
}

int
store_set_installed(struct store *st, const char *location_id, bool installed)
{
	if (installed)
		return store_exec_durable(st, "DELETE FROM uninstalled WHERE location_id=?1", "s", location_id) < 0 ? -1 : 1;
	return store_exec_durable(st, "INSERT INTO uninstalled (location_id, at) VALUES (?1, ?2) "
	    "ON CONFLICT DO NOTHING", "si", location_id, now_ms()) < 0 ? -1 : 1;
}

int
store_is_uninstalled(struct store *st, const char *location_id)
{
	return store_query_row(st, row_none, NULL, "SELECT 1 FROM uninstalled WHERE location_id=?1", "s", location_id);
}

void
store_memory(struct store *st, int64_t *heap_r, int64_t *file_r)
{
	int64_t pages = 0, size = 0;
	*heap_r = sqlite3_memory_used();
	store_query_row(st, row_int64, &pages, "PRAGMA page_count", "");
	store_query_row(st, row_int64, &size, "PRAGMA page_size", "");
	*file_r = pages > 0 && size > 0 ? pages * size : 0;
}

int64_t
store_job_oldest_queued_age(struct store *st)
{
	int64_t oldest = -1;
	store_query_row(st, row_int64, &oldest,
	    "SELECT MIN(created_at) FROM jobs WHERE state IN ('" JOB_NAME_QUEUED "','" JOB_NAME_CLAIMED "','"
	    JOB_NAME_SENDING "')", "");
	return oldest < 0 ? 0 : now_ms() - oldest;
}

int
store_kv_put(struct store *st, const char *plugin, const char *key, const char *value)
{
	return store_exec_durable(st, "INSERT INTO plugin_kv (plugin, key, value, updated_at) VALUES (?1,?2,?3,?4) "
	    "ON CONFLICT(plugin, key) DO UPDATE SET value=excluded.value, updated_at=excluded.updated_at",
	    "sssi", plugin, key, value, now_ms()) < 0 ? -1 : 1;
}

int
store_kv_get(struct store *st, const char *plugin, const char *key, char **value_r)
{
	*value_r = NULL;
	return store_query_row(st, row_text, value_r, "SELECT value FROM plugin_kv WHERE plugin=?1 AND key=?2",
	    "ss", plugin, key);
}

int
store_event(struct store *st, const char *message_id, const char *kind, const char *detail)
{
	return store_exec(st, EVENT_INSERT, "isss", now_ms(), message_id, kind, detail) < 0 ? -1 : 1;
}

/* Retention. Each DELETE removes at most STORE_PRUNE_BATCH rows, so the
 * store lock is never held long enough to delay a webhook. Rowids grow
 * with time: "older than the cutoff" is the rowid range below the first
 * row at or after it (found once per table), which needs no index on the
 * time columns and lets each batch start where the last one ended. */
#define STORE_PRUNE_BATCH 500
#define PRUNE_STR_(x) #x
#define PRUNE_LIMIT(x) " LIMIT " PRUNE_STR_(x)

struct prune_spec {
	const char *first;         /* ?1 cutoff -> first rowid at or after it; NULL: no range */
	const char *del;           /* ?1 cutoff, ?2 that rowid: deletes one batch */
	const char *keep;          /* same parameters, same batch, before del in its commit: what
	                            * outlives the rows (the replay guard's fingerprints); or NULL */
};

static const struct prune_spec prune_payloads = {
	/* a sent job's payload is never read again (retry takes failed ones) */
	NULL,
	"DELETE FROM job_payload WHERE job_id IN (SELECT p.job_id FROM job_payload p JOIN jobs j ON j.id = p.job_id "
	"WHERE j.state = '" JOB_NAME_SENT "' AND j.report_state != '" REPORT_NAME_PENDING "' " PRUNE_LIMIT(STORE_PRUNE_BATCH) ")",
	NULL,
};
#define PRUNE_JOBS_BATCH "SELECT id FROM jobs WHERE id < ?2 " \
	"AND state IN ('" JOB_NAME_SENT "','" JOB_NAME_FAILED "') " \
	"AND report_state != '" REPORT_NAME_PENDING "' AND updated_at < ?1 ORDER BY id " PRUNE_LIMIT(STORE_PRUNE_BATCH)
static const struct prune_spec prune_jobs = {
	"SELECT id FROM jobs WHERE created_at >= ?1 ORDER BY id LIMIT 1",
	"DELETE FROM jobs WHERE id IN (" PRUNE_JOBS_BATCH ")",
	/* the messageIds stay known as 12-byte fingerprints (replay_days) */
	"INSERT OR IGNORE INTO replay_guard (fp, at) SELECT mb_fp('job:' || message_id), created_at FROM jobs "
	"WHERE id IN (" PRUNE_JOBS_BATCH ")",
};
/* A table pruned by age alone: rows whose rowid lies below the first row
 * at or after the cutoff (events.id is its rowid). */
#define PRUNE_BY_AGE(table, time_col) { \
	"SELECT rowid FROM " table " WHERE " time_col " >= ?1 ORDER BY rowid LIMIT 1", \
	"DELETE FROM " table " WHERE rowid IN (SELECT rowid FROM " table " WHERE rowid < ?2 " \
	"ORDER BY rowid " PRUNE_LIMIT(STORE_PRUNE_BATCH) ")", NULL, \
}
static const struct prune_spec prune_webhooks = PRUNE_BY_AGE("webhook_seen", "received_at");
static const struct prune_spec prune_inbound = PRUNE_BY_AGE("inbound_seen", "created_at");
static const struct prune_spec prune_threads = PRUNE_BY_AGE("message_map", "created_at");
static const struct prune_spec prune_events = PRUNE_BY_AGE("events", "at");
static const struct prune_spec prune_replays = {
	NULL,   /* no rowid: by its index on at */
	"DELETE FROM replay_guard WHERE fp IN (SELECT fp FROM replay_guard WHERE at < ?1 "
	PRUNE_LIMIT(STORE_PRUNE_BATCH) ")",
	NULL,
};

/* Rows removed, or -1 on a store error (logged). */
static int64_t
store_prune_one(struct store *st, const struct prune_spec *ps, int64_t cutoff)
{
	int64_t first = INT64_MAX, total = 0;
	int n;

	if (ps->first && store_query_row(st, row_int64, &first, ps->first, "i", cutoff) < 0)
		return -1;
	if (first < 0)
		first = INT64_MAX;
	do {
		if (ps->keep) {
			/* both statements see the same batch: one transaction */
			if (store_tx_begin(st, "prune") < 0)
				return -1;
			store_tx_step(st, ps->keep, "ii", cutoff, first);
			n = store_tx_step(st, ps->del, "ii", cutoff, first);
			if (store_tx_end(st, "prune", false) < 0)
				return -1;
		} else {
			n = store_exec(st, ps->del, "ii", cutoff, first);
		}
		if (n < 0)
			return -1;
		total += n;
	} while (n == STORE_PRUNE_BATCH);
	return total;
}

int
store_prune(struct store *st, int64_t keep_before, int64_t threads_before, int64_t events_before,
    int64_t replays_before, struct store_pruned *r)
{
	memset(r, 0, sizeof(*r));
	if ((r->payloads = store_prune_one(st, &prune_payloads, 0)) < 0 ||
	    (r->jobs = store_prune_one(st, &prune_jobs, keep_before)) < 0 ||
	    (r->webhooks = store_prune_one(st, &prune_webhooks, keep_before)) < 0 ||
	    (r->inbound = store_prune_one(st, &prune_inbound, keep_before)) < 0 ||
	    (r->threads = store_prune_one(st, &prune_threads, threads_before)) < 0 ||
	    (r->events = store_prune_one(st, &prune_events, events_before)) < 0 ||
	    (r->replays = store_prune_one(st, &prune_replays, replays_before)) < 0)
		return -1;
	return 0;
}

int
store_events_each(struct store *st, const char *key, void (*fn)(int64_t at, const char *message_id,
    const char *kind, const char *detail, void *arg), void *arg)
{
	sqlite3_stmt *stmt;
	int n = 0;
	/* the message itself, what threads to it (replies, DSNs name it in
	 * detail), and for an address every job or reply that mentions it */
	static const char *const sql =
	    "SELECT at, message_id, kind, detail FROM events WHERE message_id=?1 OR detail LIKE '%' || ?1 || '%' "
	    "OR message_id IN (SELECT ghl_message_id FROM message_map WHERE rfc_message_id=?1) "
	    "OR message_id IN (SELECT j.message_id FROM jobs j LEFT JOIN job_payload p ON p.job_id = j.id "
	    "WHERE instr(p.payload, ?1) > 0 OR instr(j.rcpt_state, ?1) > 0) ORDER BY at, id LIMIT 1000";

	pthread_mutex_lock(&st->lock);
	if ((stmt = store_stmt(st, sql)) != NULL) {
		sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
		while (sqlite3_step(stmt) == SQLITE_ROW) {
			fn(sqlite3_column_int64(stmt, 0), (const char *)sqlite3_column_text(stmt, 1),
			    (const char *)sqlite3_column_text(stmt, 2), (const char *)sqlite3_column_text(stmt, 3), arg);
			n++;
		}
		store_stmt_done(st, stmt);
	}
	pthread_mutex_unlock(&st->lock);
	return n;
}
