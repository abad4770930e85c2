#include "imap_watch.h"
#include "imap_session.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define WATCH_BACKOFF_BASE_MS  1000
#define WATCH_BACKOFF_MAX_MS   (5 * 60 * 1000)
#define WATCH_RETRY_MS         15000     /* the sink asked to retry a message */
#define WATCH_MAX_EVENTS       256
#define WATCH_PAUSED_MS        30000     /* a paused mailbox looks again (or when poked) */

enum box_state { BOX_WAIT, BOX_IDLE, BOX_BUSY };

struct box {
	struct imap_session s;
	/* BOX_BUSY from work_push until the reactor takes it back: a worker
	 * never writes state (the reactor's timer scan and a poke read it
	 * under the lock), only what comes next, in after, which box_arm
	 * applies. A box the scan saw as waiting while its worker still held
	 * it was pushed twice, and its queue links were crossed. */
	enum box_state state;
	enum box_state after;      /* what the step decided */
	int fd;                    /* while BOX_IDLE */
	int64_t deadline;          /* mono ms: re-IDLE, poll, or reconnect */
	int failures;
	bool fd_ready;
	bool poked;                /* look at paused again once back from a worker */
	struct box *next_work;     /* work or return queue link */
};

struct imap_watch {
	const struct imap_sink *sink;
	struct box *boxes;
	size_t n_boxes;
	int epfd, evfd;
	pthread_t reactor;
	pthread_t *workers;
	int n_workers;
	pthread_mutex_t lock;
	pthread_cond_t work_cond;
	struct box *work_head, *work_tail;   /* reactor -> workers */
	struct box *returned;                /* workers -> reactor */
	bool stop;
};

static void
work_push(struct imap_watch *w, struct box *b)
{
	b->state = BOX_BUSY;
	b->next_work = NULL;
	if (w->work_tail)
		w->work_tail->next_work = b;
	else
		w->work_head = b;
	w->work_tail = b;
	pthread_cond_signal(&w->work_cond);
}

/* Worker side: one round of work for a mailbox, then back to waiting. */
static void
box_step(struct box *b)
{
	struct imap_session *s = &b->s;
	char *err = NULL;
	int r = 0;
	int64_t next_check = -1;

	const char *why = s->sink->paused ? s->sink->paused(s->sink->ctx, s->mb->id) : NULL;

	if (why) {
		/* the owner wants it left alone (an UNINSTALL: nobody to post
		 * to; another instance watches it); look again later */
		if (s->imap) {
			imap_session_close(s, true);
			s->sink->status(s->sink->ctx, s->mb->id, "stopped", why);
			log_info("imap: locationId=%s watcher stopped: %s", s->mb->id, why);
		}
		b->after = BOX_WAIT;
		b->deadline = mono_ms() + WATCH_PAUSED_MS;
		return;
	}
	if (!s->imap) {
		if (imap_session_connect(s, &err) < 0)
			goto fail;
		s->sink->status(s->sink->ctx, s->mb->id, s->has_idle ? "idling" : "polling", NULL);
	} else if (s->idling) {
		if (imap_session_idle_done(s, &err) < 0)
			goto fail;
	} else if (!s->has_idle && imap_session_noop(s, &err) < 0) {
		goto fail;
	}
	/* IDLE only wakes us; the UID range is the truth. Mail announced
	 * while we were busy (EXISTS on a FETCH or STORE reply) is read now,
	 * not at the next wake-up. */
	for (int round = 0; round < 5; round++) {
		r = imap_session_catchup(s, &err);
		if (r != 0 || !imap_session_pending(s))
			break;
	}
	if (r < 0)
		goto fail;
	if (r == 1)
		next_check = WATCH_RETRY_MS;
	b->failures = 0;
	if (s->has_idle) {
		b->fd = imap_session_idle_start(s, &err);
		if (b->fd < 0)
			goto fail;
		b->after = BOX_IDLE;
		b->deadline = mono_ms() + (next_check > 0 && next_check < s->mb->idle_interval * 1000 ?
		    next_check : s->mb->idle_interval * 1000);
	} else {
		b->after = BOX_WAIT;
		b->deadline = mono_ms() + (next_check > 0 ? next_check : s->mb->poll_interval * 1000);
	}
	return;
fail:
	b->failures++;
	imap_session_close(s, false);
	s->sink->status(s->sink->ctx, s->mb->id, "backing off", err);
	b->after = BOX_WAIT;
	b->deadline = mono_ms() + backoff_ms(b->failures - 1, WATCH_BACKOFF_BASE_MS, WATCH_BACKOFF_MAX_MS);
	log_warn("imap: locationId=%s %s; retry in %lld ms", s->mb->id, err ? err : "error",
	    (long long)(b->deadline - mono_ms()));
	free(err);
}

