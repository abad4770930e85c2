/* store_jobs: outbound jobs, their payloads and their status reports (store_jobs.h). */
#include "store_private.h"
#include "store_jobs.h"
#include "store_threads.h"
#include "log.h"
#include "util.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

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

/* no payload: the claim (or store_job_payload()) loads it */
#define JOB_COLUMNS "id, message_id, location_id, type, email_message_id, state, attempts, next_at, " \
	"created_at, last_code, last_error, rfc_message_id, report_status, report_state, " \
	"report_attempts, report_error, rcpt_state, uncertain"

/* The three state columns of a row (state, report_state, report_status). */
static void
fsm_from_cols(const struct store_row *s, int job, int report, int status, struct job_fsm *f)
{
	f->job = job_state_parse(store_col_str(s, job));
	f->report = job_report_state_parse(store_col_str(s, report));
	f->status = job_report_status_parse(store_col_str(s, status));
}

static struct job *
job_from_row(const struct store_row *s)
{
	struct job *j = xcalloc(1, sizeof(*j));
	j->id = store_col_int(s, 0);
	j->message_id = store_col_text(s, 1);
	j->location_id = store_col_text(s, 2);
	j->type = store_col_text(s, 3);
	j->email_message_id = store_col_text(s, 4);
	fsm_from_cols(s, 5, 13, 12, &j->fsm);
	j->attempts = store_col_int(s, 6);
	j->next_at = store_col_int(s, 7);
	j->created_at = store_col_int(s, 8);
	j->last_code = store_col_int(s, 9);
	j->last_error = store_col_text(s, 10);
	j->rfc_message_id = store_col_text(s, 11);
	j->report_attempts = store_col_int(s, 14);
	j->report_error = store_col_text(s, 15);
	j->rcpt_state = store_col_text(s, 16);
	j->uncertain = store_col_int(s, 17) != 0;
	return j;
}

static void
row_job(const struct store_row *stmt, void *arg)
{
	*(struct job **)arg = job_from_row(stmt);
}

/* Column i, a payload: its text, packed or not (store_pack.c). NULL when
 * it is NULL, or packed and does not unpack (logged). */
static char *
col_payload(const struct store_row *r, int i, struct store_packer *packer)
{
	const void *p;
	size_t len;
	char *text;

	if (store_col_null(r, i))
		return NULL;
	p = store_col_blob(r, i, &len);
	if (!(text = store_unpack(packer, p ? p : "", len)))
		log_error("store: a stored payload does not unpack (%zu bytes)", len);
	return text;
}

struct payload_read {
	struct store_packer *packer;
	char **payload_r;
};

static void
row_payload(const struct store_row *stmt, void *arg)
{
	struct payload_read *pr = arg;
	*pr->payload_r = col_payload(stmt, 0, pr->packer);
}

/* A claim's rows, each with its payload: every row the UPDATE returned
 * is claimed, so every one is kept. */
struct claimed {
	struct store_packer *packer;
	struct job **jobs;
	int n, cap;
};

static void
row_claimed(const struct store_row *stmt, void *arg)
{
	struct claimed *c = arg;
	struct job *j = job_from_row(stmt);

	j->payload = col_payload(stmt, 18, c->packer);
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 4;
		c->jobs = xrealloc(c->jobs, (size_t)c->cap * sizeof(*c->jobs));
	}
	c->jobs[c->n++] = j;
}

