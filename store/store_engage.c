/* store_engage: the engagement outbox (store_engage.h). */
#include "store_private.h"
#include "store_engage.h"
#include "job.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

int
store_engage_add(struct store *st, const char *location_id, const char *message_id, const struct engage_add *ev,
    size_t n, int durable)
{
	int64_t now = now_ms();
	int added = 0, r;

	if (n == 0)
		return 0;
	if (store_tx_begin(st, "engagement") < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		if ((r = store_tx_step(st, ENGAGE_INSERT, "ssssi", message_id, ev[i].event, ev[i].who ? ev[i].who : "",
		    location_id, now)) > 0)
			added += r;
	if (store_tx_end(st, "engagement", durable != 0) < 0)
		return -1;
	return added;
}

void
store_engage_batch_free(struct engage_batch *b)
{
	if (!b)
		return;
	for (size_t i = 0; i < b->n; i++) {
		free(b->rows[i].event);
		free(b->rows[i].who);
	}
	free(b->rows);
	free(b->message_id);
	free(b->location_id);
	free(b);
}

/* RETURNING message_id, location_id, event, who, attempts */
static void
row_engage(const struct store_row *s, void *arg)
{
	struct engage_batch **bp = arg, *b = *bp;
	struct engage_row *r;

	if (!b) {
		b = *bp = xcalloc(1, sizeof(*b));
		b->message_id = store_col_text(s, 0);
		b->location_id = store_col_text(s, 1);
	}
	b->rows = xrealloc(b->rows, (b->n + 1) * sizeof(*b->rows));
	r = &b->rows[b->n++];
	r->event = store_col_text(s, 2);
	r->who = store_col_text(s, 3);
	r->attempts = store_col_int(s, 4);
	if (r->attempts > b->attempts)
		b->attempts = r->attempts;
}

#define ENGAGE_LEASE "UPDATE engagement SET next_at=?2, attempts=attempts+1 WHERE done_at IS NULL AND next_at<=?1 " \
	"AND message_id="
#define ENGAGE_RETURNING " RETURNING message_id, location_id, event, who, attempts"

static int
claim(struct store *st, const char *sql, const char *fmt, int64_t now, int64_t lease_ms, const char *message_id,
    struct engage_batch **b_r)
{
	int n;

	*b_r = NULL;
	n = message_id ? store_query_rows(st, row_engage, b_r, sql, fmt, now, now + lease_ms, message_id) :
	    store_query_rows(st, row_engage, b_r, sql, fmt, now, now + lease_ms);
	if (n < 0) {
		store_engage_batch_free(*b_r);
		*b_r = NULL;
		return -1;
	}
	return n > 0;
}

int
store_engage_claim(struct store *st, int64_t now, int64_t lease_ms, struct engage_batch **b_r)
{
	/* the job's report state read through its message_id (unique) for
	 * each candidate: as NOT EXISTS, PostgreSQL joined through
	 * jobs_report_pending and walked every pending report per candidate
	 * (2.5 ms a claim in a burst, auto_explain) */
	return claim(st, ENGAGE_LEASE "(SELECT e.message_id FROM engagement e WHERE e.done_at IS NULL AND "
	    "e.next_at<=?1 AND (SELECT j.report_state FROM jobs j WHERE j.message_id=e.message_id) IS DISTINCT FROM '"
	    REPORT_NAME_PENDING "' ORDER BY e.next_at LIMIT 1" STORE_SKIP_LOCKED ")" ENGAGE_RETURNING, "ii", now, lease_ms, NULL, b_r);
}

int
store_engage_claim_message(struct store *st, const char *message_id, int64_t now, int64_t lease_ms,
    struct engage_batch **b_r)
{
	return claim(st, ENGAGE_LEASE "?3" ENGAGE_RETURNING, "iis", now, lease_ms, message_id, b_r);
}

static int
finish(struct store *st, const struct engage_batch *b, const char *sql, int64_t at, const char *error)
{
	if (store_tx_begin(st, "engagement") < 0)
		return -1;
	for (size_t i = 0; i < b->n; i++)
		store_tx_step(st, sql, "sssis", b->message_id, b->rows[i].event, b->rows[i].who, at, error);
	return store_tx_end(st, "engagement", false) < 0 ? -1 : 1;
}

int
store_engage_done(struct store *st, const struct engage_batch *b, const char *error)
{
	return finish(st, b, "UPDATE engagement SET done_at=?4, error=?5 WHERE message_id=?1 AND event=?2 AND who=?3",
	    now_ms(), error);
}

int
store_engage_later(struct store *st, const struct engage_batch *b, int64_t next_at, const char *error)
{
	return finish(st, b, "UPDATE engagement SET next_at=?4, error=?5 WHERE message_id=?1 AND event=?2 AND who=?3",
	    next_at, error);
}

int64_t
store_engage_next_due(struct store *st)
{
	int64_t at = -1;
	/* what store_engage_claim would take: a message whose report is
	 * pending is the reporter's (a poller told "due now" for it would spin) */
	store_query_row(st, store_row_int64, &at, "SELECT MIN(e.next_at) FROM engagement e WHERE e.done_at IS NULL AND "
	    "NOT EXISTS (SELECT 1 FROM jobs j WHERE j.message_id=e.message_id AND j.report_state='" REPORT_NAME_PENDING "')",
	    "");
	return at;
}

struct each_ctx {
	void (*fn)(const char *, const char *, int64_t, const char *, void *);
	void *arg;
};

static void
row_each(const struct store_row *s, void *arg)
{
	struct each_ctx *c = arg;
	c->fn(store_col_str(s, 0), store_col_str(s, 1),
	    store_col_null(s, 2) ? 0 : store_col_int(s, 2),
	    store_col_str(s, 3), c->arg);
}

int
store_engage_each(struct store *st, const char *message_id, void (*fn)(const char *event, const char *who,
    int64_t done_at, const char *error, void *arg), void *arg)
{
	struct each_ctx c = { fn, arg };
	return store_query_rows(st, row_each, &c, "SELECT event, who, done_at, error FROM engagement WHERE "
	    "message_id=?1 ORDER BY created_at, event, who", "s", message_id);
}
