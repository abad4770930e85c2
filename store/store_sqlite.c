/* store_sqlite: the SQLite backend (the default): one connection behind a
 * mutex, a statement cache, writes committed in groups, group fsync of the
 * durable ones, checkpoints off the write path, online backup. */
#include "store_private.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include "log.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STORE_SCHEMA_VERSION ((int)(sizeof(store_migrations) / sizeof(store_migrations[0])))

#define STORE_BUSY_TIMEOUT_MS 5000

#define STORE_STMT_CACHE 128

/* A group of writes stays open while other threads wait for the
 * connection, at most this long and this many: a member waits for the
 * group's commit, so this bounds what a write can add to its latency. */
#define GROUP_MAX_US 2000
#define GROUP_MAX_MEMBERS 32

/* Checkpoints (copying the WAL's pages into the database) run in a thread
 * of their own, on a connection of their own, once the WAL holds this many
 * pages (8 MiB at 1 KiB pages); a commit checkpoints itself only when the
 * WAL reaches LITE_CHECKPOINT_INLINE (the thread lags behind a burst).
 * SQLite's own (wal_autocheckpoint, 1,000 pages) runs in the commit that
 * crosses the line: that write (a webhook's 200, with its whole group)
 * waited while the pages were copied and the database fsynced, and the
 * pages every message changes (the tables' last leaves, their indexes)
 * were copied again every 30 or so messages. bench/outbound.py, 2,000
 * messages: 46.3 KiB written per message at 1,000 pages, 36.3 at 4,000,
 * 33.4 at 16,000. */
#define LITE_CHECKPOINT_PAGES 8192
#define LITE_CHECKPOINT_INLINE (4 * LITE_CHECKPOINT_PAGES)

/* Writes committed together (lite_unlock): each member's work is in the
 * one open transaction, and each waits for its end. */
struct lite_group {
	int refs;                  /* the open group's, and each member's (under group_lock) */
	int members;
	int64_t opened_us;
	bool done;                 /* committed or rolled back (under group_lock) */
	int result;                /* then 0, or -1 rolled back */
	uint64_t seq;              /* its commit number, for lite_sync_upto */
};

struct lite {
	struct store st;           /* first: a struct store * is a struct lite * */
	sqlite3 *db;
	pthread_mutex_t lock;
	/* prepared statements keyed by their SQL text's address: every SQL
	 * string here is a literal, so the pointer names the statement, and
	 * parsing SQL once instead of per call is most of our store CPU */
	struct { const char *sql; sqlite3_stmt *stmt; } cache[STORE_STMT_CACHE];

	/* Group commit of writes. A write that finds other threads waiting
	 * for `lock` leaves its transaction open for them: each adds its own
	 * work (a savepoint), and the last before nobody waits commits them
	 * all. Pages every write changes (the tables' last leaves, their
	 * indexes, the header) go to the WAL once per group, not once per
	 * write. A write returns only once its group is committed. */
	struct lite_group *group;  /* open, under lock; NULL none */
	atomic_int waiting;        /* threads waiting for lock */
	pthread_mutex_t group_lock;
	pthread_cond_t group_cond;

	/* Group commit for durable writes (lite_sync_upto): every commit is
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
	bool tx_failed;            /* a step of the open transaction failed */

	/* the checkpointer (LITE_CHECKPOINT_PAGES); ckpt_db NULL: none.
	 * ckpt_copied: the WAL's pages its last checkpoint had copied (the
	 * WAL is not shortened by a checkpoint, only begun again by the next
	 * writer after one that copied everything) */
	sqlite3 *ckpt_db;
	atomic_int ckpt_copied;
	pthread_t ckpt_thread;
	pthread_mutex_t ckpt_lock;
	pthread_cond_t ckpt_cond;
	bool ckpt_due, ckpt_stop;
};

#define LITE(s) ((struct lite *)(s))

static const struct store_ops lite_ops;

/* mb_fp(text): the replay guard's fingerprint, 12 bytes of SHA-256: a
 * false "seen before" needs a collision among some 2^48 ids. The hot path
 * passes store_fp's instead (store_job_add); the prune's batch uses this. */

