/* store_pg: the PostgreSQL backend, for several mailbridge instances on
 * one database (libpq: the server's own client library, which keeps the
 * wire protocol, TLS, authentication and the connection string right).
 *
 * A small pool of connections; a call takes a free one for one statement,
 * a transaction holds one on its thread from begin to end. Statements are
 * prepared once per connection, keyed by their SQL text's address (every
 * SQL string in the store is a literal). Parameters are typed from the
 * bind format ('i' int8, 's' text, 'b' bytea) and results come back in
 * binary, so a blob needs no unescaping.
 *
 * The SQL is the aggregate files' own, read by both engines. Translated
 * here: ?N parameters become $N, and the marker STORE_SKIP_LOCKED (a
 * comment to SQLite, which has one writer) becomes FOR UPDATE SKIP LOCKED,
 * so a row one instance is claiming is passed over by the others.
 *
 * Commits are asynchronous (synchronous_commit off, as SQLite's NORMAL)
 * except the durable ones, which wait for the WAL flush on the server (and
 * its synchronous standbys, as the server is configured).
 *
 * Round trips: a statement whose answer nobody waits for (BEGIN, a trace
 * step, RELEASE SAVEPOINT) is kept on its connection and sent in one
 * pipeline (libpq's pipeline mode) with the next one whose answer is
 * awaited, or with the COMMIT. The order is the callers'; a kept one that
 * fails fails the transaction, as it would have at once. A job's state
 * change with its trace event is two round trips, not four. */
#include "store_private.h"
#include "log.h"
#include "util.h"

#include <endian.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PG_STMT_CACHE 160
#define PG_MAX_PARAMS 24
#define PG_RECONNECT_MS 1000      /* a down server is retried this often, not per call */

/* type OIDs (catalog/pg_type_d.h, stable across versions) */
#define PG_BOOLOID 16
#define PG_BYTEAOID 17
#define PG_INT8OID 20
#define PG_INT2OID 21
#define PG_INT4OID 23
#define PG_TEXTOID 25

/* A statement kept for the next pipeline: a prepared one's name with its
 * parameters copied (the caller's may be gone by then), or plain SQL. */
struct pg_later {
	const char *name;
	const char *sql;
	store_row_fn *fn;          /* its rows, when it succeeded; or NULL */
	void *arg;
	int n;
	char *buf;
	const char *values[PG_MAX_PARAMS];
	int lengths[PG_MAX_PARAMS], formats[PG_MAX_PARAMS];
};
#define PG_LATER_MAX 48         /* a group of webhooks' jobs (store_job_add) with BEGIN and COMMIT */

struct pgconn {
	PGconn *conn;
	bool busy;
	bool tx_failed;
	int n_later;
	struct pg_later later[PG_LATER_MAX];
	int64_t next_try;          /* after a failed connect: not before this */
	int n_prepared;
	struct { const char *sql; char types[PG_MAX_PARAMS + 1]; char name[12]; } prepared[PG_STMT_CACHE];
};

struct pg {
	struct store st;           /* first: a struct store * is a struct pg * */
	char *dsn;
	bool readonly;
	int n_conns;
	struct pgconn *conns;
	pthread_mutex_t lock;
	pthread_cond_t free_cond;
};

#define PG(s) ((struct pg *)(s))

/* This thread's open transaction: its connection. */
static __thread struct pgconn *pg_tx;

static const struct store_ops pg_ops;

/* sql with ?N as $N and the SKIP LOCKED marker spelt out (malloc'd). */
static char *
pg_translate(const char *sql)
{
	static const char marker[] = STORE_SKIP_LOCKED;
	static const char locked[] = " FOR UPDATE SKIP LOCKED ";
	size_t n = strlen(sql), o = 0;
	char *out = xmalloc(n * 3 + 1);    /* "?" may become "$12"; the marker grows by 9 of its 15 */
	int next = 1;
	bool quoted = false;

	for (size_t i = 0; i < n; i++) {
		char c = sql[i];
		if (c == '\'')
			quoted = !quoted;
		if (!quoted && strncmp(sql + i, marker, sizeof(marker) - 1) == 0) {
			memcpy(out + o, locked, sizeof(locked) - 1);
			o += sizeof(locked) - 1;
			i += sizeof(marker) - 2;
			continue;
		}
		if (!quoted && c == '?') {
			out[o++] = '$';
			if (sql[i + 1] < '0' || sql[i + 1] > '9')
				o += (size_t)sprintf(out + o, "%d", next++);
			continue;
		}
		out[o++] = c;
	}
	out[o] = '\0';
	return out;
}

