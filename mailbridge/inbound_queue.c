/* inbound_queue: the spool between mailbox readers and posting (see
 * inbound_queue.h). */
#include "inbound_queue.h"
#include "app.h"
#include "config.h"
#include "inbound.h"
#include "log.h"
#include "store_inbound.h"
#include "util.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#define QUEUE_IDLE_POLL_MS 1000
#define QUEUE_RETRY_BASE_MS 5000          /* HighLevel down: 5 s, 10 s, ... */
#define QUEUE_RETRY_MAX_MS (15 * 60 * 1000)

struct inbound_queue {
	struct app *app;
	pthread_t *threads;
	int n;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned seq;              /* bumped by each put: a poster waiting sees it */
	bool stop;
};

/* One spooled message through inbound_handle. */
static void
post_one(struct inbound_queue *q, struct spooled *sp)
{
	struct app *app = q->app;
	const struct location_config *loc = config_location(app->cfg, sp->location_id);
	enum inbound_result r = INBOUND_RETRY;

	if (loc)
		r = inbound_handle(app, loc, sp->raw, sp->len, sp->received_at);
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
	if (store_spool_later(app->store, sp->id, now_ms() + backoff_ms(sp->attempts - 1, QUEUE_RETRY_BASE_MS,
	    QUEUE_RETRY_MAX_MS)) < 0)
		log_error("inbound: locationId=%s spooled message cannot be put back (store error): it is tried "
		    "again after a restart", sp->location_id);
}

static void
wait_for_work(struct inbound_queue *q, unsigned seen, int64_t wait_ms)
{
	pthread_mutex_lock(&q->lock);
	if (!q->stop && q->seq == seen)
		cond_wait_ms(&q->cond, &q->lock, wait_ms);
	pthread_mutex_unlock(&q->lock);
}

static void *
poster(void *arg)
{
	struct inbound_queue *q = arg;
	struct store *st = q->app->store;

	for (;;) {
		struct spooled *sp = NULL;
		unsigned seen;
		int64_t next, wait;

		pthread_mutex_lock(&q->lock);
		seen = q->seq;
		if (q->stop) {
			pthread_mutex_unlock(&q->lock);
			break;
		}
		pthread_mutex_unlock(&q->lock);
		if (store_spool_claim(st, now_ms(), &sp) == 1) {
			post_one(q, sp);
			store_spooled_free(sp);
			continue;
		}
		next = store_spool_next_due(st);
		wait = next < 0 ? QUEUE_IDLE_POLL_MS : next - now_ms();
		if (wait > QUEUE_IDLE_POLL_MS)
			wait = QUEUE_IDLE_POLL_MS;
		if (wait > 0)
			wait_for_work(q, seen, wait);
	}
	return NULL;
}

struct inbound_queue *
inbound_queue_start(struct app *app, int posters)
{
	struct inbound_queue *q = xcalloc(1, sizeof(*q));
	int left;

	q->app = app;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->cond, NULL);
	/* claims held by a process that is gone */
	if (store_spool_release_all(app->store) < 0)
		log_error("inbound: cannot release the spool's old claims; those messages wait for the next start");
	if ((left = store_spool_count(app->store)) > 0)
		log_info("inbound: %d spooled message(s) from before the start", left);
	q->threads = xcalloc((size_t)posters, sizeof(*q->threads));
	for (int i = 0; i < posters; i++)
		if (pthread_create(&q->threads[q->n], NULL, poster, q) == 0)
			q->n++;
	return q;
}

void
inbound_queue_stop(struct inbound_queue *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->cond);
	pthread_mutex_unlock(&q->lock);
	for (int i = 0; i < q->n; i++)
		pthread_join(q->threads[i], NULL);
	pthread_cond_destroy(&q->cond);
	pthread_mutex_destroy(&q->lock);
	free(q->threads);
	free(q);
}

int
inbound_queue_put(struct inbound_queue *q, struct app *app, const char *location_id, const char *raw, size_t len)
{
	if (store_spool_add(app->store, location_id, raw, len) != 1)
		return -1;
	if (q) {
		pthread_mutex_lock(&q->lock);
		q->seq++;
		pthread_cond_signal(&q->cond);
		pthread_mutex_unlock(&q->lock);
	}
	return 0;
}
