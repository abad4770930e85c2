/* jobs: the job state machine (fsm/job.h) applied to the store. Each
 * call takes the states it starts from (the caller's copy, or read from
 * the store), decides with the pure transition functions, and writes with
 * compare-and-set. When the row has moved on meanwhile (a DSN or a
 * gateway report during a send), it reads it again and decides again. A
 * store error is tried again a few times over about two seconds, then
 * returned for the caller to handle: never logged and dropped.
 * Return convention: 1 written, 0 the event does not apply (or no such
 * job), -1 a store error that did not heal. */
#ifndef MB_JOBS_H
#define MB_JOBS_H

#include <stdbool.h>
#include <stdint.h>

#include "job.h"
#include "store_jobs.h"
#include "store_threads.h"

/* A worker takes the oldest due queued job: 1, 0 none due, -1 error. */
int jobs_claim(struct store *st, int64_t now, struct job **job_r);
/* Up to max of them, oldest first into *jobs_r (malloc'd, with every job
 * the caller's): how many, or -1. */
int jobs_claim_batch(struct store *st, int64_t now, int max, struct job ***jobs_r);
/* A claimed job not begun goes back to the queue, its attempt not
 * counted (the instance stops with it in hand). Tried once: after -1 it
 * stays claimed, for the recovery at the next start (or by another
 * instance). 1, 0 (it had moved), -1. */
int jobs_release(struct store *st, struct job *job);
/* When the next queued job is due (ms since the epoch), or -1 when none. */
int64_t jobs_next_due(struct store *st);
/* Right before DATA: claimed -> sending, with the threading record m. 0
 * or -1: the send must not go on. */
int jobs_sending(struct store *st, struct job *job, const struct msgmap *m);
/* The attempt ended (job->fsm is where it stood). On 1, job->fsm is the
 * new state and a->report_due says whether a status is now due. */
int jobs_attempt(struct store *st, struct job *job, enum job_outcome outcome, enum report_status status,
    struct job_attempt_rec *a);
/* The reporter's post of job->fsm.status ended. 0: a new status came
 * meanwhile, and stays pending (it is posted next). */
int jobs_report(struct store *st, struct job *job, enum report_outcome outcome, int64_t next_at,
    const char *error);
/* Several posts' ends, each as jobs_report, in one commit: r[i] as
 * jobs_report would return for jobs[i]. */
struct report_end {
	enum report_outcome outcome;
	int64_t next_at;
	const char *error;
};
void jobs_report_many(struct store *st, struct job *const *jobs, const struct report_end *e, size_t n, int *r);
/* The reporter did not post (our own rate limiter held the call): the
 * report waits until next_at, the attempt not counted. A store error is
 * tried again, as the other events' are. 1, 0 gone, -1 error. */
int jobs_report_defer(struct store *st, const struct job *job, int64_t next_at);
/* A delivery report for messageId message_id. *due_r: a status is now
 * due (wake a reporter). 0: no job of that id that could have been sent.
 * rcpt_patch (JSON, or NULL): the report's per-recipient outcomes, merged
 * into the job's recipients ({"addr": {"code", "text", "dsn": action}});
 * ev: its engagement events, in the same commit. */
int jobs_dsn(struct store *st, const char *message_id, enum report_status status, int code, const char *error,
    const char *event, const char *rcpt_patch, const struct engage_add *ev, size_t n_ev, bool *due_r);
/* Claimed or sending jobs whose instance is gone go back to queued: at
 * start, the last run's too (after a crash); then, every heartbeat, those
 * of other instances that died (store_instances.h). Returns how many were
 * uncertain (found sending), or -1. */
int jobs_recover(struct store *st, bool at_start);
/* An operator's retry and drop, by messageId. */
int jobs_retry(struct store *st, const char *message_id);
int jobs_drop(struct store *st, const char *message_id);

#endif
