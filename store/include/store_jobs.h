/* store_jobs: outbound jobs, their payloads and their status reports. */
#ifndef MB_STORE_JOBS_H
#define MB_STORE_JOBS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "job.h"
#include "store_engage.h"

/* Jobs carry the states of fsm/job.h: the store persists them by name
 * and decides none of them. A transition is written by compare-and-set:
 * the caller names the state it read (from) and the one it chose (to);
 * the row changes only if it is still in from. Those functions return 1
 * written, 0 when the row has moved on (re-read it and decide again: see
 * mailbridge/jobs.c), -1 on a store error. */
struct job {
	int64_t id;
	char *message_id;          /* HighLevel messageId (unique) */
	char *location_id;
	char *type;                /* "Email", "SMS", ... */
	char *payload;             /* the validated webhook JSON: from the claim, or store_job_payload() */
	char *email_message_id;    /* the webhook's emailMessageId, or NULL */
	struct job_fsm fsm;        /* state, report_state, report_status */
	int attempts;
	int64_t next_at;           /* ms since epoch */
	int64_t created_at;
	int last_code;             /* last SMTP (or plugin) code, 0 if none */
	char *last_error;
	char *rfc_message_id;      /* our Message-ID, without <> */
	int report_attempts;
	char *report_error;
	char *rcpt_state;          /* JSON {addr: {code, text}} of finished rcpts */
	bool uncertain;            /* the last attempt ended after our final dot with no
	                            * reply: the relay may hold it (see relaylog.h) */
};

void store_job_free(struct job *job);

/* Jobs */
/* Stores a webhook's job and payload, with its "webhook" event, durably
 * (on disk before it returns). 1 added, 0 a duplicate messageId (only the
 * event is added), -1 error. */
int store_job_add(struct store *st, const char *message_id, const char *location_id,
    const char *type, const char *email_message_id, const char *payload);
/* On PostgreSQL, adds are written in groups (one transaction, one round
 * trip, one WAL flush): how many groups and adds so far (0 on SQLite,
 * which groups its commits itself). */
void store_job_add_groups(struct store *st, int64_t *groups_r, int64_t *adds_r);
/* Loads job->payload (kept apart from the job row). 1, 0 gone, -1 error. */
int store_job_payload(struct store *st, struct job *job);
/* The oldest jobs in state from due by now, up to max, go to state to
 * (attempts+1), each read with its payload (NULL if gone), oldest first
 * into *jobs_r (malloc'd; the caller frees it and owns every job). How
 * many, or -1 (none taken). */
int store_job_claim(struct store *st, int64_t now, enum job_state from, enum job_state to, int max,
    struct job ***jobs_r);
/* A claimed job handed back unsent: from -> to (compare-and-set), its
 * attempt not counted, no owner. 1, 0 (not in from), -1 error. */
int store_job_release(struct store *st, const struct job *job, const struct job_fsm *from, const struct job_fsm *to);
/* Earliest next_at among jobs in state waiting, or -1 when none. */
int64_t store_job_next_due(struct store *st, enum job_state waiting);
/* The job's states as stored now: 1, 0 gone, -1 error. */
int store_job_fsm(struct store *st, int64_t id, struct job_fsm *fsm_r);
struct msgmap;
/* Right before DATA: the send state moves (to "sending": a crash from
 * here on makes it uncertain), and m, the threading record replies will
 * need, is stored in the same commit. Compare-and-set on the send state
 * only (a report may come meanwhile). */
int store_job_mark_sending(struct store *st, int64_t id, enum job_state from, enum job_state to,
    const struct msgmap *m);
/* What an attempt's end writes besides the states. */
struct job_attempt_rec {
	int64_t next_at;           /* the next attempt, for a retry */
	int code;                  /* the relay's (or plugin's) code, 0 none */
	const char *error;
	bool keep_error;           /* leave last_error as it is (an early report's reason) */
	bool report_due;           /* a status is to be posted now */
	const char *rcpt_state;    /* non-NULL: replaces the per-recipient record */
	bool uncertain;            /* ended after the final dot with no reply */
	const char *event;         /* the "send" event for the trace, in the same commit */
	const struct engage_add *engage;   /* engagement events, in the same commit */
	size_t n_engage;
	/* > 0: a report due now is leased to the caller for this long, as
	 * store_report_claim would, and leased is the job as written (the
	 * caller's to free) for its reporter: no claim, no second commit */
	int64_t report_lease_ms;
	struct job *leased;
};
/* Ends an attempt: compare-and-set on both states. */
int store_job_finish(struct store *st, const struct job *job, const struct job_fsm *from,
    const struct job_fsm *to, struct job_attempt_rec *a);