static void *
watch_worker(void *arg)
{
	struct imap_watch *w = arg;
	uint64_t one = 1;

	thread_name("imap-worker");
	for (;;) {
		struct box *b;
		pthread_mutex_lock(&w->lock);
		while (!w->stop && !w->work_head)
			pthread_cond_wait(&w->work_cond, &w->lock);
		if (w->stop) {
			pthread_mutex_unlock(&w->lock);
			return NULL;
		}
		b = w->work_head;
		w->work_head = b->next_work;
		if (!w->work_head)
			w->work_tail = NULL;
		pthread_mutex_unlock(&w->lock);

		box_step(b);

		pthread_mutex_lock(&w->lock);
		b->next_work = w->returned;
		w->returned = b;
		pthread_mutex_unlock(&w->lock);
		if (write(w->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_error("imap: eventfd: %s", strerror(errno));
	}
}

/* Reactor side: a mailbox came back from a worker. */
static void
box_arm(struct imap_watch *w, struct box *b)
{
	b->state = b->after;
	if (b->poked) {
		/* poked while it worked: step again now */
		b->poked = false;
		b->deadline = mono_ms();
		return;
	}
	if (b->state == BOX_IDLE) {
		struct epoll_event ev = { .events = EPOLLIN, .data.ptr = b };
		/* bytes libetpan already read never wake epoll; an EXISTS parsed
		 * while entering IDLE is not on the socket any more either */
		if (imap_session_buffered(&b->s) || imap_session_pending(&b->s)) {
			work_push(w, b);
			return;
		}
		if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, b->fd, &ev) < 0) {
			log_error("imap: epoll_ctl: %s", strerror(errno));
			b->deadline = mono_ms();
		}
	}
}

static void
box_disarm(struct imap_watch *w, struct box *b)
{
	if (b->state == BOX_IDLE)
		epoll_ctl(w->epfd, EPOLL_CTL_DEL, b->fd, NULL);
}

static void *
watch_reactor(void *arg)
{
	struct imap_watch *w = arg;
	struct epoll_event evs[WATCH_MAX_EVENTS];

	thread_name("imap-idle");
	for (;;) {
		int64_t now = mono_ms(), next = now + 60000;
		int n, timeout;

		pthread_mutex_lock(&w->lock);
		if (w->stop) {
			pthread_mutex_unlock(&w->lock);
			break;
		}
		while (w->returned) {
			struct box *b = w->returned;
			w->returned = b->next_work;
			box_arm(w, b);
		}
		/* timers: a linear scan is fine for thousands of mailboxes at
		 * this wake-up rate; a heap would be the next step */
		for (size_t i = 0; i < w->n_boxes; i++) {
			struct box *b = &w->boxes[i];
			if (b->state == BOX_BUSY)
				continue;
			if (b->deadline <= now) {
				box_disarm(w, b);
				work_push(w, b);
			} else if (b->deadline < next) {
				next = b->deadline;
			}
		}
		pthread_mutex_unlock(&w->lock);

		timeout = (int)(next - now);
		n = epoll_wait(w->epfd, evs, WATCH_MAX_EVENTS, timeout < 0 ? 0 : timeout);
		pthread_mutex_lock(&w->lock);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.ptr == NULL) {
				uint64_t v;
				if (read(w->evfd, &v, sizeof(v)) < 0 && errno != EAGAIN)
					log_error("imap: eventfd read: %s", strerror(errno));
				continue;
			}
			struct box *b = evs[i].data.ptr;
			if (b->state == BOX_IDLE) {
				box_disarm(w, b);
				work_push(w, b);
			}
		}
		pthread_mutex_unlock(&w->lock);
	}
	return NULL;
}