static int
job_due_cmp(const void *a, const void *b)
{
	const struct job *x = *(struct job *const *)a, *y = *(struct job *const *)b;

	if (x->next_at != y->next_at)
		return x->next_at < y->next_at ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
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

/* Webhooks' jobs added in groups, on an engine whose steps go in one
 * pipeline (PostgreSQL; SQLite commits its writes in groups itself). A
 * webhook's add that finds another group being written waits for it, and
 * the first to see it done writes the next group: every add waiting then,
 * up to ADD_GROUP_MAX and ADD_GROUP_BYTES of payloads, in one transaction
 * of one round trip, with one WAL flush for all. Alone, an add is written
 * at once. Each add is one statement (store_job_add's three in one), so
 * that nothing waits for an answer before the commit. A group that fails
 * is written again an add at a time (job_add_group): a webhook the
 * database refuses gets its 503 alone, and HighLevel sends it again. */

/* A webhook's job, unless its messageId is known: ?1 messageId, ?2
 * location, ?3 type, ?4 emailMessageId, ?5 now, ?6 its fingerprint
 * (store_fp). Returns the new job's id. A duplicate is a success, stored
 * once: its job is still here (UNIQUE message_id), or the prune left its
 * fingerprint in the replay guard (kept replay_days). Only read here: the
 * fingerprint is written when the job goes, in the prune's batch. */
#define JOB_ADD_INSERT "INSERT INTO jobs (message_id, location_id, type, email_message_id, state, next_at, " \
	"created_at, updated_at) SELECT ?1, ?2, ?3, ?4, '" JOB_NAME_QUEUED "', ?5, ?5, ?5 " \
	"WHERE NOT EXISTS (SELECT 1 FROM replay_guard WHERE fp = ?6) " \
	"ON CONFLICT(message_id) DO NOTHING RETURNING id"

#define ADD_GROUP_MAX   32
#define ADD_GROUP_BYTES (4u << 20)
#define ADD_WRITERS     2          /* groups written at once, on connections of their own */

struct job_add {
	const char *message_id, *location_id, *type, *email_message_id, *payload;
	size_t payload_len;        /* measured before the queue's lock is taken */
	const unsigned char *fp;   /* STORE_FP_LEN bytes (store_fp) */
	int64_t now;
	int64_t id;                /* the new job's, or -1: a duplicate */
	int r;                     /* store_job_add's */
	bool done;
	struct job_add *next;
};

struct job_adds {
	pthread_mutex_t lock;
	pthread_cond_t done;
	struct job_add *head, **tail;
	int writing;               /* groups being written */
	int64_t groups, adds;      /* written so far (store_job_add_groups) */
};

struct job_adds *
store_job_adds_new(void)
{
	struct job_adds *a = xcalloc(1, sizeof(*a));

	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->done, NULL);
	a->tail = &a->head;
	return a;
}

void
store_job_adds_free(struct job_adds *a)
{
	if (!a)
		return;
	pthread_cond_destroy(&a->done);
	pthread_mutex_destroy(&a->lock);
	free(a);
}

void
store_job_add_groups(struct store *st, int64_t *groups_r, int64_t *adds_r)
{
	struct job_adds *a = st->adds;

	*groups_r = *adds_r = 0;
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	*groups_r = a->groups;
	*adds_r = a->adds;
	pthread_mutex_unlock(&a->lock);
}

/* One group, in one transaction: each add's job (unless the messageId is
 * known), its payload and its first event in one statement, whose
 * RETURNING says which adds made a job. True committed. */
static bool
job_add_write(struct store *st, struct job_add *g)
{
	bool ok = store_tx_begin(st, "job add") == 0;

	for (struct job_add *m = g; ok && m; m = m->next) {
		m->id = -1;
		ok = store_tx_later(st, store_row_int64, &m->id,
		    "WITH j AS (" JOB_ADD_INSERT "), "
		    "p AS (INSERT INTO job_payload (job_id, payload) SELECT id, ?7 FROM j), "
		    "e AS (INSERT INTO " EVENT_TABLE " SELECT ?5, ?1, 'webhook', "
		    "CASE WHEN EXISTS (SELECT 1 FROM j) THEN ?3 ELSE 'duplicate (ignored)' END, ?2) "
		    "SELECT id FROM j", "ssssibs", m->message_id, m->location_id, m->type, m->email_message_id, m->now,
		    m->fp, (size_t)STORE_FP_LEN, m->payload) == 0;
	}
	if (!ok)
		store_tx_fail(st);
	/* durable before any of the webhooks is acknowledged */
	ok = store_tx_end(st, "job add", true) == 0 && ok;
	for (struct job_add *m = g; m; m = m->next)
		m->r = !ok ? -1 : m->id >= 0 ? 1 : 0;
	return ok;
}

/* A group that failed is written again one add at a time, so that one
 * add the database refuses fails its own webhook, not the others'. */
static void
job_add_group(struct store *st, struct job_add *g)
{
	if (job_add_write(st, g) || !g->next)
		return;
	for (struct job_add *m = g, *next; m; m = next) {
		next = m->next;
		m->next = NULL;
		job_add_write(st, m);
		m->next = next;
	}
}