static void
pg_log_error(PGconn *conn, const char *what)
{
	const char *m = conn ? PQerrorMessage(conn) : "no connection";
	size_t len = strlen(m);
	while (len && (m[len - 1] == '\n' || m[len - 1] == ' '))
		len--;
	log_error("store: %s: %.*s", what, (int)len, m);
}

/* Runs a statement without parameters (BEGIN, COMMIT, SET ...). */
static bool
pg_simple(struct pgconn *c, const char *sql)
{
	PGresult *res = PQexec(c->conn, sql);
	ExecStatusType s = PQresultStatus(res);
	bool ok = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;

	if (!ok)
		pg_log_error(c->conn, sql);
	PQclear(res);
	return ok;
}

/* The server's notices ("relation ... already exists, skipping") go to
 * our log, not to stderr. */
static void
pg_notice(void *arg, const char *message)
{
	size_t len = strlen(message);
	(void)arg;
	while (len && message[len - 1] == '\n')
		len--;
	log_debug("store: PostgreSQL: %.*s", (int)len, message);
}

/* Connected (reconnecting if the server went away): true, or false while
 * it cannot be reached (tried again after PG_RECONNECT_MS). */
static bool
pg_connect(struct pg *p, struct pgconn *c)
{
	int64_t now;

	if (c->conn && PQstatus(c->conn) == CONNECTION_OK)
		return true;
	now = now_ms();
	if (now < c->next_try)
		return false;
	if (c->conn)
		PQfinish(c->conn);
	c->n_prepared = 0;         /* a new session has none of them */
	c->conn = PQconnectdb(p->dsn);
	PQsetNoticeProcessor(c->conn, pg_notice, NULL);
	/* each commit is asynchronous unless durable (pg_tx_end) */
	if (PQstatus(c->conn) != CONNECTION_OK || !pg_simple(c, p->readonly ?
	    "SET synchronous_commit = off; SET default_transaction_read_only = on" : "SET synchronous_commit = off")) {
		pg_log_error(c->conn, "connect");
		PQfinish(c->conn);
		c->conn = NULL;
		c->next_try = now + PG_RECONNECT_MS;
		return false;
	}
	return true;
}

static struct pgconn *
pg_acquire(struct pg *p)
{
	struct pgconn *c = NULL;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		for (int i = 0; i < p->n_conns && !c; i++)
			if (!p->conns[i].busy)
				c = &p->conns[i];
		if (c)
			break;
		pthread_cond_wait(&p->free_cond, &p->lock);
	}
	c->busy = true;
	pthread_mutex_unlock(&p->lock);
	if (!pg_connect(p, c)) {
		pthread_mutex_lock(&p->lock);
		c->busy = false;
		pthread_cond_signal(&p->free_cond);
		pthread_mutex_unlock(&p->lock);
		return NULL;
	}
	return c;
}

static void
pg_release(struct pg *p, struct pgconn *c)
{
	pthread_mutex_lock(&p->lock);
	c->busy = false;
	pthread_cond_signal(&p->free_cond);
	pthread_mutex_unlock(&p->lock);
}

/* The prepared statement's name for sql on c, preparing it if new (with
 * fmt's parameter types); NULL on error (logged). */
