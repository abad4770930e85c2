/* store_events: the message journey and retention (store_events.h). */
#include "store_private.h"
#include "store_events.h"
#include "job.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct event_cb {
	void (*fn)(int64_t at, const char *message_id, const char *kind, const char *detail, void *arg);
	void *arg;
};

static void
event_row(const struct store_row *r, void *arg)
{
	struct event_cb *cb = arg;
	cb->fn(store_col_int(r, 0), store_col_str(r, 1), store_col_str(r, 2), store_col_str(r, 3), cb->arg);
}

int
store_events_recent(struct store *st, const char *location_id, int limit, void (*fn)(int64_t at,
    const char *message_id, const char *kind, const char *detail, void *arg), void *arg)
{
	struct event_cb cb = { fn, arg };
	return store_query_rows(st, event_row, &cb, "SELECT at, message_id, kind, detail FROM events "
	    "WHERE location_id=?1 ORDER BY id DESC LIMIT ?2", "si", location_id, (int64_t)limit);
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
	"INSERT INTO replay_guard (fp, at) SELECT mb_fp('job:' || message_id), created_at FROM jobs "
	"WHERE id IN (" PRUNE_JOBS_BATCH ") ON CONFLICT DO NOTHING",
};
/* A table pruned by age alone: rows whose id lies below the first row at
 * or after the cutoff. The id is SQLite's rowid (events.id is its rowid);
 * PostgreSQL's tables carry an identity column of that name. */
#define PRUNE_BY_AGE(table, id, time_col) { \
	"SELECT " id " FROM " table " WHERE " time_col " >= ?1 ORDER BY " id " LIMIT 1", \
	"DELETE FROM " table " WHERE " id " IN (SELECT " id " FROM " table " WHERE " id " < ?2 " \
	"ORDER BY " id " " PRUNE_LIMIT(STORE_PRUNE_BATCH) ")", NULL, \
}
static const struct prune_spec prune_webhooks = PRUNE_BY_AGE("webhook_seen", "rowid", "received_at");
static const struct prune_spec prune_inbound = PRUNE_BY_AGE("inbound_seen", "rowid", "created_at");
static const struct prune_spec prune_threads = PRUNE_BY_AGE("message_map", "rowid", "created_at");
static const struct prune_spec prune_events = PRUNE_BY_AGE("events", "id", "at");
/* engagement rows keep an event from being reported twice as long as a
 * reply or a hit can still name the message: the threading window */
static const struct prune_spec prune_engagement = PRUNE_BY_AGE("engagement", "rowid", "created_at");
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

	if (ps->first && store_query_row(st, store_row_int64, &first, ps->first, "i", cutoff) < 0)
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
	    (r->engagement = store_prune_one(st, &prune_engagement, threads_before)) < 0 ||
	    (r->events = store_prune_one(st, &prune_events, events_before)) < 0 ||
	    (r->replays = store_prune_one(st, &prune_replays, replays_before)) < 0)
		return -1;
	return 0;
}

int
store_events_each(struct store *st, const char *key, void (*fn)(int64_t at, const char *message_id,
    const char *kind, const char *detail, void *arg), void *arg)
{
	struct event_cb cb = { fn, arg };
	/* the message itself, what threads to it (replies, DSNs name it in
	 * detail), and for an address every job or reply that mentions it */
	int n = store_query_rows(st, event_row, &cb,
	    "SELECT at, message_id, kind, detail FROM events WHERE message_id=?1 OR detail LIKE '%' || ?1 || '%' "
	    "OR message_id IN (SELECT ghl_message_id FROM message_map WHERE rfc_message_id=?1) "
	    "OR message_id IN (SELECT j.message_id FROM jobs j LEFT JOIN job_payload p ON p.job_id = j.id "
	    "WHERE instr(mb_payload(p.payload), ?1) > 0 OR instr(j.rcpt_state, ?1) > 0) ORDER BY at, id LIMIT 1000", "s", key);
	return n < 0 ? 0 : n;
}
