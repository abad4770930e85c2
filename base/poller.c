/* poller: see poller.h. */
#include "poller.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

struct poller {
	struct poller_params p;
	pthread_t *threads;
	int n;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	unsigned seq;              /* bumped by each wake */
	bool stop;
};

static void *
poller_thread(void *arg)
{
	struct poller *pl = arg;
	void *slot = NULL;

	thread_name(pl->p.name);
	if (pl->p.nice && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), pl->p.nice) < 0)
		log_debug("%s: setpriority: %s", pl->p.name, strerror(errno));
	for (;;) {
		unsigned seen;
		int64_t wait;

		pthread_mutex_lock(&pl->lock);
		seen = pl->seq;
		if (pl->stop) {
			pthread_mutex_unlock(&pl->lock);
			break;
		}
		pthread_mutex_unlock(&pl->lock);
		wait = pl->p.step(pl->p.ctx, &slot);
		if (wait <= 0)
			continue;
		if (wait > pl->p.max_wait_ms)
			wait = pl->p.max_wait_ms;
		pthread_mutex_lock(&pl->lock);
		if (!pl->stop && pl->seq == seen)
			cond_wait_ms(&pl->cond, &pl->lock, wait);
		pthread_mutex_unlock(&pl->lock);
	}
	if (pl->p.fini)
		pl->p.fini(pl->p.ctx, slot);
	return NULL;
}

struct poller *
poller_start(const struct poller_params *p)
{
	struct poller *pl = xcalloc(1, sizeof(*pl));

	pl->p = *p;
	pthread_mutex_init(&pl->lock, NULL);
	pthread_cond_init(&pl->cond, NULL);
	pl->threads = xcalloc((size_t)(p->threads > 0 ? p->threads : 1), sizeof(*pl->threads));
	for (int i = 0; i < p->threads; i++) {
		if (pthread_create(&pl->threads[pl->n], NULL, poller_thread, pl) == 0)
			pl->n++;
		else
			log_error("%s: cannot start a thread (%d of %d)", p->name, i + 1, p->threads);
	}
	if (pl->n == 0) {
		pthread_cond_destroy(&pl->cond);
		pthread_mutex_destroy(&pl->lock);
		free(pl->threads);
		free(pl);
		return NULL;
	}
	return pl;
}

void
poller_wake(struct poller *pl)
{
	if (!pl)
		return;
	pthread_mutex_lock(&pl->lock);
	pl->seq++;
	pthread_cond_signal(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
}

void
poller_stop(struct poller *pl)
{
	if (!pl)
		return;
	pthread_mutex_lock(&pl->lock);
	pl->stop = true;
	pthread_cond_broadcast(&pl->cond);
	pthread_mutex_unlock(&pl->lock);
	for (int i = 0; i < pl->n; i++)
		pthread_join(pl->threads[i], NULL);
	pthread_cond_destroy(&pl->cond);
	pthread_mutex_destroy(&pl->lock);
	free(pl->threads);
	free(pl);
}

int64_t
poller_until(int64_t next_due, int64_t cap)
{
	int64_t d;

	if (next_due < 0)
		return cap;
	d = next_due - now_ms();
	return d > cap ? cap : d;
}