static const char *
pg_prepared(struct pgconn *c, const char *sql, const char *fmt)
{
	Oid types[PG_MAX_PARAMS];
	PGresult *res;
	char *text;
	int i, n = (int)strlen(fmt);
	bool ok;

	if (n > PG_MAX_PARAMS) {
		log_error("store: %d parameters, more than %d", n, PG_MAX_PARAMS);
		return NULL;
	}
	/* one text bound with other types (a NULL passed as text where
	 * another call passes a blob) is another statement: the server types
	 * the parameters at PREPARE */
	for (i = 0; i < c->n_prepared; i++)
		if (c->prepared[i].sql == sql && !strcmp(c->prepared[i].types, fmt))
			return c->prepared[i].name;
	if (i == PG_STMT_CACHE) {
		log_error("store: more than %d statements", PG_STMT_CACHE);
		return NULL;
	}
	for (int k = 0; k < n; k++)
		types[k] = fmt[k] == 'i' ? PG_INT8OID : fmt[k] == 'b' ? PG_BYTEAOID : PG_TEXTOID;
	snprintf(c->prepared[i].name, sizeof(c->prepared[i].name), "s%d", i);
	text = pg_translate(sql);
	res = PQprepare(c->conn, c->prepared[i].name, text, n, types);
	ok = PQresultStatus(res) == PGRES_COMMAND_OK;
	if (!ok)
		log_error("store: prepare: %s: %s", PQresultErrorMessage(res), text);
	PQclear(res);
	free(text);
	if (!ok)
		return NULL;
	c->prepared[i].sql = sql;
	memcpy(c->prepared[i].types, fmt, (size_t)n + 1);   /* fmt may be the caller's buffer */
	c->n_prepared++;
	return c->prepared[i].name;
}

static void
pg_row_init(struct store_row *row, PGresult *res, int i)
{
	row->ops = &pg_ops;
	row->impl = res;
	row->row = i;
}

/* A statement's parameters from the bind format (store_private.h):
 * values point into the caller's arguments, or into ints. The count, or
 * -1 (logged). */
static int
pg_bind(const char *fmt, va_list ap, const char **values, int *lengths, int *formats,
    char (*ints)[24])
{
	const struct store_val *vals = NULL;
	int n;

	if (*fmt == '*') {
		vals = va_arg(ap, const struct store_val *);
		fmt++;
	}
	n = (int)strlen(fmt);
	if (n > PG_MAX_PARAMS) {
		log_error("store: %d parameters, more than %d", n, PG_MAX_PARAMS);
		return -1;
	}
	for (int k = 0; k < n; k++) {
		formats[k] = 0;
		lengths[k] = 0;
		if (vals && vals[k].null) {
			values[k] = NULL;
		} else if (vals && fmt[k] == 'i') {
			snprintf(ints[k], sizeof(ints[k]), "%lld", (long long)vals[k].i);
			values[k] = ints[k];
		} else if (vals && fmt[k] == 'b') {
			values[k] = vals[k].p;
			lengths[k] = (int)vals[k].len;
			formats[k] = 1;
		} else if (vals) {
			values[k] = vals[k].p;
		} else if (fmt[k] == 'i') {
			snprintf(ints[k], sizeof(ints[k]), "%lld", (long long)va_arg(ap, int64_t));
			values[k] = ints[k];
		} else if (fmt[k] == 'b') {
			values[k] = va_arg(ap, const void *);
			lengths[k] = (int)va_arg(ap, size_t);
			formats[k] = 1;
		} else {
			values[k] = va_arg(ap, const char *);
		}
	}
	return n;
}

/* The bind format without the array marker: what pg_prepared types by. */
static const char *
pg_types(const char *fmt)
{
	return *fmt == '*' ? fmt + 1 : fmt;
}

static void
pg_later_clear(struct pgconn *c)
{
	for (int i = 0; i < c->n_later; i++)
		free(c->later[i].buf);
	c->n_later = 0;
}

static bool pg_flush(struct pgconn *c);

/* Keeps a statement for the next pipeline: plain sql (name NULL), or a
 * prepared one with n parameters, copied. False on error (logged). */