static int
job_add_grouped(struct store *st, struct job_add *me)
{
	struct job_adds *a = st->adds;
	int r;

	pthread_mutex_lock(&a->lock);
	*a->tail = me;
	a->tail = &me->next;
	while (!me->done) {
		struct job_add *g, **cut;
		size_t bytes = 0;
		int n = 0;

		/* wait while the writers are busy, or while this add is in a
		 * group being written (nothing left to lead) */
		if (a->writing >= ADD_WRITERS || !a->head) {
			pthread_cond_wait(&a->done, &a->lock);
			continue;
		}
		/* the next group: the oldest waiting adds */
		g = a->head;
		for (cut = &a->head; *cut && n < ADD_GROUP_MAX; cut = &(*cut)->next, n++) {
			if (n > 0 && bytes + (*cut)->payload_len > ADD_GROUP_BYTES)
				break;
			bytes += (*cut)->payload_len;
		}
		a->head = *cut;
		*cut = NULL;
		if (!a->head)
			a->tail = &a->head;
		a->writing++;
		pthread_mutex_unlock(&a->lock);
		job_add_group(st, g);
		pthread_mutex_lock(&a->lock);
		/* each member's own thread may return from here on */
		for (struct job_add *m = g; m; m = m->next)
			m->done = true;
		a->groups++;
		a->adds += n;
		a->writing--;
		pthread_cond_broadcast(&a->done);
	}
	r = me->r;
	pthread_mutex_unlock(&a->lock);
	return r;
}

int
store_job_add(struct store *st, const char *message_id, const char *location_id,
    const char *type, const char *email_message_id, const char *payload)
{
	int64_t now = now_ms();
	int64_t id = -1;
	unsigned char fp[STORE_FP_LEN];
	size_t packed_len = 0;
	void *packed;
	int r;

	/* computed here, not by mb_fp in the statement: on PostgreSQL that
	 * was a nested SQL function, planned again on every call (0.06 ms a
	 * message, pg_stat_statements in bench/outbound.py) */
	store_fp("job", message_id, fp);
	if (st->adds && !st->packer) {
		struct job_add me = { .message_id = message_id, .location_id = location_id, .type = type,
			.email_message_id = email_message_id, .payload = payload, .payload_len = strlen(payload),
			.fp = fp, .now = now };
		return job_add_grouped(st, &me);
	}
	/* packed before the store is taken, so that no other write waits
	 * for it */
	packed = st->packer ? store_pack(st->packer, payload, strlen(payload), &packed_len) : NULL;
	if (store_tx_begin(st, "job add") < 0) {
		free(packed);
		return -1;
	}
	r = store_tx_row(st, store_row_int64, &id, JOB_ADD_INSERT, "ssssib", message_id, location_id, type, email_message_id, now,
	    fp, (size_t)STORE_FP_LEN);
	/* the payload (a new job's id: no key to meet) and the journey's first
	 * event ride in the same commit, unanswered (sent with the COMMIT on
	 * PostgreSQL): a failure fails the commit */
	if (r == 1 && packed)
		store_tx_trace(st, "INSERT INTO job_payload (job_id, payload) VALUES (?1, ?2)", "ib",
		    id, packed, packed_len);
	else if (r == 1)
		store_tx_trace(st, "INSERT INTO job_payload (job_id, payload) VALUES (?1, ?2)", "is",
		    id, payload);
	free(packed);
	store_tx_trace(st, EVENT_INSERT, "issss", now, message_id, "webhook", r == 1 ? type : "duplicate (ignored)",
	    location_id);
	/* durable before the webhook is acknowledged, duplicates included */
	if (store_tx_end(st, "job add", true) < 0)
		return -1;
	return r;
}

int
store_job_payload(struct store *st, struct job *job)
{
	struct payload_read pr = { st->packer, &job->payload };
	int r;

	if (job->payload)
		return 1;
	r = store_query_row(st, row_payload, &pr, "SELECT payload FROM job_payload WHERE job_id=?1", "i", job->id);
	return r == 1 && !job->payload ? -1 : r;
}

int
store_job_claim(struct store *st, int64_t now, enum job_state from, enum job_state to, int max,
    struct job ***jobs_r)
{
	struct claimed c = { st->packer, NULL, 0, 0 };
	int r;

