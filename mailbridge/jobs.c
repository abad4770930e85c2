/* jobs: the job state machine over the store (see jobs.h). */
#include "jobs.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>

/* A store error is tried again after 100, 400, 1600 ms, then every 5 s,
 * for a minute: long enough for a database server's restart, so that a
 * job's outcome is not left unrecorded (it would stay claimed until this
 * instance restarts). */
#define STORE_RETRY_MS 60000
#define STORE_BACKOFF_MAX_MS 5000
#define CONFLICT_TRIES 8           /* a row that keeps moving: something is wrong */

/* After a store error (the errors-th), sleeps the backoff and returns
 * true, or false once that would pass give_up (mono_ms). */
static bool
store_backoff(int errors, int64_t give_up)
{
	int64_t pause = errors < 4 ? 100LL << (2 * (errors - 1)) : STORE_BACKOFF_MAX_MS;

	if (mono_ms() + pause > give_up)
		return false;
	sleep_ms(pause);
	return true;
}

/* One event: decide (pure) from cur, then write from -> to. */
struct event {
	int (*decide)(const struct job_fsm *cur, struct job_fsm *next, struct job_effect *fx, const void *arg);
	int (*write)(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
	    const struct job_effect *fx, const void *arg);
	const void *arg;
	bool redecide;             /* on a conflict, read again and decide again (else: 0) */
	bool once;                 /* a store error is not tried again (else: STORE_RETRY_MS) */
};

/* Runs ev on job (job->fsm: where the caller believes it stands). On 1,
 * job->fsm is the new state and *fx its effects. */
static int
apply(struct store *st, struct job *job, const struct event *ev, struct job_effect *fx)
{
	int errors = 0, conflicts = 0;
	int64_t give_up = mono_ms() + (ev->once ? 0 : STORE_RETRY_MS);

	for (;;) {
		struct job_fsm next;
		int r;

		if (ev->decide(&job->fsm, &next, fx, ev->arg) < 0)
			return 0;
		r = ev->write(st, job, &job->fsm, &next, fx, ev->arg);
		if (r == 1) {
			job->fsm = next;
			return 1;
		}
		if (r == 0) {
			if (!ev->redecide || ++conflicts > CONFLICT_TRIES)
				return 0;
			log_debug("jobs: messageId=%s was no longer %s/%s: deciding again", job->message_id,
			    job_state_name(job->fsm.job), job_report_state_name(job->fsm.report));
		} else if (!store_backoff(++errors, give_up)) {
			return -1;
		}
		/* where does it stand now? */
		r = store_job_fsm(st, job->id, &job->fsm);
		if (r == 0)
			return 0;
		if (r < 0 && (++errors, mono_ms() > give_up))
			return -1;
	}
}

int
jobs_claim_batch(struct store *st, int64_t now, int max, struct job ***jobs_r)
{
	struct job_fsm q = { .job = JOB_QUEUED }, c;
	job_on_claim(&q, &c);
	return store_job_claim(st, now, q.job, c.job, max, jobs_r);
}

int
jobs_claim(struct store *st, int64_t now, struct job **job_r)
{
	struct job **jobs;
	int r = jobs_claim_batch(st, now, 1, &jobs);

	*job_r = r > 0 ? jobs[0] : NULL;
	/* one asked for, one claimed (the store's CTE picks once): any more
	 * would be claimed and not worked, so it goes back */
	for (int i = 1; i < r; i++) {
		if (jobs_release(st, jobs[i]) < 0)
			log_error("jobs: messageId=%s claimed beyond the one asked for, and not handed back (store "
			    "error)", jobs[i]->message_id);
		store_job_free(jobs[i]);
	}
	free(jobs);
	return r > 0 ? 1 : r;
}

static int
decide_release(const struct job_fsm *cur, struct job_fsm *next, struct job_effect *fx, const void *arg)
{
	(void)fx;
	(void)arg;
	return job_on_release(cur, next);
}

static int
write_release(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    const struct job_effect *fx, const void *arg)
{
	(void)fx;
	(void)arg;
	return store_job_release(st, job, from, to);
}