static bool
pg_keep(struct pgconn *c, const char *name, const char *sql, int n, const char *const *values,
    const int *lengths, const int *formats)
{
	struct pg_later *l;
	size_t size = 0;
	char *p;

	if (c->n_later == PG_LATER_MAX && !pg_flush(c))
		return false;
	l = &c->later[c->n_later++];
	l->name = name;
	l->sql = sql;
	l->fn = NULL;
	l->arg = NULL;
	l->n = n;
	for (int k = 0; k < n; k++)
		if (values[k])
			size += formats[k] ? (size_t)lengths[k] : strlen(values[k]) + 1;
	p = l->buf = n ? xmalloc(size ? size : 1) : NULL;
	for (int k = 0; k < n; k++) {
		size_t len = !values[k] ? 0 : formats[k] ? (size_t)lengths[k] : strlen(values[k]) + 1;
		l->lengths[k] = lengths[k];
		l->formats[k] = formats[k];
		l->values[k] = values[k] ? p : NULL;
		if (len)
			memcpy(p, values[k], len);
		p += len;
	}
	return true;
}

static int
pg_send(PGconn *conn, const char *name, const char *sql, int n, const char *const *values, const int *lengths,
    const int *formats)
{
	if (name)
		return PQsendQueryPrepared(conn, name, n, values, lengths, formats, 1);
	return PQsendQueryParams(conn, sql, 0, NULL, NULL, NULL, NULL, 1);
}

/* The answer to one statement of a pipeline (its first result; the rest
 * read and dropped), or NULL when the connection failed. */
static PGresult *
pg_answer(PGconn *conn)
{
	PGresult *res = PQgetResult(conn), *more;

	if (res && PQresultStatus(res) != PGRES_PIPELINE_SYNC)
		while ((more = PQgetResult(conn)) != NULL)
			PQclear(more);
	return res;
}

/* Sends the kept statements and then one more (a prepared statement's
 * name, or plain sql; neither: none) in one pipeline, and reads every
 * answer. Returns the last one's result (NULL if none, or when the
 * connection failed); *kept_ok says whether the kept ones all succeeded
 * (an error is logged). With nothing kept, a plain call. */
static PGresult *
pg_pipeline(struct pgconn *c, const char *name, const char *sql, int n, const char *const *values,
    const int *lengths, const int *formats, bool *kept_ok)
{
	PGresult *res = NULL, *r;
	int k, sent = 0;
	bool ok = true;

	*kept_ok = true;
	if (c->n_later == 0)
		return name ? PQexecPrepared(c->conn, name, n, values, lengths, formats, 1) : sql ? PQexec(c->conn, sql) :
		    NULL;
	if (!PQenterPipelineMode(c->conn)) {
		pg_log_error(c->conn, "pipeline");
		pg_later_clear(c);
		*kept_ok = false;
		return NULL;
	}
	for (k = 0; k < c->n_later && ok; k++, sent++) {
		struct pg_later *l = &c->later[k];
		ok = pg_send(c->conn, l->name, l->sql, l->n, l->values, l->lengths, l->formats) == 1;
	}
	if (ok && (name || sql))
		ok = pg_send(c->conn, name, sql, n, values, lengths, formats) == 1;
	if (ok && (name || sql))
		sent++;
	if (!ok || PQpipelineSync(c->conn) != 1) {
		/* the connection is lost: pg_connect opens a new one next time */
		pg_log_error(c->conn, "pipeline");
		pg_later_clear(c);
		*kept_ok = false;
		PQfinish(c->conn);
		c->conn = NULL;
		return NULL;
	}
	for (k = 0; k < sent; k++) {
		if ((r = pg_answer(c->conn)) == NULL)
			break;
		if (k < c->n_later) {
			ExecStatusType s = PQresultStatus(r);
			if (s != PGRES_COMMAND_OK && s != PGRES_TUPLES_OK) {
				if (*kept_ok && s != PGRES_PIPELINE_ABORTED)
					log_error("store: %s", PQresultErrorMessage(r));
				*kept_ok = false;
			} else if (s == PGRES_TUPLES_OK && c->later[k].fn) {
				struct store_row row;
				for (int i = 0; i < PQntuples(r); i++) {
					pg_row_init(&row, r, i);
					c->later[k].fn(&row, c->later[k].arg);
				}
			}
			PQclear(r);
		} else {
			res = r;
		}
	}
	/* the sync's own result, then out of pipeline mode */
	if (k < sent || (r = pg_answer(c->conn)) == NULL || PQresultStatus(r) != PGRES_PIPELINE_SYNC ||
	    !PQexitPipelineMode(c->conn)) {
		pg_log_error(c->conn, "pipeline");
		*kept_ok = false;
		PQfinish(c->conn);
		c->conn = NULL;
	}
	if (k == sent)
		PQclear(r);
	pg_later_clear(c);
	return res;
}