	/* The ids are picked once, in a materialized CTE: PostgreSQL may run a
	 * LIMIT ... SKIP LOCKED subquery under IN more than once, and each run
	 * skips the rows the last one locked, so the UPDATE took more than
	 * max. The picking SELECT skips rows another instance is claiming;
	 * the rows it returns are locked, their state tested again on the
	 * newest version (PostgreSQL's FOR UPDATE; SQLite has one writer).
	 * So the UPDATE names them by id alone: with the state test there too,
	 * PostgreSQL could take them through jobs_due_id, walking every queued
	 * job for the few picked (its statistics in a burst say one queued
	 * job: 3 ms a claim, auto_explain in bench/outbound.py). Each row comes
	 * with its payload: the claimer works on it next (one round trip). */
	r = store_query_rows(st, row_claimed, &c,
	    "WITH picked AS MATERIALIZED (SELECT id FROM jobs WHERE state=?2 AND next_at<=?1 "
	    "ORDER BY next_at, id LIMIT ?5" STORE_SKIP_LOCKED ") "
	    "UPDATE jobs SET state=?3, attempts=attempts+1, updated_at=?1, owner=?4 "
	    "WHERE id IN (SELECT id FROM picked) RETURNING " JOB_COLUMNS ", "
	    "(SELECT payload FROM job_payload WHERE job_id=jobs.id)", "isssi", now,
	    job_state_name(from), job_state_name(to), st->instance, (int64_t)max);
	if (r < 0) {
		/* nothing is claimed: the transaction did not commit */
		for (int i = 0; i < c.n; i++)
			store_job_free(c.jobs[i]);
		free(c.jobs);
		*jobs_r = NULL;
		return -1;
	}
	/* RETURNING's order is the engine's: the oldest goes first */
	if (c.n > 1)
		qsort(c.jobs, (size_t)c.n, sizeof(*c.jobs), job_due_cmp);
	*jobs_r = c.jobs;
	return c.n;
}

int64_t
store_job_next_due(struct store *st, enum job_state waiting)
{
	int64_t at = -1;
	store_query_row(st, store_row_int64, &at, "SELECT MIN(next_at) FROM jobs WHERE state=?1", "s",
	    job_state_name(waiting));
	return at;
}

static void
row_fsm(const struct store_row *s, void *arg)
{
	fsm_from_cols(s, 0, 1, 2, arg);
}

int
store_job_fsm(struct store *st, int64_t id, struct job_fsm *fsm_r)
{
	return store_query_row(st, row_fsm, fsm_r, "SELECT state, report_state, report_status FROM jobs WHERE id=?1",
	    "i", id);
}

/* The compare half of a compare-and-set on both states: ?1 the id, then
 * from's three names (report_status may be NULL). */
#define JOB_CAS_WHERE " WHERE id=?1 AND state=?2 AND report_state=?3 AND report_status IS NOT DISTINCT FROM ?4"
#define JOB_CAS_ARGS(from) job_state_name((from)->job), job_report_state_name((from)->report), \
	job_report_status_name((from)->status)
/* ?5 ?6 ?7: the states to write */
#define JOB_CAS_SET "state=?5, report_state=?6, report_status=?7"
#define JOB_CAS_TO(to) JOB_CAS_ARGS(to)

int
store_job_release(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to)
{
	return store_exec(st, "UPDATE jobs SET " JOB_CAS_SET ", attempts=CASE WHEN attempts > 0 THEN attempts - 1 "
	    "ELSE 0 END, owner=NULL" JOB_CAS_WHERE, "issssss", job->id, JOB_CAS_ARGS(from), JOB_CAS_TO(to));
}

/* A job's state change and the rows that go with it (its trace event,
 * engagement events, a threading record) are written only when the
 * change is: the UPDATE compares and sets, and may find the row moved on.
 *
 * SQLite answers the UPDATE at once, and the rest follows only if it
 * wrote. On PostgreSQL, waiting for that answer cost a round trip, and
 * the threading record's savepoint two more: a send's three commits were
 * six round trips, each a wake-up of the sender and of the server
 * (bench/outbound.py by thread: 11 context switches a message in the
 * senders on PostgreSQL, 7 on SQLite). There, the rows that go with the
 * change are each written only where this very transaction wrote the
 * job's row (its version's xmin is this transaction's id), so the
 * UPDATE, they and the COMMIT go in one pipeline: one round trip. A
 * threading record that fails fails the change with it there, where
 * SQLite keeps the change: both only on a database error, which the
 * UPDATE would share. ?6 (?11 for the threading record) is the job's id. */
