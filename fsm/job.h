/* job: the outbound job's state machine, and nothing else. Pure C: no
 * store, no I/O, no clock. The store persists what these functions decide
 * (by name, with compare-and-set on the state they started from); the
 * core calls them. Every transition is a function of the current state and
 * an event, and is unit-tested over every state (tests/test_fsm.c).
 *
 * A job has two parts that move together:
 *   - its send state:   queued -> claimed -> sending -> sent | failed,
 *                       or back to queued for a retry;
 *   - its report:       what HighLevel is to be told (the status) and
 *                       where telling it stands:
 *                       none -> pending -> done | gave_up,
 *                       or "early": a status that came (DSN, gateway
 *                       report) while the job was still being sent, held
 *                       until the send is recorded. */
#ifndef MB_JOB_H
#define MB_JOB_H

#include <stdbool.h>

enum job_state {
	JOB_QUEUED,                /* waiting for its next_at */
	JOB_CLAIMED,               /* a worker has it */
	JOB_SENDING,               /* written just before the final "." of DATA: a crash
	                            * from here on leaves the relay's copy uncertain */
	JOB_SENT,
	JOB_FAILED,
	JOB_STATE_N
};

enum report_state {
	REPORT_NONE,               /* nothing to tell yet */
	REPORT_PENDING,            /* to be posted (due at report_next_at) */
	REPORT_DONE,
	REPORT_GAVE_UP,
	REPORT_EARLY,              /* given while the job was being sent */
	REPORT_STATE_N
};

enum report_status {
	STATUS_NONE,               /* none chosen yet */
	STATUS_DELIVERED,
	STATUS_FAILED,
	STATUS_READ,               /* a gateway's read receipt (SMS) */
	STATUS_N
};

/* The stored names: the names table in job.c is made of these, and a
 * query that selects by state (the store's claims, counts and retention)
 * names them through these macros, never by a literal of its own. */
#define JOB_NAME_QUEUED     "queued"
#define JOB_NAME_CLAIMED    "claimed"
#define JOB_NAME_SENDING    "sending"
#define JOB_NAME_SENT       "sent"
#define JOB_NAME_FAILED     "failed"
#define REPORT_NAME_NONE    "none"
#define REPORT_NAME_PENDING "pending"
#define REPORT_NAME_DONE    "done"
#define REPORT_NAME_GAVE_UP "gave_up"
#define REPORT_NAME_EARLY   "early"

/* The persisted state of one job, as the machine sees it. */
struct job_fsm {
	enum job_state job;
	enum report_state report;
	enum report_status status;
};

/* Names, as stored and shown; parse returns -1 for an unknown name. */
const char *job_state_name(enum job_state s);
const char *job_report_state_name(enum report_state s);
const char *job_report_status_name(enum report_status s);   /* NULL for STATUS_NONE */
int job_state_parse(const char *name);
int job_report_state_parse(const char *name);
int job_report_status_parse(const char *name);              /* NULL -> STATUS_NONE */

/* What an attempt's outcome asks of the job: what is written besides the
 * states. keep_error: the job fails because of an early "failed" report,
 * whose reason stays the job's last error. report_due: a status is to be
 * posted now (a reporter is woken). */
struct job_effect {
	bool keep_error;
	bool report_due;
};

/* Each returns 0 with *next (and *fx, when given) set, or -1 when the
 * event does not apply to that state (nothing is to be written). */

/* A worker takes a due job: queued -> claimed. */
int job_on_claim(const struct job_fsm *cur, struct job_fsm *next);
/* Just before DATA: claimed -> sending (sending -> sending when the
 * attempt sends its envelope again on a new connection). */
int job_on_sending(const struct job_fsm *cur, struct job_fsm *next);

enum job_outcome {
	ATTEMPT_RETRY,             /* temporary trouble: back to queued */
	ATTEMPT_SENT,              /* the relay (or gateway) took it */
	ATTEMPT_FAILED,            /* for good */
};
/* The attempt ended. status is what the attempt itself reports
 * (STATUS_NONE: nothing yet, e.g. a DSN or a gateway report is awaited).
 * From claimed or sending only. An early report is released by a send:
 * it is what HighLevel hears (it came later than the attempt's own view),
 * and an early "failed" fails the job. */
int job_on_attempt(const struct job_fsm *cur, enum job_outcome outcome, enum report_status status,
    struct job_fsm *next, struct job_effect *fx);

enum report_outcome {
	REPORT_POSTED,             /* HighLevel took it */
	REPORT_LATER,              /* try again at a later time */
	REPORT_STOP,               /* refused for good, or too many tries */
};
/* The reporter's post of cur->status ended. From pending only. */
int job_on_report(const struct job_fsm *cur, enum report_outcome outcome, struct job_fsm *next);

/* A delivery report (DSN, gateway report) says status. For a job being
 * sent it waits (early); for a finished one it is due now, and a "failed"
 * one fails the job. A queued job has sent nothing: -1. */
int job_on_dsn(const struct job_fsm *cur, enum report_status status, struct job_fsm *next,
    struct job_effect *fx);

/* After a crash: claimed -> queued; sending -> queued, and *uncertain
 * (the relay may hold a copy). Other states: -1 (nothing to recover). */
int job_on_recover(const struct job_fsm *cur, struct job_fsm *next, bool *uncertain);

/* Handed back unsent (claimed in a batch, not begun when the instance
 * stopped): claimed -> queued, the attempt not counted. */
int job_on_release(const struct job_fsm *cur, struct job_fsm *next);

/* An operator's retry: a queued or failed job goes now, with no report. */
int job_on_retry(const struct job_fsm *cur, struct job_fsm *next);

/* An operator may drop a job no worker holds. */
bool job_can_drop(const struct job_fsm *cur);

/* Work not finished: a job a worker will (still) send. */
bool job_is_open(enum job_state s);

#endif