/* Sends what is kept, alone: true when it all succeeded. */
static bool
pg_flush(struct pgconn *c)
{
	bool ok;

	pg_pipeline(c, NULL, NULL, 0, NULL, NULL, NULL, &ok);
	return ok;
}

/* One statement on c (after the kept ones): up to max rows to fn. Returns
 * the rows changed (or, with fn, handed over), 0 on a uniqueness or
 * foreign-key conflict when conflict_ok, or -1 (logged). */
static int
pg_run(struct pgconn *c, bool conflict_ok, int max, store_row_fn *fn, void *arg, const char *sql, const char *fmt,
    va_list ap)
{
	const char *values[PG_MAX_PARAMS];
	int lengths[PG_MAX_PARAMS], formats[PG_MAX_PARAMS];
	char ints[PG_MAX_PARAMS][24];
	int n, ret = -1;
	const char *name;
	PGresult *res;
	ExecStatusType s;
	bool kept_ok;

	if ((name = pg_prepared(c, sql, pg_types(fmt))) == NULL ||
	    (n = pg_bind(fmt, ap, values, lengths, formats, ints)) < 0)
		return -1;
	res = pg_pipeline(c, name, NULL, n, values, lengths, formats, &kept_ok);
	if (!kept_ok) {
		PQclear(res);
		return -1;
	}
	if (!res) {
		pg_log_error(c->conn, "statement");
		return -1;
	}
	s = PQresultStatus(res);
	if (s == PGRES_TUPLES_OK && fn) {
		struct store_row row;
		int rows = PQntuples(res);
		for (ret = 0; ret < rows && ret < max; ret++) {
			pg_row_init(&row, res, ret);
			fn(&row, arg);
		}
	} else if (s == PGRES_TUPLES_OK || s == PGRES_COMMAND_OK) {
		const char *t = PQcmdTuples(res);
		ret = *t ? atoi(t) : 0;
	} else {
		const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		/* class 23: integrity constraint violation */
		if (conflict_ok && state && strncmp(state, "23", 2) == 0)
			ret = 0;
		else
			log_error("store: %s", PQresultErrorMessage(res));
	}
	PQclear(res);
	return ret;
}

/* The kept statements, then the commit (waiting for the WAL's flush when
 * durable), in one round trip: true committed. */
static bool
pg_commit(struct pgconn *c, bool durable)
{
	PGresult *res = NULL;
	bool kept_ok = !durable || pg_keep(c, NULL, "SET LOCAL synchronous_commit = on", 0, NULL, NULL, NULL);
	bool ok;

	if (kept_ok)
		res = pg_pipeline(c, NULL, "COMMIT", 0, NULL, NULL, NULL, &kept_ok);
	/* a failed transaction's COMMIT answers ROLLBACK */
	ok = kept_ok && PQresultStatus(res) == PGRES_COMMAND_OK && !strcmp(PQcmdStatus(res), "COMMIT");
	if (!ok && kept_ok)
		pg_log_error(c->conn, "commit");
	PQclear(res);
	pg_later_clear(c);
	return ok;
}