static void
store_sql_fp(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	unsigned char fp[STORE_FP_LEN];
	const unsigned char *in = sqlite3_value_text(argv[0]);

	(void)argc;
	if (!in) {
		sqlite3_result_null(ctx);
		return;
	}
	store_fp_text(in, (size_t)sqlite3_value_bytes(argv[0]), fp);
	sqlite3_result_blob(ctx, fp, STORE_FP_LEN, SQLITE_TRANSIENT);
}

/* mb_payload(value): a payload's text, packed or not (store_pack.c). */
static void
store_sql_payload(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	struct lite *l = sqlite3_user_data(ctx);
	const void *in;
	char *text;

	(void)argc;
	if (sqlite3_value_type(argv[0]) != SQLITE_BLOB) {
		sqlite3_result_value(ctx, argv[0]);
		return;
	}
	in = sqlite3_value_blob(argv[0]);
	text = store_unpack(l->st.packer, in ? in : "", (size_t)sqlite3_value_bytes(argv[0]));
	if (!text) {
		sqlite3_result_error(ctx, "mb_payload: a packed payload does not unpack", -1);
		return;
	}
	sqlite3_result_text(ctx, text, -1, free);
}

/* Our SQL functions, on every connection. */
static int
lite_functions(struct lite *l)
{
	if (sqlite3_create_function(l->db, "mb_fp", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL, store_sql_fp,
	    NULL, NULL) != SQLITE_OK)
		return -1;
	return sqlite3_create_function(l->db, "mb_payload", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, l,
	    store_sql_payload, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

static void
lite_log_error(struct lite *l, const char *what)
{
	log_error("store: %s: %s", what, sqlite3_errmsg(l->db));
}

/* A ready statement for sql (a string literal). Caller holds the lock and
 * hands it back with lite_stmt_done, never sqlite3_finalize. */
static sqlite3_stmt *
lite_stmt(struct lite *l, const char *sql)
{
	sqlite3_stmt *stmt;
	int i;

	for (i = 0; i < STORE_STMT_CACHE && l->cache[i].sql; i++)
		if (l->cache[i].sql == sql)
			return l->cache[i].stmt;
	if (sqlite3_prepare_v2(l->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
		lite_log_error(l, "prepare");
		return NULL;
	}
	if (i < STORE_STMT_CACHE) {
		l->cache[i].sql = sql;
		l->cache[i].stmt = stmt;
	}
	return stmt;
}

static void
lite_stmt_done(struct lite *l, sqlite3_stmt *stmt)
{
	for (int i = 0; i < STORE_STMT_CACHE && l->cache[i].sql; i++)
		if (l->cache[i].stmt == stmt) {
			sqlite3_reset(stmt);
			sqlite3_clear_bindings(stmt);
			return;
		}
	sqlite3_finalize(stmt);    /* the cache was full: it was prepared for this call only */
}

/* Prepares sql and binds args described by fmt. Caller holds the lock.
 * NULL on error (logged). Strings are bound without a copy: every caller
 * steps and resets the statement (lite_stmt_done) before its arguments
 * go away. */
static sqlite3_stmt *
lite_prepare(struct lite *l, const char *sql, const char *fmt, va_list ap)
{
	sqlite3_stmt *stmt = lite_stmt(l, sql);
	const struct store_val *vals = NULL;
	int i = 1;

	if (!stmt)
		return NULL;
	if (*fmt == '*') {
		vals = va_arg(ap, const struct store_val *);
		fmt++;
	}
	for (const char *f = fmt; *f; f++, i++) {
		const struct store_val *v = vals ? &vals[i - 1] : NULL;
		if (v && v->null)
			sqlite3_bind_null(stmt, i);
		else if (v && *f == 'i')
			sqlite3_bind_int64(stmt, i, v->i);
		else if (v && *f == 'b')
			sqlite3_bind_blob64(stmt, i, v->p, (sqlite3_uint64)v->len, SQLITE_STATIC);
		else if (v)
			sqlite3_bind_text(stmt, i, v->p, -1, SQLITE_STATIC);
		else if (*f == 'i') {
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
lite_wal_fsync(struct lite *l)
{
	struct stat a, b;

	if (l->wal_fd >= 0 && (fstat(l->wal_fd, &a) < 0 || stat(l->wal_path, &b) < 0 ||
	    a.st_ino != b.st_ino || a.st_dev != b.st_dev)) {
		close(l->wal_fd);
		l->wal_fd = -1;
	}
	if (l->wal_fd < 0 && (l->wal_fd = open(l->wal_path, O_RDONLY | O_CLOEXEC)) < 0) {
		log_error("store: open %s: %s", l->wal_path, strerror(errno));
		return -1;
	}
	if (fdatasync(l->wal_fd) < 0) {
		log_error("store: fdatasync %s: %s", l->wal_path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Returns once commit number seq is on disk (0), or -1 if a sync failed.
 * The first waiter syncs for everyone committed so far; the others wait
 * for it, and only sync again if their commit came after it started. */
static int
lite_sync_upto(struct lite *l, uint64_t seq)
{
	int ret = 0;

	pthread_mutex_lock(&l->sync_lock);
	while (l->synced < seq) {
		uint64_t target;
		int r;
		if (l->syncing) {
			pthread_cond_wait(&l->sync_cond, &l->sync_lock);
			continue;
		}
		l->syncing = true;
		target = atomic_load(&l->committed);
		pthread_mutex_unlock(&l->sync_lock);
		r = lite_wal_fsync(l);
		pthread_mutex_lock(&l->sync_lock);
		l->syncing = false;
		if (r == 0 && target > l->synced)
			l->synced = target;
		pthread_cond_broadcast(&l->sync_cond);
		if (r < 0) {
			ret = -1;
			break;
		}
	}
	pthread_mutex_unlock(&l->sync_lock);
	return ret;
}

static int lite_tx_run(struct lite *l, const char *sql);

static void
lite_lock(struct lite *l)
{
	atomic_fetch_add(&l->waiting, 1);
	pthread_mutex_lock(&l->lock);
	atomic_fetch_sub(&l->waiting, 1);
}

/* Opens the group if none is (under lock): 0, or -1 (logged). */
static int
lite_group_open(struct lite *l, const char *what)
{
	if (l->group)
		return 0;
	if (lite_tx_run(l, "BEGIN IMMEDIATE") != SQLITE_OK) {
		lite_log_error(l, what);
		return -1;
	}
	l->group = xcalloc(1, sizeof(*l->group));
	l->group->refs = 1;
	l->group->opened_us = mono_us();
	return 0;
}

/* The caller's write is in the open group: it will wait for its end. */
static struct lite_group *
lite_group_join(struct lite *l)
{
	struct lite_group *g = l->group;

	pthread_mutex_lock(&l->group_lock);
	g->refs++;
	g->members++;
	pthread_mutex_unlock(&l->group_lock);
	return g;
}

static void
lite_group_put(struct lite *l, struct lite_group *g)
{
	bool last;

	pthread_mutex_lock(&l->group_lock);
	last = --g->refs == 0;
	pthread_mutex_unlock(&l->group_lock);
	if (last)
		free(g);
}

/* Commits the open group (under lock). A statement that failed hard may
 * have rolled the whole transaction back already (SQLite is then in
 * autocommit): the group failed, and so did each member's write. */
static void
lite_group_close(struct lite *l)
{
	struct lite_group *g = l->group;
	bool ok = !sqlite3_get_autocommit(l->db);

	if (ok && lite_tx_run(l, "COMMIT") != SQLITE_OK) {
		lite_log_error(l, "commit");
		ok = false;
	}
	if (!ok && !sqlite3_get_autocommit(l->db))
		lite_tx_run(l, "ROLLBACK");
	l->group = NULL;
	pthread_mutex_lock(&l->group_lock);
	g->seq = atomic_fetch_add(&l->committed, 1) + 1;
	g->result = ok ? 0 : -1;
	g->done = true;
	pthread_cond_broadcast(&l->group_cond);
	pthread_mutex_unlock(&l->group_lock);
	lite_group_put(l, g);
}

/* Gives the connection up. The open group is committed unless another
 * thread is waiting to add to it, and it is neither too old nor too big;
 * a hard failure ends it at once. */
static void
lite_unlock(struct lite *l)
{
	struct lite_group *g = l->group;

	if (g && (atomic_load(&l->waiting) == 0 || g->members >= GROUP_MAX_MEMBERS ||
	    mono_us() - g->opened_us >= GROUP_MAX_US || sqlite3_get_autocommit(l->db)))
		lite_group_close(l);
	pthread_mutex_unlock(&l->lock);
}

/* Waits for the end of the group g the caller's write is in; durable:
 * also until an fsync covers it. 0, or -1 (the group rolled back, or the
 * sync failed). */
static int
lite_group_wait(struct lite *l, struct lite_group *g, bool durable)
{
	int r;
	uint64_t seq;

	pthread_mutex_lock(&l->group_lock);
	while (!g->done)
		pthread_cond_wait(&l->group_cond, &l->group_lock);
	r = g->result;
	seq = g->seq;
	pthread_mutex_unlock(&l->group_lock);
	lite_group_put(l, g);
	if (r == 0 && durable)
		r = lite_sync_upto(l, seq);
	return r;
}

static void
lite_row_init(struct store_row *row, sqlite3_stmt *stmt)
{
	row->ops = &lite_ops;
	row->impl = stmt;
	row->row = 0;
}

/* Prepares, binds and steps one statement (caller holds the lock), the
 * first max rows to fn. Returns sqlite3_changes() (or, with fn, the rows
 * handed over), or -1 with *rc_r the step's error (SQLITE_OK when
 * preparing failed, already logged). */
static int
lite_step_v(struct lite *l, int max, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap,
    int *rc_r)
{
	sqlite3_stmt *stmt = lite_prepare(l, sql, fmt, ap);
	struct store_row row;
	int n = 0, changes = -1;

	*rc_r = SQLITE_OK;
	if (!stmt)
		return -1;
	lite_row_init(&row, stmt);
	do {
		if ((*rc_r = sqlite3_step(stmt)) != SQLITE_ROW)
			break;
		if (fn)
			fn(&row, arg);
	} while (++n < max || !fn);
	/* with rows enough handed over, the statement is done: an UPDATE ...
	 * RETURNING has done its work on the first step. Without fn it ran to
	 * its end: a RETURNING row is a row changed (sqlite3_changes() is only
	 * set once such a statement is reset) */
	if (*rc_r == SQLITE_DONE || *rc_r == SQLITE_ROW)
		changes = fn || n > 0 ? n : sqlite3_changes(l->db);
	lite_stmt_done(l, stmt);
	return changes;
}

/* durable: the commit is on disk before we return (fsynced WAL, as
 * synchronous=FULL would, but grouped: lite_sync_upto); otherwise WAL
 * with synchronous=NORMAL: safe against a process crash (kill -9 loses
 * nothing committed), but the last commits may roll back on power loss.
 * Only writes that acknowledge something to the outside world (a webhook,
 * a single-use token, an inbound post) need to be durable; the rest would
 * at worst repeat work after a power cut, never lose a job: a WAL sync
 * also covers every earlier commit. */
static int
lite_exec(struct store *st, bool durable, const char *sql, const char *fmt, va_list ap)
{
	struct lite *l = LITE(st);
	struct lite_group *g = NULL;
	int rc, changes = -1;

	lite_lock(l);
	if (lite_group_open(l, "exec") == 0) {
		changes = lite_step_v(l, 0, NULL, NULL, sql, fmt, ap, &rc);
		if (changes < 0 && rc == SQLITE_CONSTRAINT)
			changes = 0;
		else if (changes < 0 && rc != SQLITE_OK)
			lite_log_error(l, "exec");
		/* a durable answer of "nothing changed" may rest on a write
		 * not yet on disk (a duplicate of one being taken): it waits */
		if (changes > 0 || (durable && changes == 0))
			g = lite_group_join(l);
	}
	lite_unlock(l);
	if (g && lite_group_wait(l, g, durable) < 0)
		return -1;
	return changes;
}

static int
lite_query(struct store *st, int max, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap)
{
	struct lite *l = LITE(st);
	int rc, n;

	lite_lock(l);
	n = lite_step_v(l, max, fn, arg, sql, fmt, ap, &rc);
	if (n < 0 && rc != SQLITE_OK)
		lite_log_error(l, "query");
	lite_unlock(l);
	return n;
}

/* BEGIN, COMMIT or ROLLBACK from the statement cache (sqlite3_exec would
 * parse them on every call: 2 % of the daemon's CPU under load). */
static int
lite_tx_run(struct lite *l, const char *sql)
{
	sqlite3_stmt *stmt = lite_stmt(l, sql);
	int r;

	if (!stmt)
		return SQLITE_ERROR;
	r = sqlite3_step(stmt);
	lite_stmt_done(l, stmt);
	return r == SQLITE_DONE ? SQLITE_OK : r;
}

/* Several writes in one commit: fewer WAL frames (a page changed twice is
 * written once) and no trace event without the state change it tells of.
 * The writes are a savepoint in the open group (lite_unlock). Begin takes
 * the lock; end unlocks, and waits for the group's commit. */
static int
lite_tx_begin(struct store *st, const char *what)
{
	struct lite *l = LITE(st);

	lite_lock(l);
	l->tx_failed = false;
	if (lite_group_open(l, what) < 0)
		goto fail;
	if (lite_tx_run(l, "SAVEPOINT tx") != SQLITE_OK) {
		lite_log_error(l, what);
		goto fail;
	}
	return 0;
fail:
	lite_unlock(l);
	return -1;
}

static int
lite_tx_step(struct store *st, bool extra, int max, store_row_fn *fn, void *arg, const char *sql, const char *fmt,
    va_list ap)
{
	struct lite *l = LITE(st);
	int rc, changes;

	if (l->tx_failed)
		return -1;
	changes = lite_step_v(l, max, fn, arg, sql, fmt, ap, &rc);
	if (changes < 0) {
		lite_log_error(l, "write");
		/* a failed statement is undone alone while the transaction
		 * stays open (a constraint); then an extra may be dropped */
		if (!extra || sqlite3_get_autocommit(l->db))
			l->tx_failed = true;
	}
	return changes;
}

static int
lite_tx_end(struct store *st, const char *what, bool durable)
{
	struct lite *l = LITE(st);
	struct lite_group *g = NULL;
	bool ok = !l->tx_failed && !sqlite3_get_autocommit(l->db);

	if (ok && lite_tx_run(l, "RELEASE tx") != SQLITE_OK) {
		lite_log_error(l, what);   /* before ROLLBACK clears the message */
		ok = false;
	}
	if (ok) {
		g = lite_group_join(l);
	} else if (!sqlite3_get_autocommit(l->db)) {
		/* undo this transaction's writes alone; the group goes on */
		lite_tx_run(l, "ROLLBACK TO tx");
		lite_tx_run(l, "RELEASE tx");
	}
	lite_unlock(l);
	if (!g)
		return -1;
	return lite_group_wait(l, g, durable);
}

static void
lite_tx_fail(struct store *st)
{
	LITE(st)->tx_failed = true;
}

static bool
lite_col_null(const struct store_row *r, int i)
{
	return sqlite3_column_type(r->impl, i) == SQLITE_NULL;
}

static int64_t
lite_col_int(const struct store_row *r, int i)
{
	return sqlite3_column_int64(r->impl, i);
}

static const char *
lite_col_str(const struct store_row *r, int i)
{
	return (const char *)sqlite3_column_text(r->impl, i);
}

static const void *
lite_col_blob(const struct store_row *r, int i, size_t *len_r)
{
	const void *b = sqlite3_column_blob(r->impl, i);   /* before _bytes: see sqlite3_column_blob */
	*len_r = (size_t)sqlite3_column_bytes(r->impl, i);
	return b;
}

static struct lite *
lite_new(void)
{
	struct lite *l = xcalloc(1, sizeof(*l));

	l->st.ops = &lite_ops;
	l->st.be = l;
	/* SQLite keeps a large value as it is given: a payload is packed */
	l->st.packer = store_packer_new();
	l->wal_fd = -1;
	pthread_mutex_init(&l->lock, NULL);
	pthread_mutex_init(&l->sync_lock, NULL);
	pthread_cond_init(&l->sync_cond, NULL);
	pthread_mutex_init(&l->group_lock, NULL);
	pthread_cond_init(&l->group_cond, NULL);
	pthread_mutex_init(&l->ckpt_lock, NULL);
	pthread_cond_init(&l->ckpt_cond, NULL);
	return l;
}

static void *
lite_checkpointer(void *arg)
{
	struct lite *l = arg;
	int in_wal, copied, rc;

	thread_name("checkpoint");
	pthread_mutex_lock(&l->ckpt_lock);
	for (;;) {
		while (!l->ckpt_due && !l->ckpt_stop)
			pthread_cond_wait(&l->ckpt_cond, &l->ckpt_lock);
		if (l->ckpt_stop)
			break;
		l->ckpt_due = false;
		pthread_mutex_unlock(&l->ckpt_lock);
		/* PASSIVE: copies what no reader still needs, and never waits
		 * for (or stops) a writer */
		rc = sqlite3_wal_checkpoint_v2(l->ckpt_db, NULL, SQLITE_CHECKPOINT_PASSIVE, &in_wal, &copied);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY) {
			log_warn("store: checkpoint: %s (the WAL is copied at the next one)", sqlite3_errmsg(l->ckpt_db));
		} else {
			atomic_store(&l->ckpt_copied, copied > 0 ? copied : 0);
			log_debug("store: checkpoint: %d of %d WAL pages in the database", copied, in_wal);
		}
		pthread_mutex_lock(&l->ckpt_lock);
	}
	pthread_mutex_unlock(&l->ckpt_lock);
	return NULL;
}

/* Called by SQLite after each commit, with the WAL's length in pages (it
 * replaces wal_autocheckpoint). The thread is woken for each
 * LITE_CHECKPOINT_PAGES written since what it last copied: the WAL's
 * length alone stays past the mark while writers keep it from beginning
 * again, and woke it at every commit (a checkpoint every few pages, more
 * writes than SQLite's own). A WAL that long anyway (the thread lags, or
 * the writers never pause) is checkpointed here, with the writers held:
 * that one copies all, and the WAL begins again. */
static int
lite_wal_hook(void *arg, sqlite3 *db, const char *name, int pages)
{
	struct lite *l = arg;
	int copied = atomic_load(&l->ckpt_copied);

	if (pages < copied)
		atomic_store(&l->ckpt_copied, copied = 0);   /* the WAL began again */
	if (pages >= LITE_CHECKPOINT_INLINE || (pages >= LITE_CHECKPOINT_PAGES && !l->ckpt_db)) {
		if (sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, NULL, &copied) == SQLITE_OK)
			atomic_store(&l->ckpt_copied, copied > 0 ? copied : 0);
	} else if (pages - copied >= LITE_CHECKPOINT_PAGES) {
		pthread_mutex_lock(&l->ckpt_lock);
		l->ckpt_due = true;
		pthread_cond_signal(&l->ckpt_cond);
		pthread_mutex_unlock(&l->ckpt_lock);
	}
	return SQLITE_OK;
}

/* The checkpointer, on its own connection to path; without one (it cannot
 * open or start: logged), commits checkpoint themselves at the same mark. */
static void
lite_checkpointer_start(struct lite *l, const char *path)
{
	sigset_t all, old;
	int rc;

	sqlite3_wal_hook(l->db, lite_wal_hook, l);
	/* a connection knows the database is in WAL mode once it has read it */
	if (sqlite3_open_v2(path, &l->ckpt_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
	    sqlite3_busy_timeout(l->ckpt_db, STORE_BUSY_TIMEOUT_MS) != SQLITE_OK ||
	    sqlite3_exec(l->ckpt_db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL) != SQLITE_OK) {
		log_warn("store: no checkpoint thread (%s): commits checkpoint the WAL themselves",
		    l->ckpt_db ? sqlite3_errmsg(l->ckpt_db) : "out of memory");
		sqlite3_close(l->ckpt_db);
		l->ckpt_db = NULL;
		return;
	}
	/* with every signal blocked: the store opens before the daemon blocks
	 * the ones its main thread takes with sigwait, and a SIGTERM this
	 * thread took would end the process (test_ha saw exit status -15) */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(&l->ckpt_thread, NULL, lite_checkpointer, l);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		log_warn("store: no checkpoint thread: commits checkpoint the WAL themselves");
		sqlite3_close(l->ckpt_db);
		l->ckpt_db = NULL;
	}
}

static void
lite_checkpointer_stop(struct lite *l)
{
	if (!l->ckpt_db)
		return;
	pthread_mutex_lock(&l->ckpt_lock);
	l->ckpt_stop = true;
	pthread_cond_signal(&l->ckpt_cond);
	pthread_mutex_unlock(&l->ckpt_lock);
	pthread_join(l->ckpt_thread, NULL);
	sqlite3_close(l->ckpt_db);
	l->ckpt_db = NULL;
}

static void
lite_close(struct store *st)
{
	struct lite *l = LITE(st);

	if (l->group)
		lite_group_close(l);
	/* before the last connection closes: that one checkpoints the rest */
	lite_checkpointer_stop(l);
	for (int i = 0; i < STORE_STMT_CACHE && l->cache[i].sql; i++)
		sqlite3_finalize(l->cache[i].stmt);
	sqlite3_close(l->db);
	if (l->wal_fd >= 0)
		close(l->wal_fd);
	free(l->wal_path);
	store_packer_free(l->st.packer);
	pthread_mutex_destroy(&l->lock);
	pthread_mutex_destroy(&l->sync_lock);
	pthread_cond_destroy(&l->sync_cond);
	pthread_mutex_destroy(&l->group_lock);
	pthread_cond_destroy(&l->group_cond);
	pthread_mutex_destroy(&l->ckpt_lock);
	pthread_cond_destroy(&l->ckpt_cond);
	free(l);
}

static int
lite_user_version(struct lite *l)
{
	sqlite3_stmt *stmt;
	int version = -1;

	if (sqlite3_prepare_v2(l->db, "PRAGMA user_version", -1, &stmt, NULL) == SQLITE_OK) {
		if (sqlite3_step(stmt) == SQLITE_ROW)
			version = sqlite3_column_int(stmt, 0);
		sqlite3_finalize(stmt);
	}
	return version;
}

static struct store *
lite_open_rw(const char *data_dir, int cache_kib, char **error_r)
{
	struct lite *l;
	char *path;
	mode_t old;
	int version;

	if (mkdir(data_dir, 0700) < 0 && errno != EEXIST) {
		*error_r = xasprintf("cannot create data_dir %s: %s", data_dir, strerror(errno));
		return NULL;
	}
	l = lite_new();
	path = xasprintf("%s/mailbridge.db", data_dir);
	old = umask(077);           /* database, -wal and -shm files: 0600 */
	if (sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
	    SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
		*error_r = xasprintf("cannot open %s: %s", path, sqlite3_errmsg(l->db));
		umask(old);
		free(path);
		lite_close(&l->st);
		return NULL;
	}
	chmod(path, 0600);
	l->wal_path = xasprintf("%s-wal", path);
	free(path);
	sqlite3_busy_timeout(l->db, STORE_BUSY_TIMEOUT_MS);
	/* WAL for concurrent readers (CLI beside the daemon); NORMAL, with the
	 * writes that acknowledge something synced by lite_sync_upto. 1 KiB
	 * pages (new databases only): most commits change a few small rows and
	 * index entries, and each changed page is a WAL frame; 4 KiB pages
	 * wrote 165 KiB per message to disk in bench/outbound.py, 1 KiB 74. */
	if (lite_functions(l) < 0)
		goto fail;
	if (sqlite3_exec(l->db, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
	    "PRAGMA foreign_keys=ON;", NULL, NULL, NULL) != SQLITE_OK)
		goto fail;
	/* The page cache ([store] cache_kib): SQLite's default is 2,000 KiB,
	 * all of it resident once a burst has filled it. Pages it drops are
	 * read again from the kernel's page cache, not the disk; a 2,000
	 * burst peaked 1.2-2.1 MiB lower at 512 KiB, with its CPU a message
	 * within the noise (bench/outbound.py, README). */
	{
		char *sql = xasprintf("PRAGMA cache_size=-%d", cache_kib);
		int rc = sqlite3_exec(l->db, sql, NULL, NULL, NULL);
		free(sql);
		if (rc != SQLITE_OK)
			goto fail;
	}
	umask(old);
	old = (mode_t)-1;

	if ((version = lite_user_version(l)) < 0)
		goto fail;
	if (version > store_schema_version) {
		*error_r = xasprintf("database schema %d is newer than this mailbridge (%d)",
		    version, store_schema_version);
		lite_close(&l->st);
		return NULL;
	}
	for (; version < store_schema_version; version++) {
		char *sql = xasprintf("BEGIN; %s; PRAGMA user_version=%d; COMMIT;",
		    store_migrations[version].sqlite, version + 1);
		char *msg = NULL;
		int r = sqlite3_exec(l->db, sql, NULL, NULL, &msg);
		free(sql);
		if (r != SQLITE_OK) {
			/* the message first: ROLLBACK clears it */
			*error_r = xasprintf("store: migrating to schema %d: %s", version + 1,
			    msg ? msg : sqlite3_errstr(r));
			sqlite3_free(msg);
			sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
			lite_close(&l->st);
			return NULL;
		}
		log_info("store: migrated schema to version %d", version + 1);
	}
	path = xasprintf("%s/mailbridge.db", data_dir);
	lite_checkpointer_start(l, path);
	free(path);
	return &l->st;
fail:
	if (old != (mode_t)-1)
		umask(old);
	*error_r = xasprintf("store: %s", sqlite3_errmsg(l->db));
	lite_close(&l->st);
	return NULL;
}

/* For commands that only read: the store must exist at this schema. */
static struct store *
lite_open_ro(const char *data_dir, char **error_r)
{
	struct lite *l = lite_new();
	char *path = xasprintf("%s/mailbridge.db", data_dir);
	int version;

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
	if (sqlite3_open_v2(path, &l->db, SQLITE_OPEN_READONLY | SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK ||
	    sqlite3_exec(l->db, "PRAGMA query_only=ON", NULL, NULL, NULL) != SQLITE_OK) {
		*error_r = xasprintf("cannot open %s: %s", path, l->db ? sqlite3_errmsg(l->db) : "out of memory");
		goto fail;
	}
	sqlite3_busy_timeout(l->db, STORE_BUSY_TIMEOUT_MS);
	if (lite_functions(l) < 0 || (version = lite_user_version(l)) < 0) {
		*error_r = xasprintf("cannot read %s: %s", path, sqlite3_errmsg(l->db));
		goto fail;
	}
	if (version != store_schema_version) {
		*error_r = xasprintf("%s is at schema %d and this mailbridge reads %d: %s", path, version,
		    store_schema_version, version < store_schema_version ?
		    "start the service once (it migrates), then run this again" : "this mailbridge is older");
		goto fail;
	}
	free(path);
	return &l->st;
fail:
	free(path);
	lite_close(&l->st);
	return NULL;
}

struct store *
store_sqlite_open(const char *data_dir, bool readonly, int cache_kib, char **error_r)
{
	return readonly ? lite_open_ro(data_dir, error_r) : lite_open_rw(data_dir, cache_kib, error_r);
}

static void
lite_memory(struct store *st, int64_t *heap_r, int64_t *file_r)
{
	int64_t pages = 0, size = 0;
	*heap_r = sqlite3_memory_used();
	store_query_row(st, store_row_int64, &pages, "PRAGMA page_count", "");
	store_query_row(st, store_row_int64, &size, "PRAGMA page_size", "");
	*file_r = pages > 0 && size > 0 ? pages * size : 0;
}

static int
lite_backup(struct store *st, const char *path, int64_t *bytes_r, char **error_r)
{
	char *tmp = xasprintf("%s.tmp", path), *dir = NULL, *slash;
	sqlite3 *dst = NULL;
	struct lite *l = LITE(st);
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
		lite_lock(l);
		/* the copy is of what is committed */
		if (l->group)
			lite_group_close(l);
		if ((b = sqlite3_backup_init(dst, "main", l->db, "main")) != NULL) {
			/* every page in one step: one read snapshot, never restarted */
			rc = sqlite3_backup_step(b, -1);
			sqlite3_backup_finish(b);
		}
		lite_unlock(l);
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

static const struct store_ops lite_ops = {
	.name = "sqlite",
	.shared = false,
	.exec = lite_exec,
	.query = lite_query,
	.tx_begin = lite_tx_begin,
	.tx_step = lite_tx_step,
	.tx_end = lite_tx_end,
	.tx_fail = lite_tx_fail,
	.close = lite_close,
	.backup = lite_backup,
	.memory = lite_memory,
	.col_null = lite_col_null,
	.col_int = lite_col_int,
	.col_str = lite_col_str,
	.col_blob = lite_col_blob,
};