#define IF_JOB_WRITTEN(idp) "FROM jobs WHERE id = " idp " AND xmin = pg_current_xact_id_if_assigned()::xid "
#define EVENT_INSERT_IF_WRITTEN "INSERT INTO " EVENT_TABLE " SELECT ?1,?2,?3,?4,?5 " IF_JOB_WRITTEN("?6")
#define ENGAGE_INSERT_IF_WRITTEN ENGAGE_INTO "SELECT ?1,?2,?3,?4,?5,?5 " IF_JOB_WRITTEN("?6") "ON CONFLICT DO NOTHING"
#define MSGMAP_UPSERT_IF_WRITTEN MSGMAP_INSERT "SELECT ?1,?2,?3,?4,?5,?6,?7,?8,?9,?10 " IF_JOB_WRITTEN("?11") \
	MSGMAP_ON_CONFLICT

/* The rows an UPDATE ... RETURNING wrote: counted, and the first kept as
 * a job when row_r is set. */
struct written {
	struct job **row_r;
	int n;
};

static void
row_written(const struct store_row *s, void *arg)
{
	struct written *w = arg;

	if (w->row_r && w->n == 0)
		*w->row_r = job_from_row(s);
	w->n++;
}

int
store_job_mark_sending(struct store *st, int64_t id, enum job_state from, enum job_state to, const struct msgmap *m)
{
	static const char sql[] = "UPDATE jobs SET state=?3, rfc_message_id=?4, updated_at=?5 WHERE id=?1 AND state=?2 "
	    "RETURNING id";
	struct written w = { NULL, 0 };
	bool pipelined = st->ops->pipelined;
	int r;

	if (store_tx_begin(st, "mark sending") < 0)
		return -1;
	if (pipelined) {
		r = store_tx_later(st, row_written, &w, sql, "isssi", id, job_state_name(from), job_state_name(to),
		    m ? m->rfc_message_id : NULL, now_ms());
		if (r == 0 && m)
			store_tx_trace(st, MSGMAP_UPSERT_IF_WRITTEN, "sssssssssii", MSGMAP_ARGS(m), id);
	} else {
		r = store_tx_row(st, row_written, &w, sql, "isssi", id, job_state_name(from), job_state_name(to),
		    m ? m->rfc_message_id : NULL, now_ms());
		/* the threading record only for a send that happens */
		if (r == 1 && m)
			store_tx_extra(st, MSGMAP_UPSERT, "sssssssssi", MSGMAP_ARGS(m));
	}
	if (store_tx_end(st, "mark sending", false) < 0)
		return -1;
	return w.n > 0;
}

/* One compare-and-set UPDATE (sql over fmt's args, RETURNING the job's
 * columns when w->row_r is set, else its id) and, when it changes the
 * row, the trace event (kind, detail) and the engagement events for the
 * job, as steps of the open transaction: on SQLite the UPDATE's answer is
 * read at once and the rest follows only on a change; on PostgreSQL all
 * are queued, each checking (above), and w counts once the transaction
 * ends. -1 a step failed (the transaction rolls back). */
static int
job_write_steps(struct store *st, struct written *w, const struct job *job, int64_t now, const char *kind,
    const char *detail, const struct engage_add *ev, size_t n_ev, const char *sql, const char *fmt, va_list ap)
{
	bool pipelined = st->ops->pipelined;
	int r = pipelined ? store_tx_later_v(st, row_written, w, sql, fmt, ap) : store_tx_row_v(st, row_written, w,
	    sql, fmt, ap);
	/* the job's id is a parameter PostgreSQL's statements use, SQLite's not */
	bool follow = pipelined ? r == 0 : r == 1;

	if (follow && detail)
		store_tx_trace(st, pipelined ? EVENT_INSERT_IF_WRITTEN : EVENT_INSERT, pipelined ? "issssi" : "issss", now,
		    job->message_id, kind, detail, job->location_id, job->id);
	for (size_t i = 0; follow && i < n_ev; i++)
		store_tx_trace(st, pipelined ? ENGAGE_INSERT_IF_WRITTEN : ENGAGE_INSERT, pipelined ? "ssssii" : "ssssi",
		    job->message_id, ev[i].event, ev[i].who ? ev[i].who : "", job->location_id, now, job->id);
	return r < 0 ? -1 : 0;
}