static int
pg_exec(struct store *st, bool durable, const char *sql, const char *fmt, va_list ap)
{
	struct pg *p = PG(st);
	struct pgconn *c = pg_tx ? pg_tx : pg_acquire(p);
	int r;

	if (!c)
		return -1;
	if (!durable || c == pg_tx) {
		r = pg_run(c, true, 0, NULL, NULL, sql, fmt, ap);
	} else {
		/* its own transaction, to commit it synchronously (BEGIN goes
		 * with the statement) */
		r = -1;
		if (pg_keep(c, NULL, "BEGIN", 0, NULL, NULL, NULL)) {
			r = pg_run(c, true, 0, NULL, NULL, sql, fmt, ap);
			pg_later_clear(c);
			/* a conflict (0) left the transaction failed: nothing to commit */
			if (r > 0 || (r == 0 && c->conn && PQtransactionStatus(c->conn) == PQTRANS_INTRANS)) {
				if (!pg_commit(c, true))
					r = -1;
			}
			if (c->conn && PQtransactionStatus(c->conn) != PQTRANS_IDLE)
				pg_simple(c, "ROLLBACK");
		}
	}
	if (c != pg_tx)
		pg_release(p, c);
	return r;
}

static int
pg_query(struct store *st, int max, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap)
{
	struct pg *p = PG(st);
	struct pgconn *c = pg_tx ? pg_tx : pg_acquire(p);
	int r;

	if (!c)
		return -1;
	r = pg_run(c, false, max, fn, arg, sql, fmt, ap);
	if (c != pg_tx)
		pg_release(p, c);
	return r;
}

static int
pg_tx_begin(struct store *st, const char *what)
{
	struct pg *p = PG(st);
	struct pgconn *c;

	if (pg_tx) {
		log_error("store: %s: a transaction is already open on this thread", what);
		return -1;
	}
	if ((c = pg_acquire(p)) == NULL)
		return -1;
	/* sent with the first statement */
	if (!pg_keep(c, NULL, "BEGIN", 0, NULL, NULL, NULL)) {
		pg_release(p, c);
		return -1;
	}
	c->tx_failed = false;
	pg_tx = c;
	return 0;
}

static int
pg_tx_step(struct store *st, bool extra, int max, store_row_fn *fn, void *arg, const char *sql, const char *fmt,
    va_list ap)
{
	struct pgconn *c = pg_tx;
	int r;

	(void)st;
	if (!c || c->tx_failed)
		return -1;
	if (!extra) {
		if ((r = pg_run(c, false, max, fn, arg, sql, fmt, ap)) < 0)
			c->tx_failed = true;
		return r;
	}
	/* an extra's failure is undone alone: PostgreSQL aborts the whole
	 * transaction on an error, unless it is inside a savepoint. The
	 * savepoint goes in the statement's pipeline, its release in the next */
	if (!pg_keep(c, NULL, "SAVEPOINT extra", 0, NULL, NULL, NULL)) {
		c->tx_failed = true;
		return -1;
	}
	r = pg_run(c, false, max, fn, arg, sql, fmt, ap);
	if (r < 0 && !c->conn)
		c->tx_failed = true;
	else if (r >= 0 ? !pg_keep(c, NULL, "RELEASE SAVEPOINT extra", 0, NULL, NULL, NULL) :
	    !pg_simple(c, "ROLLBACK TO SAVEPOINT extra"))
		c->tx_failed = true;
	return r;
}

/* A step whose answer is not waited for: kept for the next pipeline, its
 * rows to fn when they come. 0, or -1 (the transaction fails). */
static int
pg_tx_trace(struct store *st, store_row_fn *fn, void *arg, const char *sql, const char *fmt, va_list ap)
{
	struct pgconn *c = pg_tx;
	const char *values[PG_MAX_PARAMS], *name;
	int lengths[PG_MAX_PARAMS], formats[PG_MAX_PARAMS], n;
	char ints[PG_MAX_PARAMS][24];

	(void)st;
	if (!c || c->tx_failed)
		return -1;
	if ((name = pg_prepared(c, sql, pg_types(fmt))) == NULL ||
	    (n = pg_bind(fmt, ap, values, lengths, formats, ints)) < 0 ||
	    !pg_keep(c, name, NULL, n, values, lengths, formats)) {
		c->tx_failed = true;
		return -1;
	}
	c->later[c->n_later - 1].fn = fn;
	c->later[c->n_later - 1].arg = arg;
	return 0;
}