int
jobs_release(struct store *st, struct job *job)
{
	/* once: at a stop, with the store away, a minute per job would hold
	 * the stop past the service manager's patience; the job stays
	 * claimed for the next start's recovery */
	struct event ev = { decide_release, write_release, NULL, false, true };
	struct job_effect fx;
	return apply(st, job, &ev, &fx);
}

int64_t
jobs_next_due(struct store *st)
{
	return store_job_next_due(st, JOB_QUEUED);
}

static int
decide_sending(const struct job_fsm *cur, struct job_fsm *next, struct job_effect *fx, const void *arg)
{
	(void)fx;
	(void)arg;
	return job_on_sending(cur, next);
}

static int
write_sending(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    const struct job_effect *fx, const void *arg)
{
	(void)fx;
	return store_job_mark_sending(st, job->id, from->job, to->job, arg);
}

int
jobs_sending(struct store *st, struct job *job, const struct msgmap *m)
{
	/* compare-and-set on the send state only: a report meanwhile is no conflict */
	struct event ev = { decide_sending, write_sending, m, true, false };
	struct job_effect fx;
	return apply(st, job, &ev, &fx);
}

struct attempt_arg {
	enum job_outcome outcome;
	enum report_status status;
	struct job_attempt_rec *rec;
};

static int
decide_attempt(const struct job_fsm *cur, struct job_fsm *next, struct job_effect *fx, const void *arg)
{
	const struct attempt_arg *a = arg;
	return job_on_attempt(cur, a->outcome, a->status, next, fx);
}

static int
write_attempt(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    const struct job_effect *fx, const void *arg)
{
	const struct attempt_arg *a = arg;
	a->rec->keep_error = fx->keep_error;
	a->rec->report_due = fx->report_due;
	return store_job_finish(st, job, from, to, a->rec);
}

int
jobs_attempt(struct store *st, struct job *job, enum job_outcome outcome, enum report_status status,
    struct job_attempt_rec *rec)
{
	struct attempt_arg a = { outcome, status, rec };
	struct event ev = { decide_attempt, write_attempt, &a, true, false };
	struct job_effect fx;
	return apply(st, job, &ev, &fx);
}

void
jobs_report_many(struct store *st, struct job *const *jobs, const struct report_end *e, size_t n, int *r)
{
	struct report_finish *f = xcalloc(n + 1, sizeof(*f));
	struct job_fsm *to = xcalloc(n + 1, sizeof(*to));
	size_t *of = xcalloc(n + 1, sizeof(*of)), m = 0;
	int *w = xcalloc(n + 1, sizeof(*w)), errors = 0;
	int64_t give_up = mono_ms() + STORE_RETRY_MS;

	/* decide each (as jobs_report: no second decision), write those that
	 * move together */
	for (size_t i = 0; i < n; i++) {
		r[i] = 0;
		if (job_on_report(&jobs[i]->fsm, e[i].outcome, &to[i]) < 0)
			continue;
		f[m] = (struct report_finish){ jobs[i], &jobs[i]->fsm, &to[i], e[i].next_at, e[i].error,
			e[i].outcome == REPORT_POSTED ? job_report_status_name(jobs[i]->fsm.status) : NULL };
		of[m++] = i;
	}
	/* a store error is tried again as a whole: nothing of it was written,
	 * or (a commit whose answer was lost) all of it, when each
	 * compare-and-set then finds its row moved on: 0, as apply's read
	 * would have decided */
	while (m > 0 && store_report_finish_many(st, f, m, w) < 0)
		if (!store_backoff(++errors, give_up))
			break;
	for (size_t k = 0; k < m; k++) {
		r[of[k]] = w[k];
		if (w[k] == 1)
			jobs[of[k]]->fsm = to[of[k]];
	}
	free(f);
	free(to);
	free(of);
	free(w);
}

int
jobs_report(struct store *st, struct job *job, enum report_outcome outcome, int64_t next_at, const char *error)
{
	struct report_end e = { outcome, next_at, error };
	int r;

	jobs_report_many(st, &job, &e, 1, &r);
	return r;
}