void
imap_watch_poke(struct imap_watch *w, const char *id)
{
	uint64_t one = 1;

	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; i < w->n_boxes; i++) {
		struct box *b = &w->boxes[i];
		if (strcmp(b->s.mb->id, id) != 0)
			continue;
		if (b->state == BOX_BUSY)
			b->poked = true;
		else
			b->deadline = mono_ms();   /* the reactor's scan takes it out of IDLE */
	}
	pthread_mutex_unlock(&w->lock);
	if (write(w->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_error("imap: eventfd write: %s", strerror(errno));
}

/* How many boxes before k share its server (host and port): its place
 * in that server's start-up queue. Quadratic, once, at start: 10,000
 * boxes on one server is 5e7 string compares, well under a second. */
static size_t
server_rank(const struct imap_mailbox *boxes, size_t k)
{
	size_t rank = 0;

	for (size_t j = 0; j < k; j++)
		if (boxes[j].port == boxes[k].port && !strcasecmp(boxes[j].host ? boxes[j].host : "",
		    boxes[k].host ? boxes[k].host : ""))
			rank++;
	return rank;
}

struct imap_watch *
imap_watch_start(const struct imap_mailbox *boxes, size_t n, const struct imap_sink *sink, int workers,
    int connect_rate)
{
	struct imap_watch *w = xcalloc(1, sizeof(*w));
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
	int64_t now = mono_us();

	w->sink = sink;
	w->n_boxes = n;
	w->boxes = xcalloc(n ? n : 1, sizeof(*w->boxes));
	for (size_t k = 0; k < n; k++) {
		w->boxes[k].s.mb = &boxes[k];
		w->boxes[k].s.sink = sink;
		w->boxes[k].state = BOX_WAIT;
		/* start-up paced per server (connect_rate a second): thousands of
		 * TLS logins at once help no server; different servers start at
		 * once */
		w->boxes[k].deadline = (now + (int64_t)server_rank(boxes, k) * 1000000 /
		    (connect_rate > 0 ? connect_rate : 1)) / 1000;
	}
	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->work_cond, NULL);
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->evfd, &ev);
	/* never more threads than mailboxes (none without any) */
	if ((size_t)workers > n)
		workers = (int)n;
	w->workers = xcalloc((size_t)(workers > 0 ? workers : 1), sizeof(pthread_t));
	for (; w->n_workers < workers; w->n_workers++)
		pthread_create(&w->workers[w->n_workers], NULL, watch_worker, w);
	pthread_create(&w->reactor, NULL, watch_reactor, w);
	log_info("imap: watching %zu mailbox(es) with %d worker(s)", w->n_boxes, workers);
	return w;
}

void
imap_watch_stop(struct imap_watch *w)
{
	uint64_t one = 1;
	if (!w)
		return;
	pthread_mutex_lock(&w->lock);
	w->stop = true;
	pthread_cond_broadcast(&w->work_cond);
	pthread_mutex_unlock(&w->lock);
	if (write(w->evfd, &one, sizeof(one)) < 0)
		log_error("imap: eventfd: %s", strerror(errno));
	pthread_join(w->reactor, NULL);
	for (int i = 0; i < w->n_workers; i++)
		pthread_join(w->workers[i], NULL);
	for (size_t i = 0; i < w->n_boxes; i++)
		imap_session_close(&w->boxes[i].s, false);
	close(w->epfd);
	close(w->evfd);
	pthread_cond_destroy(&w->work_cond);
	pthread_mutex_destroy(&w->lock);
	free(w->workers);
	free(w->boxes);
	free(w);
}

size_t
imap_watch_connected(struct imap_watch *w)
{
	size_t n = 0;
	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; i < w->n_boxes; i++)
		if (w->boxes[i].state != BOX_BUSY && w->boxes[i].s.imap)
			n++;
	pthread_mutex_unlock(&w->lock);
	return n;
}

size_t
imap_watch_count(const struct imap_watch *w)
{
	return w->n_boxes;
}