static int
pg_tx_end(struct store *st, const char *what, bool durable)
{
	struct pgconn *c = pg_tx;
	bool ok;

	if (!c)
		return -1;
	ok = !c->tx_failed;
	/* the kept statements, then the commit, in one round trip; nothing
	 * at all when only the BEGIN was kept (nothing was done) */
	if (ok && !(c->n_later == 1 && c->later[0].sql && !strcmp(c->later[0].sql, "BEGIN")) &&
	    !(ok = pg_commit(c, durable)))
		log_error("store: %s: commit failed", what);
	pg_later_clear(c);
	if (!ok && c->conn && PQtransactionStatus(c->conn) != PQTRANS_IDLE)
		pg_simple(c, "ROLLBACK");
	pg_tx = NULL;
	pg_release(PG(st), c);
	return ok ? 0 : -1;
}

static void
pg_tx_fail(struct store *st)
{
	(void)st;
	if (pg_tx)
		pg_tx->tx_failed = true;
}

static bool
pg_col_null(const struct store_row *r, int i)
{
	return PQgetisnull(r->impl, r->row, i);
}

static int64_t
pg_col_int(const struct store_row *r, int i)
{
	const char *v = PQgetvalue(r->impl, r->row, i);
	uint64_t u64;
	uint32_t u32;
	uint16_t u16;

	if (PQgetisnull(r->impl, r->row, i))
		return 0;
	switch (PQftype(r->impl, i)) {
	case PG_INT8OID:
		memcpy(&u64, v, 8);
		return (int64_t)be64toh(u64);
	case PG_INT4OID:
		memcpy(&u32, v, 4);
		return (int32_t)be32toh(u32);
	case PG_INT2OID:
		memcpy(&u16, v, 2);
		return (int16_t)be16toh(u16);
	case PG_BOOLOID:
		return v[0] != 0;
	default:
		log_error("store: column %d is not an integer (type %u)", i, (unsigned)PQftype(r->impl, i));
		return 0;
	}
}

static const char *
pg_col_str(const struct store_row *r, int i)
{
	/* binary text is the text itself, and libpq ends every value with a NUL */
	return PQgetisnull(r->impl, r->row, i) ? NULL : PQgetvalue(r->impl, r->row, i);
}

static const void *
pg_col_blob(const struct store_row *r, int i, size_t *len_r)
{
	if (PQgetisnull(r->impl, r->row, i)) {
		*len_r = 0;
		return NULL;
	}
	*len_r = (size_t)PQgetlength(r->impl, r->row, i);
	return PQgetvalue(r->impl, r->row, i);
}

static void
pg_close(struct store *st)
{
	struct pg *p = PG(st);

	for (int i = 0; i < p->n_conns; i++)
		if (p->conns[i].conn)
			PQfinish(p->conns[i].conn);
	free(p->conns);
	free(p->dsn);
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->free_cond);
	free(p);
}

static int
pg_backup(struct store *st, const char *path, int64_t *bytes_r, char **error_r)
{
	(void)st;
	(void)path;
	*bytes_r = 0;
	*error_r = xstrdup("the store is PostgreSQL: back it up with pg_dump, or the server's own replication");
	return -1;
}

static void
pg_memory(struct store *st, int64_t *heap_r, int64_t *file_r)
{
	int64_t size = 0;
	*heap_r = 0;
	store_query_row(st, store_row_int64, &size, "SELECT pg_database_size(current_database())", "");
	*file_r = size > 0 ? size : 0;
}