/* job_write_steps in a commit of its own (one round trip on PostgreSQL):
 * 1 written, 0 the row had moved on, -1 error. With row_r, the job as
 * written. */
static int
job_write(struct store *st, const char *what, const struct job *job, struct job **row_r, const char *kind,
    const char *detail, const struct engage_add *ev, size_t n_ev, const char *sql, const char *fmt, ...)
{
	struct written w = { row_r, 0 };
	va_list ap;
	int r;

	if (row_r)
		*row_r = NULL;
	if (store_tx_begin(st, what) < 0)
		return -1;
	va_start(ap, fmt);
	r = job_write_steps(st, &w, job, now_ms(), kind, detail, ev, n_ev, sql, fmt, ap);
	va_end(ap);
	/* a failed step failed the transaction: its end rolls back */
	if (store_tx_end(st, what, false) < 0 || r < 0) {
		if (row_r) {
			store_job_free(*row_r);
			*row_r = NULL;
		}
		return -1;
	}
	return w.n > 0;
}

int
store_job_finish(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    struct job_attempt_rec *a)
{
	/* a due report leased at once (report_lease_ms) is claimed as
	 * store_report_claim would: due at the lease's end, one attempt more */
	bool lease = a->report_due && a->report_lease_ms > 0;

	a->leased = NULL;
	return job_write(st, "job finish", job, lease ? &a->leased : NULL, "send", a->event, a->engage, a->n_engage,
	    "UPDATE jobs SET " JOB_CAS_SET ", next_at=?8, last_code=?9, updated_at=?10, "
	    "last_error=CASE WHEN ?11 <> 0 THEN last_error ELSE ?12 END, "
	    "report_next_at=CASE WHEN ?13 <> 0 THEN ?10 + ?16 ELSE report_next_at END, "
	    "report_attempts=CASE WHEN ?13 <> 0 AND ?16 > 0 THEN report_attempts + 1 ELSE report_attempts END, "
	    "rcpt_state=COALESCE(?14, rcpt_state), uncertain=?15" JOB_CAS_WHERE " RETURNING " JOB_COLUMNS,
	    "issssssiiiisisii", job->id, JOB_CAS_ARGS(from), JOB_CAS_TO(to), a->next_at, (int64_t)a->code, now_ms(),
	    (int64_t)a->keep_error, a->error, (int64_t)a->report_due, a->rcpt_state, (int64_t)a->uncertain,
	    lease ? a->report_lease_ms : (int64_t)0);
}

int
store_job_recover(struct store *st, enum job_state from, enum job_state to, bool uncertain, const char *error,
    bool mine_too)
{
	int64_t now = now_ms(), stale = now - st->lease_ms;
	int n;

	if (store_tx_begin(st, "recover") < 0)
		return -1;
	/* an uncertain one's trace says so, and whose attempt it was */
	if (uncertain)
		store_tx_step(st, "INSERT INTO " EVENT_TABLE " SELECT ?1, message_id, 'recover', ?2 || ' (instance ' || "
		    "COALESCE(owner, '?') || ')', location_id FROM jobs WHERE state=?3 AND " STORE_ORPHAN("?4", "?5", "?6"),
		    "isssii", now, error, job_state_name(from), st->instance, (int64_t)mine_too, stale);
	n = store_tx_step(st, "UPDATE jobs SET state=?2, uncertain=CASE WHEN ?3 > uncertain THEN ?3 ELSE uncertain END, "
	    "last_error=COALESCE(?4, last_error), owner=NULL WHERE state=?1 AND " STORE_ORPHAN("?5", "?6", "?7"),
	    "ssissii", job_state_name(from), job_state_name(to), (int64_t)uncertain, error, st->instance,
	    (int64_t)mine_too, stale);
	if (store_tx_end(st, "recover", false) < 0)
		return -1;
	return n;
}

int
store_job_get(struct store *st, const char *message_id, struct job **job_r)
{
	return store_job_query(st, job_r, "SELECT " JOB_COLUMNS " FROM jobs WHERE message_id=?1",
	    "s", message_id);
}