int
jobs_report_defer(struct store *st, const struct job *job, int64_t next_at)
{
	int64_t give_up = mono_ms() + STORE_RETRY_MS;
	int r, errors = 0;

	while ((r = store_report_defer(st, job->id, next_at)) < 0)
		if (!store_backoff(++errors, give_up))
			return -1;
	return r;
}

struct dsn_arg {
	enum report_status status;
	int code;
	const char *error, *event, *rcpt_patch;
	const struct engage_add *ev;
	size_t n_ev;
};

static int
decide_dsn(const struct job_fsm *cur, struct job_fsm *next, struct job_effect *fx, const void *arg)
{
	const struct dsn_arg *a = arg;
	return job_on_dsn(cur, a->status, next, fx);
}

static int
write_dsn(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    const struct job_effect *fx, const void *arg)
{
	const struct dsn_arg *a = arg;
	return store_job_dsn(st, job, from, to, fx->report_due, a->code, a->error, a->event, a->rcpt_patch, a->ev,
	    a->n_ev);
}

/* Runs ev on the job of that messageId. */
static int
by_message_id(struct store *st, const char *message_id, const struct event *ev, struct job_effect *fx)
{
	struct job *job = NULL;
	int r = store_job_get(st, message_id, &job);

	if (r == 1)
		r = apply(st, job, ev, fx);
	store_job_free(job);
	return r;
}

int
jobs_dsn(struct store *st, const char *message_id, enum report_status status, int code, const char *error,
    const char *event, const char *rcpt_patch, const struct engage_add *engage, size_t n_engage, bool *due_r)
{
	struct dsn_arg a = { status, code, error, event, rcpt_patch, engage, n_engage };
	struct event ev = { decide_dsn, write_dsn, &a, true, false };
	struct job_effect fx = { 0 };
	int r = by_message_id(st, message_id, &ev, &fx);

	if (due_r)
		*due_r = r == 1 && fx.report_due;
	return r;
}

int
jobs_recover(struct store *st, bool at_start)
{
	int uncertain = 0;

	for (int s = 0; s < JOB_STATE_N; s++) {
		struct job_fsm cur = { .job = (enum job_state)s }, next;
		bool unsure;
		int n;
		if (job_on_recover(&cur, &next, &unsure) < 0)
			continue;
		n = store_job_recover(st, cur.job, next.job, unsure,
		    unsure ? "interrupted during DATA by a restart" : NULL, at_start);
		if (n < 0)
			return -1;
		if (unsure)
			uncertain += n;
	}
	return uncertain;
}

static int
decide_retry(const struct job_fsm *cur, struct job_fsm *next, struct job_effect *fx, const void *arg)
{
	(void)fx;
	(void)arg;
	return job_on_retry(cur, next);
}

static int
write_retry(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    const struct job_effect *fx, const void *arg)
{
	(void)fx;
	(void)arg;
	return store_job_retry(st, job, from, to, now_ms());
}

static int
decide_drop(const struct job_fsm *cur, struct job_fsm *next, struct job_effect *fx, const void *arg)
{
	(void)fx;
	(void)arg;
	*next = *cur;
	return job_can_drop(cur) ? 0 : -1;
}

static int
write_drop(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to,
    const struct job_effect *fx, const void *arg)
{
	(void)to;
	(void)fx;
	(void)arg;
	return store_job_drop(st, job, from);
}

int
jobs_retry(struct store *st, const char *message_id)
{
	/* not again on a miss: the payload may be gone (a sent job's is pruned) */
	struct event ev = { decide_retry, write_retry, NULL, false, false };
	struct job_effect fx;
	return by_message_id(st, message_id, &ev, &fx);
}

int
jobs_drop(struct store *st, const char *message_id)
{
	struct event ev = { decide_drop, write_drop, NULL, true, false };
	struct job_effect fx;
	return by_message_id(st, message_id, &ev, &fx);
}