/* Jobs in state from whose claimer cannot finish them go to state to;
 * uncertain ones are marked so, with error as their last error. Whose:
 * claimed by an instance that is gone (store_instances.h), or before
 * owners were kept, and with mine_too ours (at start: the last run's).
 * Returns how many. */
int store_job_recover(struct store *st, enum job_state from, enum job_state to, bool uncertain,
    const char *error, bool mine_too);
int store_job_get(struct store *st, const char *message_id, struct job **job_r);
/* Calls fn for each job (newest first, at most limit). */
/* Which jobs a listing takes (queue list, retry --all-failed, flush). */
struct job_filter {
	int state;                 /* an enum job_state, or -1 for any */
	const char *location_id;   /* NULL: any */
	int64_t created_before;    /* ms since the epoch; 0: any age */
};
/* Newest first, at most limit rows (limit < 0: all); *total (when not
 * NULL) gets how many match in all. Returns the rows given to fn, or -1.
 * fn must not call the store. */
int store_job_list(struct store *st, const struct job_filter *f, int limit, int *total,
    void (*fn)(const struct job *, void *), void *arg);
/* An operator's retry: due at next_at, if its payload is still kept. */
int store_job_retry(struct store *st, const struct job *job, const struct job_fsm *from,
    const struct job_fsm *to, int64_t next_at);
/* Deletes the job if it is still in from's send state. */
int store_job_drop(struct store *st, const struct job *job, const struct job_fsm *from);
int store_job_count(struct store *st, enum job_state state);
/* Per location, for the status page: the unfinished jobs (queued, claimed
 * or sending) and when the oldest came; and the newest job with an error,
 * its error and when. fn is called once per location that has any;
 * 0, or -1. fn must not call the store. */
int store_job_open_by_location(struct store *st, void (*fn)(const char *location_id, int open,
    int64_t oldest_at, void *arg), void *arg);
int store_job_last_error_by_location(struct store *st, void (*fn)(const char *location_id, const char *error,
    int64_t at, void *arg), void *arg);
/* ms since the oldest unfinished job was received (0 when none). */
int64_t store_job_oldest_queued_age(struct store *st);

/* Status reports: claim takes a due pending report with a lease of
 * lease_ms, so two reporters never post the same report and a crash only
 * delays it. */
int store_report_claim(struct store *st, int64_t now, int64_t lease_ms, struct job **job_r);
/* Posts' ends, in one commit (one round trip on PostgreSQL): each a
 * compare-and-set on the report's state and status (a new status that
 * came during the post stays to be posted). next_at: when to try again.
 * posted, if set, is the status HighLevel took: a "status" event for the
 * trace, in the same commit. written[i] 1, 0 (its row had moved on) or
 * -1; 0, or -1 when nothing was written (a store error). */
struct report_finish {
	const struct job *job;
	const struct job_fsm *from, *to;
	int64_t next_at;
	const char *error, *posted;
};
int store_report_finish_many(struct store *st, const struct report_finish *f, size_t n, int *written);
/* Puts a claimed report back for next_at without counting the attempt
 * (it was never sent: our own rate limiter held it). 1, 0 gone, -1 error. */
int store_report_defer(struct store *st, int64_t id, int64_t next_at);
/* The location's other reports due by now wait until next_at too (its
 * window is full: claiming each only to put it back would cost two
 * writes a report a wake). How many, or -1. */
int store_report_defer_location(struct store *st, const char *location_id, int64_t now, int64_t next_at);
/* A delivery report (DSN, gateway) moved the states: its code and error
 * (if any) are the job's last, the report's attempts start again, due now
 * when report_due. event: the "dsn" trace event, in the same commit. */
int store_job_dsn(struct store *st, const struct job *job, const struct job_fsm *from,
    const struct job_fsm *to, bool report_due, int code, const char *error, const char *event,
    const char *rcpt_patch, const struct engage_add *ev, size_t n_ev);

/* Makes the location's waiting reports due now (after a re-install). */
int store_report_wake_location(struct store *st, const char *location_id);

#endif