#define JOB_FILTER_WHERE " WHERE (?1 IS NULL OR state=?1) AND (?2 IS NULL OR location_id=?2)" \
	" AND (?3=0 OR created_at<?3)"

struct list_cb {
	void (*fn)(const struct job *, void *);
	void *arg;
};

static void
list_row(const struct store_row *row, void *arg)
{
	struct list_cb *cb = arg;
	struct job *j = job_from_row(row);
	cb->fn(j, cb->arg);
	store_job_free(j);
}

int
store_job_list(struct store *st, const struct job_filter *f, int limit, int *total,
    void (*fn)(const struct job *, void *), void *arg)
{
	const char *state = f->state >= 0 ? job_state_name((enum job_state)f->state) : NULL;
	struct list_cb cb = { fn, arg };
	int64_t n = -1;

	if (total && (store_query_row(st, store_row_int64, &n, "SELECT count(*) FROM jobs" JOB_FILTER_WHERE, "ssi",
	    state, f->location_id, f->created_before) < 0 || (*total = (int)n) < 0))
		return -1;
	return store_query_rows(st, list_row, &cb, "SELECT " JOB_COLUMNS " FROM jobs" JOB_FILTER_WHERE
	    " ORDER BY id DESC LIMIT ?4", "ssii", state, f->location_id, f->created_before,
	    limit < 0 ? INT64_MAX : (int64_t)limit);
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
	store_query_row(st, store_row_int64, &n, "SELECT COUNT(*) FROM jobs WHERE state=?1", "s", job_state_name(state));
	return (int)n;
}

struct open_cb {
	void (*fn)(const char *location_id, int open, int64_t oldest_at, void *arg);
	void *arg;
};

static void
open_row(const struct store_row *stmt, void *arg)
{
	struct open_cb *cb = arg;
	cb->fn(store_col_str(stmt, 0), store_col_int(stmt, 1), store_col_int(stmt, 2),
	    cb->arg);
}

int
store_job_open_by_location(struct store *st, void (*fn)(const char *location_id, int open, int64_t oldest_at,
    void *arg), void *arg)
{
	struct open_cb cb = { fn, arg };
	/* the unfinished jobs are few, and found through jobs_due's state */
	return store_query_rows(st, open_row, &cb, "SELECT location_id, count(*), min(created_at) FROM jobs "
	    "WHERE state IN ('" JOB_NAME_QUEUED "', '" JOB_NAME_CLAIMED "', '" JOB_NAME_SENDING "') "
	    "GROUP BY location_id", "") < 0 ? -1 : 0;
}

struct error_cb {
	void (*fn)(const char *location_id, const char *error, int64_t at, void *arg);
	void *arg;
};

static void
error_row(const struct store_row *stmt, void *arg)
{
	struct error_cb *cb = arg;
	cb->fn(store_col_str(stmt, 0), store_col_str(stmt, 1),
	    store_col_int(stmt, 2), cb->arg);
}

int
store_job_last_error_by_location(struct store *st, void (*fn)(const char *location_id, const char *error,
    int64_t at, void *arg), void *arg)
{
	struct error_cb cb = { fn, arg };
	/* each location's latest job with an error, over the kept jobs (keep_days) */
	return store_query_rows(st, error_row, &cb, "SELECT location_id, last_error, updated_at FROM jobs "
	    "WHERE id IN (SELECT max(id) FROM jobs WHERE last_error IS NOT NULL AND last_error <> '' "
	    "GROUP BY location_id)", "") < 0 ? -1 : 0;
}

int
store_report_claim(struct store *st, int64_t now, int64_t lease_ms, struct job **job_r)
{
	return store_job_query(st, job_r,
	    "UPDATE jobs SET report_next_at=?2, report_attempts=report_attempts+1 "
	    "WHERE id = (SELECT id FROM jobs WHERE report_state='" REPORT_NAME_PENDING "' AND report_next_at<=?1 "
	    "ORDER BY report_next_at, id LIMIT 1" STORE_SKIP_LOCKED ") AND report_next_at<=?1 RETURNING " JOB_COLUMNS,
	    "ii", now, now + lease_ms);
}

/* job_write_steps over the arguments that follow fmt, without
 * engagement events. */
