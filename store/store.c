/* store: the engine (see store_private.h): migrations, the statement cache,
 * group commit, transactions, open and close. */
#include "store_private.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
	/* 10: the inbound spool: a message read from a mailbox, kept until
	 * the core has handled it (posting happens off the IMAP threads) */
	"CREATE TABLE inbound_spool ("
	"  id INTEGER PRIMARY KEY,"
	"  location_id TEXT NOT NULL,"
	"  raw BLOB NOT NULL,"
	"  received_at INTEGER NOT NULL,"
	"  next_at INTEGER NOT NULL,"
	"  attempts INTEGER NOT NULL DEFAULT 0,"
	"  claimed INTEGER NOT NULL DEFAULT 0);"
	"CREATE INDEX inbound_spool_due ON inbound_spool(claimed, next_at);",
	/* 11: events name their location, for the status page's recent events */
	"ALTER TABLE events ADD COLUMN location_id TEXT;"
	"UPDATE events SET location_id = (SELECT location_id FROM jobs WHERE jobs.message_id = events.message_id);"
	"CREATE INDEX events_location ON events(location_id, id);",
	/* 12: unsubscribe requests, kept until the contact's Email DND is set */
	"CREATE TABLE unsubscribes ("
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
	/* 13: the engagement outbox: HighLevel's v3 event counters are merged,
	 * so each (message, event, who) is reported once (fsm/engage.h) */
	"CREATE TABLE engagement ("
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

void
store_log_error(struct store *st, const char *what)
{
	log_error("store: %s: %s", what, sqlite3_errmsg(st->db));
}

/* A ready statement for sql (a string literal). Caller holds the lock and
 * hands it back with store_stmt_done, never sqlite3_finalize. */
sqlite3_stmt *
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

