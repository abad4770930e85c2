/* inbound_queue: the spool between mailbox readers and posting (see
 * inbound_queue.h). */
#include "inbound_queue.h"
#include "app.h"
#include "config.h"
#include "inbound.h"
#include "log.h"
#include "poller.h"
#include "store_inbound.h"
#include "util.h"

#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#define QUEUE_IDLE_POLL_MS 1000
#define QUEUE_RETRY_BASE_MS 5000          /* HighLevel down: 5 s, 10 s, ... */
#define QUEUE_RETRY_MAX_MS (15 * 60 * 1000)
#define QUEUE_WAIT_SPREAD_MS 250          /* a full window: back when it has room, give or take */

struct inbound_queue {
	struct app *app;
	struct poller *posters;
};

/* One spooled message through inbound_handle. */
static void
post_one(struct inbound_queue *q, struct spooled *sp)
{
	struct app *app = q->app;
	const struct location_config *loc = config_location(app->cfg, sp->location_id);
	enum inbound_result r = INBOUND_RETRY;
	int64_t wait_ms = 0, next_at;

	if (loc)
		r = inbound_handle(app, loc, sp->raw, sp->len, sp->received_at, &wait_ms);
	else
		/* a reload restarts everything; a location that left the
		 * configuration keeps its mail here until it comes back */
		log_warn("inbound: spooled message for locationId=%s, which is not configured: kept", sp->location_id);
	if (r == INBOUND_DONE) {
		if (store_spool_done(app->store, sp->id) < 0)
			log_error("inbound: locationId=%s spooled message handled but not removed (store error): "
			    "it is handled again, and found done", sp->location_id);
		return;
	}
	/* a full window: when it has room, spread over a little more so that
	 * the waiting ones do not all come back in the same millisecond; the
	 * attempt is not counted. Else the backoff of a failure */
	if (r == INBOUND_WAIT)
		next_at = now_ms() + wait_ms + (int64_t)(random_u64() % QUEUE_WAIT_SPREAD_MS);
	else
		next_at = now_ms() + backoff_ms(sp->attempts - 1, QUEUE_RETRY_BASE_MS, QUEUE_RETRY_MAX_MS);
	if (store_spool_later(app->store, sp->id, next_at, r != INBOUND_WAIT) < 0)
		log_error("inbound: locationId=%s spooled message cannot be put back (store error): it is tried "
		    "again after a restart", sp->location_id);
}

/* A poster's step: one due spooled message. */
static int64_t
poster_step(void *arg, void **slot)
{
	struct inbound_queue *q = arg;
	struct spooled *sp = NULL;

	(void)slot;
	if (store_spool_claim(q->app->store, now_ms(), &sp) == 1) {
		post_one(q, sp);
		store_spooled_free(sp);
		return 0;
	}
	return poller_until(store_spool_next_due(q->app->store), QUEUE_IDLE_POLL_MS);
}

struct inbound_queue *
inbound_queue_start(struct app *app, int posters)
{
	struct inbound_queue *q = xcalloc(1, sizeof(*q));
	int left;

	struct poller_params pp = { .name = "inbound", .threads = posters, .max_wait_ms = QUEUE_IDLE_POLL_MS,
		.step = poster_step, .ctx = q };

	q->app = app;
	/* the last run's claims were released by instance_start */
	if ((left = store_spool_count(app->store)) > 0)
		log_info("inbound: %d spooled message(s) from before the start", left);
	q->posters = poller_start(&pp);
	return q;
}

void
inbound_queue_stop(struct inbound_queue *q)
{
	if (!q)
		return;
	poller_stop(q->posters);
	free(q);
}

int
inbound_queue_put(struct inbound_queue *q, struct app *app, const char *location_id, const char *raw, size_t len)
{
	if (store_spool_add(app->store, location_id, raw, len) != 1)
		return -1;
	if (q)
		poller_wake(q->posters);
	return 0;
}