/* The schema version, 0 before the first migration, -1 on error. */
static int
pg_schema_version(struct pgconn *c)
{
	PGresult *res = PQexec(c->conn, "SELECT COALESCE(max(version), 0) FROM mb_schema");
	int v = -1;

	if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
		v = atoi(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

/* Brings the schema to this binary's version, under an advisory lock:
 * instances starting together migrate once. NULL, or the error. */
static char *
pg_migrate(struct pgconn *c)
{
	int version, first_pg = 0;
	char *err = NULL;

	while (first_pg < store_schema_version && !store_migrations[first_pg].pg)
		first_pg++;
	/* "mailbridge" in ASCII: the lock's key */
	if (!pg_simple(c, "SELECT pg_advisory_lock(7161124203665933669)") ||
	    !pg_simple(c, "CREATE TABLE IF NOT EXISTS mb_schema (version INTEGER NOT NULL, at TIMESTAMPTZ NOT NULL "
	    "DEFAULT now())"))
		return xasprintf("store: preparing the schema: %s", PQerrorMessage(c->conn));
	if ((version = pg_schema_version(c)) < 0)
		err = xasprintf("store: reading the schema version: %s", PQerrorMessage(c->conn));
	else if (version > store_schema_version)
		err = xasprintf("database schema %d is newer than this mailbridge (%d)", version, store_schema_version);
	/* a new database starts at the first entry written for PostgreSQL */
	if (!err && version < first_pg)
		version = first_pg;
	for (; !err && version < store_schema_version; version++) {
		char *sql = xasprintf("BEGIN; %s; INSERT INTO mb_schema (version) VALUES (%d); COMMIT;",
		    store_migrations[version].pg, version + 1);
		PGresult *res = PQexec(c->conn, sql);
		free(sql);
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			err = xasprintf("store: migrating to schema %d: %s", version + 1, PQresultErrorMessage(res));
			PQclear(res);
			pg_simple(c, "ROLLBACK");
			break;
		}
		PQclear(res);
		log_info("store: migrated schema to version %d", version + 1);
	}
	pg_simple(c, "SELECT pg_advisory_unlock(7161124203665933669)");
	return err;
}

struct store *
store_pg_open(const char *dsn, int pool, bool readonly, char **error_r)
{
	struct pg *p = xcalloc(1, sizeof(*p));
	struct pgconn *c;
	int version;

	p->st.ops = &pg_ops;
	p->st.be = p;
	p->dsn = xstrdup(dsn);
	p->readonly = readonly;
	p->n_conns = pool;
	p->conns = xcalloc((size_t)pool, sizeof(*p->conns));
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->free_cond, NULL);
	c = &p->conns[0];
	c->busy = true;
	c->conn = PQconnectdb(dsn);
	PQsetNoticeProcessor(c->conn, pg_notice, NULL);
	if (PQstatus(c->conn) != CONNECTION_OK) {
		const char *m = PQerrorMessage(c->conn);
		size_t len = strlen(m);
		while (len && m[len - 1] == '\n')
			len--;
		/* libpq's message names host and port, never the password */
		*error_r = xasprintf("cannot connect to PostgreSQL: %.*s", (int)len, m);
		pg_close(&p->st);
		return NULL;
	}
	if (readonly) {
		version = pg_schema_version(c);
		if (version != store_schema_version) {
			*error_r = version < 0 ? xstrdup("no mailbridge schema in this database: mailbridge has not run "
			    "with this dsn yet") : xasprintf("the database is at schema %d and this mailbridge reads %d",
			    version, store_schema_version);
			pg_close(&p->st);
			return NULL;
		}
	} else if ((*error_r = pg_migrate(c)) != NULL) {
		pg_close(&p->st);
		return NULL;
	}
	PQfinish(c->conn);         /* reopened with the session settings on first use */
	c->conn = NULL;
	c->busy = false;
	return &p->st;
}

static const struct store_ops pg_ops = {
	.name = "postgresql",
	.shared = true,
	.pipelined = true,
	.exec = pg_exec,
	.query = pg_query,
	.tx_begin = pg_tx_begin,
	.tx_step = pg_tx_step,
	.tx_end = pg_tx_end,
	.tx_trace = pg_tx_trace,
	.tx_fail = pg_tx_fail,
	.close = pg_close,
	.backup = pg_backup,
	.memory = pg_memory,
	.col_null = pg_col_null,
	.col_int = pg_col_int,
	.col_str = pg_col_str,
	.col_blob = pg_col_blob,
};
