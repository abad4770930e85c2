/* job: the outbound job's state machine (see job.h). */
#include <string.h>

#include "job.h"

#define N_(a) (sizeof(a) / sizeof((a)[0]))

static const char *const job_names[JOB_STATE_N] = {
	[JOB_QUEUED] = JOB_NAME_QUEUED, [JOB_CLAIMED] = JOB_NAME_CLAIMED, [JOB_SENDING] = JOB_NAME_SENDING,
	[JOB_SENT] = JOB_NAME_SENT, [JOB_FAILED] = JOB_NAME_FAILED,
};
static const char *const report_names[REPORT_STATE_N] = {
	[REPORT_NONE] = REPORT_NAME_NONE, [REPORT_PENDING] = REPORT_NAME_PENDING, [REPORT_DONE] = REPORT_NAME_DONE,
	[REPORT_GAVE_UP] = REPORT_NAME_GAVE_UP, [REPORT_EARLY] = REPORT_NAME_EARLY,
};
static const char *const status_names[STATUS_N] = {
	[STATUS_NONE] = NULL, [STATUS_DELIVERED] = "delivered", [STATUS_FAILED] = "failed",
	[STATUS_READ] = "read",
};

static int
parse(const char *const *names, int n, const char *name)
{
	for (int i = 0; name && i < n; i++)
		if (names[i] && !strcmp(names[i], name))
			return i;
	return -1;
}

const char *job_state_name(enum job_state s) { return (unsigned)s < JOB_STATE_N ? job_names[s] : "?"; }
const char *job_report_state_name(enum report_state s) { return (unsigned)s < REPORT_STATE_N ? report_names[s] : "?"; }
const char *job_report_status_name(enum report_status s) { return (unsigned)s < STATUS_N ? status_names[s] : NULL; }
int job_state_parse(const char *name) { return parse(job_names, JOB_STATE_N, name); }
int job_report_state_parse(const char *name) { return parse(report_names, REPORT_STATE_N, name); }

int
job_report_status_parse(const char *name)
{
	return name ? parse(status_names, STATUS_N, name) : STATUS_NONE;
}

/* The simple moves: one event, a table from the state it applies to. */
struct move {
	enum job_state from, to;
};
static const struct move claim_moves[] = { { JOB_QUEUED, JOB_CLAIMED } };
/* sending -> sending: the envelope goes once more, on a new connection
 * (a kept one the relay had closed), within the same attempt */
static const struct move sending_moves[] = { { JOB_CLAIMED, JOB_SENDING }, { JOB_SENDING, JOB_SENDING } };
static const struct move recover_moves[] = { { JOB_CLAIMED, JOB_QUEUED }, { JOB_SENDING, JOB_QUEUED } };
/* a claimed job its instance will not send after all (claimed in a
 * batch, and the instance stops first) */
static const struct move release_moves[] = { { JOB_CLAIMED, JOB_QUEUED } };
static const struct move retry_moves[] = { { JOB_QUEUED, JOB_QUEUED }, { JOB_FAILED, JOB_QUEUED } };

static int
move(const struct move *m, size_t n, const struct job_fsm *cur, struct job_fsm *next)
{
	for (size_t i = 0; i < n; i++)
		if (m[i].from == cur->job) {
			*next = *cur;
			next->job = m[i].to;
			return 0;
		}
	return -1;
}

int
job_on_claim(const struct job_fsm *cur, struct job_fsm *next)
{
	return move(claim_moves, N_(claim_moves), cur, next);
}

int
job_on_sending(const struct job_fsm *cur, struct job_fsm *next)
{
	return move(sending_moves, N_(sending_moves), cur, next);
}

int
job_on_recover(const struct job_fsm *cur, struct job_fsm *next, bool *uncertain)
{
	*uncertain = cur->job == JOB_SENDING;
	return move(recover_moves, N_(recover_moves), cur, next);
}

int
job_on_release(const struct job_fsm *cur, struct job_fsm *next)
{
	return move(release_moves, N_(release_moves), cur, next);
}

int
job_on_retry(const struct job_fsm *cur, struct job_fsm *next)
{
	if (move(retry_moves, N_(retry_moves), cur, next) < 0)
		return -1;
	next->report = REPORT_NONE;
	return 0;
}

bool
job_can_drop(const struct job_fsm *cur)
{
	return cur->job != JOB_CLAIMED && cur->job != JOB_SENDING;
}

bool
job_is_open(enum job_state s)
{
	return s == JOB_QUEUED || s == JOB_CLAIMED || s == JOB_SENDING;
}

static const enum job_state attempt_to[] = {
	[ATTEMPT_RETRY] = JOB_QUEUED, [ATTEMPT_SENT] = JOB_SENT, [ATTEMPT_FAILED] = JOB_FAILED,
};

int
job_on_attempt(const struct job_fsm *cur, enum job_outcome outcome, enum report_status status,
    struct job_fsm *next, struct job_effect *fx)
{
	struct job_effect none = { 0 };

	if (!fx)
		fx = &none;
	*fx = none;
	if ((cur->job != JOB_CLAIMED && cur->job != JOB_SENDING) || (unsigned)outcome >= N_(attempt_to))
		return -1;
	*next = *cur;
	next->job = attempt_to[outcome];
	if (outcome == ATTEMPT_SENT && cur->report == REPORT_EARLY) {
		/* the early report came after the relay's answer: it wins */
		next->report = REPORT_PENDING;
		if (cur->status == STATUS_FAILED) {
			next->job = JOB_FAILED;
			fx->keep_error = true;
		}
	} else if (status != STATUS_NONE) {
		next->status = status;
		next->report = REPORT_PENDING;
	}
	fx->report_due = next->report == REPORT_PENDING;
	return 0;
}

static const enum report_state report_to[] = {
	[REPORT_POSTED] = REPORT_DONE, [REPORT_LATER] = REPORT_PENDING, [REPORT_STOP] = REPORT_GAVE_UP,
};

int
job_on_report(const struct job_fsm *cur, enum report_outcome outcome, struct job_fsm *next)
{
	if (cur->report != REPORT_PENDING || (unsigned)outcome >= N_(report_to))
		return -1;
	*next = *cur;
	next->report = report_to[outcome];
	return 0;
}

int
job_on_dsn(const struct job_fsm *cur, enum report_status status, struct job_fsm *next, struct job_effect *fx)
{
	struct job_effect none = { 0 };

	if (!fx)
		fx = &none;
	*fx = none;
	if (status == STATUS_NONE || (unsigned)status >= STATUS_N || cur->job == JOB_QUEUED ||
	    (unsigned)cur->job >= JOB_STATE_N)
		return -1;
	*next = *cur;
	next->status = status;
	if (cur->job == JOB_CLAIMED || cur->job == JOB_SENDING) {
		next->report = REPORT_EARLY;
		return 0;
	}
	next->report = REPORT_PENDING;
	if (status == STATUS_FAILED)
		next->job = JOB_FAILED;
	fx->report_due = true;
	return 0;
}