static int
job_steps(struct store *st, struct written *w, const struct job *job, int64_t now, const char *kind,
    const char *detail, const char *sql, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = job_write_steps(st, w, job, now, kind, detail, NULL, 0, sql, fmt, ap);
	va_end(ap);
	return r;
}

int
store_report_finish_many(struct store *st, const struct report_finish *f, size_t n, int *written)
{
	struct written *w = xcalloc(n + 1, sizeof(*w));
	int64_t now = now_ms();
	int r = store_tx_begin(st, "report finish");

	/* a failed step fails the transaction: the end rolls it back */
	for (size_t i = 0; r == 0 && i < n; i++)
		if (job_steps(st, &w[i], f[i].job, now, "status", f[i].posted, "UPDATE jobs SET " JOB_CAS_SET
		    ", report_next_at=?8, report_error=?9" JOB_CAS_WHERE " RETURNING id", "issssssis", f[i].job->id,
		    JOB_CAS_ARGS(f[i].from), JOB_CAS_TO(f[i].to), f[i].next_at, f[i].error) < 0)
			break;
	if (r == 0)
		r = store_tx_end(st, "report finish", false);
	for (size_t i = 0; i < n; i++)
		written[i] = r < 0 ? -1 : w[i].n > 0;
	free(w);
	return r < 0 ? -1 : 0;
}

int
store_report_defer(struct store *st, int64_t id, int64_t next_at)
{
	int r = store_exec(st, "UPDATE jobs SET report_next_at=?2, report_attempts=CASE WHEN report_attempts > 0 "
	    "THEN report_attempts - 1 ELSE 0 END "
	    "WHERE id=?1", "ii", id, next_at);

	return r < 0 ? -1 : r > 0;
}

int
store_report_defer_location(struct store *st, const char *location_id, int64_t now, int64_t next_at)
{
	/* due ones only: a later one is leased to a reporter, or waits anyway */
	return store_exec(st, "UPDATE jobs SET report_next_at=?3 WHERE report_state='" REPORT_NAME_PENDING "' "
	    "AND report_next_at<=?2 AND location_id=?1", "sii", location_id, now, next_at);
}

int
store_report_wake_location(struct store *st, const char *location_id)
{
	return store_exec(st, "UPDATE jobs SET report_next_at=?2 WHERE location_id=?1 "
	    "AND report_state='" REPORT_NAME_PENDING "'",
	    "si", location_id, now_ms());
}

int
store_job_dsn(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    bool report_due, int code, const char *error, const char *event, const char *rcpt_patch,
    const struct engage_add *ev, size_t n_ev)
{
	/* the report's recipients merged into the job's (RFC 7396 merge patch) */
	return job_write(st, "job dsn", job, NULL, "dsn", event, ev, n_ev,
	    "UPDATE jobs SET " JOB_CAS_SET ", report_attempts=0, updated_at=?8, "
	    /* due now, unless a reporter holds the report's lease (it is
	     * posting the older status): that one's record then fails, and
	     * it hands the new status on (report_done), so the two posts never
	     * race and the newer one is HighLevel's last */
	    "report_next_at=CASE WHEN ?9 <> 0 AND report_next_at <= ?8 THEN ?8 ELSE report_next_at END, "
	    "last_code=CASE WHEN ?10 > 0 THEN ?10 ELSE last_code END, "
	    "last_error=COALESCE(?11, last_error), "
	    "rcpt_state=CASE WHEN ?12 IS NULL THEN rcpt_state ELSE json_patch(COALESCE(rcpt_state, '{}'), ?12) END" JOB_CAS_WHERE
	    " RETURNING id",
	    "issssssiiiss", job->id, JOB_CAS_ARGS(from), JOB_CAS_TO(to), now_ms(), (int64_t)report_due, (int64_t)code,
	    error, rcpt_patch);
}

int64_t
store_job_oldest_queued_age(struct store *st)
{
	int64_t oldest = -1;
	store_query_row(st, store_row_int64, &oldest,
	    "SELECT MIN(created_at) FROM jobs WHERE state IN ('" JOB_NAME_QUEUED "','" JOB_NAME_CLAIMED "','"
	    JOB_NAME_SENDING "')", "");
	return oldest < 0 ? 0 : now_ms() - oldest;
}