void
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
 * char * (NULL binds NULL), 'b' a blob as const void * and size_t (NULL
 * binds NULL). Caller holds the lock. NULL on error (logged).
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
		} else if (*f == 'b') {
			const void *b = va_arg(ap, const void *);
			size_t n = va_arg(ap, size_t);
			if (b)
				sqlite3_bind_blob64(stmt, i, b, (sqlite3_uint64)n, SQLITE_STATIC);
			else
				sqlite3_bind_null(stmt, i);
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
int
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

int
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
int
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

int
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

int
store_exec_durable(struct store *st, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_exec_v(st, true, sql, fmt, ap);
	va_end(ap);
	return r;
}

char *
store_col_text(sqlite3_stmt *stmt, int i)
{
	const unsigned char *t = sqlite3_column_text(stmt, i);
	return t ? xstrdup((const char *)t) : NULL;
}

/* Runs a query binding args by fmt (as store_exec) and hands its first row
 * to fn. Returns 1 with a row, 0 without, -1 on error (logged). */
/* Up to max rows to fn: how many, or -1 (logged). */
static int
store_query_v(struct store *st, int max, void (*fn)(sqlite3_stmt *, void *), void *arg, const char *sql,
    const char *fmt, va_list ap)
{
	sqlite3_stmt *stmt;
	int r = SQLITE_DONE, n = 0;

	pthread_mutex_lock(&st->lock);
	stmt = store_prepare(st, sql, fmt, ap);
	if (stmt) {
		while (n < max && (r = sqlite3_step(stmt)) == SQLITE_ROW) {
			fn(stmt, arg);
			n++;
		}
		/* an UPDATE ... RETURNING finishes its work on the first step */
		if (n < max && r != SQLITE_DONE) {
			store_log_error(st, "query");
			n = -1;
		}
		store_stmt_done(st, stmt);
	} else {
		n = -1;
	}
	pthread_mutex_unlock(&st->lock);
	return n;
}

int
store_query_row_v(struct store *st, void (*fn)(sqlite3_stmt *, void *), void *arg, const char *sql,
    const char *fmt, va_list ap)
{
	return store_query_v(st, 1, fn, arg, sql, fmt, ap);
}

int
store_query_rows(struct store *st, void (*fn)(sqlite3_stmt *, void *), void *arg, const char *sql,
    const char *fmt, ...)
{
	va_list ap;
	int r;
	va_start(ap, fmt);
	r = store_query_v(st, INT_MAX, fn, arg, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
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
void
store_row_int64(sqlite3_stmt *stmt, void *arg)
{
	*(int64_t *)arg = sqlite3_column_type(stmt, 0) == SQLITE_NULL ? -1 : sqlite3_column_int64(stmt, 0);
}

void
store_row_text(sqlite3_stmt *stmt, void *arg)
{
	*(char **)arg = store_col_text(stmt, 0);
}

void
store_row_none(sqlite3_stmt *stmt, void *arg)
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

struct store *
store_open_readonly(const char *data_dir, char **error_r)
{
	struct store *st = xcalloc(1, sizeof(*st));
	char *path = xasprintf("%s/mailbridge.db", data_dir);
	int version = -1;
	sqlite3_stmt *stmt;

	st->wal_fd = -1;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->sync_lock, NULL);
	pthread_cond_init(&st->sync_cond, NULL);
	/* never created here: a command run as root before the first start
	 * would leave a root-owned store the service cannot open */
	if (access(path, F_OK) < 0) {
		*error_r = errno == EACCES ?
		    xasprintf("cannot reach %s: permission denied; run as the mailbridge user "
		    "(sudo -u mailbridge mailbridge ...)", path) :
		    xasprintf("no store at %s: mailbridge has not run with this data_dir yet", path);
		goto fail;
	}
	if (access(path, R_OK) < 0) {
		*error_r = xasprintf("cannot read %s: %s; run as the mailbridge user (sudo -u mailbridge mailbridge ...)",
		    path, strerror(errno));
		goto fail;
	}
	if (sqlite3_open_v2(path, &st->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK ||
	    sqlite3_exec(st->db, "PRAGMA query_only=ON", NULL, NULL, NULL) != SQLITE_OK) {
		*error_r = xasprintf("cannot open %s: %s", path, st->db ? sqlite3_errmsg(st->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(st->db, STORE_BUSY_TIMEOUT_MS);
	if (sqlite3_prepare_v2(st->db, "PRAGMA user_version", -1, &stmt, NULL) == SQLITE_OK) {
		if (sqlite3_step(stmt) == SQLITE_ROW)
			version = sqlite3_column_int(stmt, 0);
		sqlite3_finalize(stmt);
	}
	if (version < 0) {
		*error_r = xasprintf("cannot read %s: %s", path, sqlite3_errmsg(st->db));
		goto fail;
	}
	if (version != STORE_SCHEMA_VERSION) {
		*error_r = xasprintf("%s is at schema %d and this mailbridge reads %d: %s", path, version,
		    STORE_SCHEMA_VERSION, version < STORE_SCHEMA_VERSION ?
		    "start the service once (it migrates), then run this again" : "this mailbridge is older");
		goto fail;
	}
	free(path);
	return st;
fail:
	free(path);
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
store_memory(struct store *st, int64_t *heap_r, int64_t *file_r)
{
	int64_t pages = 0, size = 0;
	*heap_r = sqlite3_memory_used();
	store_query_row(st, store_row_int64, &pages, "PRAGMA page_count", "");
	store_query_row(st, store_row_int64, &size, "PRAGMA page_size", "");
	*file_r = pages > 0 && size > 0 ? pages * size : 0;
}

int
store_backup(struct store *st, const char *path, int64_t *bytes_r, char **error_r)
{
	char *tmp = xasprintf("%s.tmp", path), *dir = NULL, *slash;
	sqlite3 *dst = NULL;
	sqlite3_backup *b;
	struct stat sb;
	int fd, rc = SQLITE_ERROR;

	*error_r = NULL;
	/* created 0600 before SQLite opens it: the copy holds the keys */
	unlink(tmp);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) < 0) {
		*error_r = xasprintf("%s: %s", tmp, strerror(errno));
		free(tmp);
		return -1;
	}
	close(fd);
	if (sqlite3_open_v2(tmp, &dst, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK) {
		pthread_mutex_lock(&st->lock);
		if ((b = sqlite3_backup_init(dst, "main", st->db, "main")) != NULL) {
			/* every page in one step: one read snapshot, never restarted */
			rc = sqlite3_backup_step(b, -1);
			sqlite3_backup_finish(b);
		}
		pthread_mutex_unlock(&st->lock);
		if (rc == SQLITE_DONE)
			rc = sqlite3_exec(dst, "PRAGMA journal_mode=DELETE", NULL, NULL, NULL);
		else
			*error_r = xasprintf("backup: %s", sqlite3_errmsg(dst));
	}
	if (!*error_r && rc != SQLITE_OK)
		*error_r = xasprintf("backup: %s", dst ? sqlite3_errmsg(dst) : "cannot open the copy");
	sqlite3_close(dst);
	if (!*error_r && ((fd = open(tmp, O_RDONLY | O_CLOEXEC)) < 0 || fsync(fd) < 0 || close(fd) < 0))
		*error_r = xasprintf("%s: %s", tmp, strerror(errno));
	if (!*error_r && rename(tmp, path) < 0)
		*error_r = xasprintf("%s: %s", path, strerror(errno));
	if (*error_r) {
		unlink(tmp);
		free(tmp);
		return -1;
	}
	/* the rename, on disk */
	dir = xstrdup(path);
	slash = strrchr(dir, '/');
	if (slash)
		*(slash == dir ? slash + 1 : slash) = '\0';
	if ((fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	*bytes_r = stat(path, &sb) == 0 ? (int64_t)sb.st_size : 0;
	free(dir);
	free(tmp);
	return 1;
}
