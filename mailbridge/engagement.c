/* engagement: see engagement.h. */
#include "engagement.h"
#include "app.h"
#include "config.h"
#include "engage.h"
#include "log.h"
#include "metrics.h"
#include "poller.h"
#include "store_engage.h"
#include "store_jobs.h"
#include "store_kv.h"
#include "util.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define ENGAGE_LEASE_MS     (2 * 60 * 1000)
#define ENGAGE_IDLE_MS      1000
#define ENGAGE_MIN_WAIT_MS  50
#define ENGAGE_BASE_MS      2000          /* as statuses: a 403 heals in seconds */
#define ENGAGE_MAX_MS       (10 * 60 * 1000)
#define ENGAGE_MAX_ATTEMPTS 60
#define ENGAGE_AUTH_WAIT_MS (5 * 60 * 1000)

/* status_api's memory, per location, in the store's key-value pairs */
#define STATUS_API_KV "mailbridge"

/* What the store says of each location's status API, kept a while: it is
 * asked twice a message (the attempt's events, the report) and changes
 * once in a location's life, if ever. Another instance's finding reaches
 * this one when its entry expires, or sooner by its own 404. */
#define STATUS_API_MEMO_MS  (60 * 1000)
#define STATUS_API_MEMO_MAX 4096

struct status_api_memo {
	char *location_id;
	bool v2;
	int64_t until;
};

struct engagement {
	struct app *app;
	struct poller *poller;
	pthread_mutex_t memo_lock;
	struct status_api_memo *memo;
	size_t n_memo, cap_memo;
};

/* 1 and *v2_r when known and fresh, else 0 */
static int
memo_get(struct engagement *e, const char *location_id, bool *v2_r)
{
	int64_t now = now_ms();
	int found = 0;

	pthread_mutex_lock(&e->memo_lock);
	for (size_t i = 0; i < e->n_memo; i++)
		if (!strcmp(e->memo[i].location_id, location_id)) {
			if (now < e->memo[i].until) {
				*v2_r = e->memo[i].v2;
				found = 1;
			}
			break;
		}
	pthread_mutex_unlock(&e->memo_lock);
	return found;
}

static void
memo_put(struct engagement *e, const char *location_id, bool v2)
{
	size_t i;

	pthread_mutex_lock(&e->memo_lock);
	for (i = 0; i < e->n_memo && strcmp(e->memo[i].location_id, location_id); i++)
		;
	if (i == e->n_memo) {
		if (e->n_memo == STATUS_API_MEMO_MAX) {
			/* more locations than it keeps: start again (each costs one read) */
			for (size_t k = 0; k < e->n_memo; k++)
				free(e->memo[k].location_id);
			e->n_memo = i = 0;
		}
		if (e->n_memo == e->cap_memo) {
			e->cap_memo = e->cap_memo ? 2 * e->cap_memo : 16;
			e->memo = xrealloc(e->memo, e->cap_memo * sizeof(*e->memo));
		}
		e->memo[i].location_id = xstrdup(location_id);
		e->n_memo++;
	}
	e->memo[i].v2 = v2;
	e->memo[i].until = now_ms() + STATUS_API_MEMO_MS;
	pthread_mutex_unlock(&e->memo_lock);
}

bool
engagement_v3(struct app *app, const char *location_id)
{
	const char *api = app->cfg->status_api;
	char *key, *v = NULL;
	bool v2;
	int r;

	if (!strcmp(api, "v2") || !strcmp(api, "v3"))
		return !strcmp(api, "v3");
	if (app->engagement && memo_get(app->engagement, location_id, &v2))
		return !v2;
	key = xasprintf("status_api:%s", location_id);
	r = store_kv_get(app->store, STATUS_API_KV, key, &v);
	v2 = r == 1 && v && !strcmp(v, "v2");
	free(v);
	free(key);
	if (r >= 0 && app->engagement)
		memo_put(app->engagement, location_id, v2);
	return !v2;
}

bool
engagement_v3_missing(struct app *app, const char *location_id, const struct ghl_result *res)
{
	char *key;

	if (res->cls != GHL_PERMANENT || (res->status != 404 && res->status != 405) ||
	    strcmp(app->cfg->status_api, "auto"))
		return false;
	key = xasprintf("status_api:%s", location_id);
	log_warn("report: locationId=%s HighLevel answered the v3 email status with %ld: using v2 for this location "
	    "from now on", location_id, res->status);
	if (app->engagement)
		memo_put(app->engagement, location_id, true);
	if (store_kv_put(app->store, STATUS_API_KV, key, "v2") < 0)
		log_error("report: locationId=%s cannot remember v2 (store error): v3 is tried again next time",
		    location_id);
	free(key);
	return true;
}

enum ghl_next
engagement_next(const struct ghl_result *res, int attempts, int max_attempts, int64_t base_ms, int64_t max_ms,
    int64_t *delay_ms)
{
	*delay_ms = 0;
	if (res->throttled) {
		*delay_ms = res->retry_after_ms;
		return GHL_NEXT_DEFER;
	}
	switch (res->cls) {
	case GHL_OK:
		return GHL_NEXT_DONE;
	case GHL_RETRY:
	case GHL_AUTH:
		*delay_ms = res->cls == GHL_AUTH ? ENGAGE_AUTH_WAIT_MS : backoff_ms(attempts - 1, base_ms, max_ms);
		if (res->retry_after_ms > *delay_ms)
			*delay_ms = res->retry_after_ms;
		/* no token (re-install) waits as long as it takes */
		return res->cls == GHL_RETRY && attempts >= max_attempts ? GHL_NEXT_STOP : GHL_NEXT_LATER;
	case GHL_PERMANENT:
	default:
		return GHL_NEXT_STOP;
	}
}

void
engagement_counters(const struct engage_batch *b, struct ghl_event_count **ev, size_t *n_ev, bool *has)
{
	int count[ENG_KIND_N] = { 0 };

	*ev = xcalloc(ENG_KIND_N, sizeof(**ev));
	*n_ev = 0;
	for (size_t i = 0; i < b->n; i++) {
		int k = engage_parse(b->rows[i].event);
		if (k >= 0)
			count[k]++;
	}
	for (int k = 0; k < ENG_KIND_N; k++) {
		if (has)
			has[k] = count[k] > 0;
		if (count[k])
			(*ev)[(*n_ev)++] = (struct ghl_event_count){ engage_name((enum engage_kind)k), count[k] };
	}
}

/* A batch without a status report of its own. */
static void
post_batch(struct engagement *e, struct engage_batch *b)
{
	struct app *app = e->app;
	struct ghl_event_count *ev;
	struct ghl_recipient rcpts[2];
	size_t n_ev, n_rcpts = 0;
	bool has[ENG_KIND_N];
	struct ghl_result res = { 0 };
	struct job *job = NULL;
	const char *status, *job_status = NULL, *sole = NULL;
	json_t *rs = NULL;
	int64_t delay;
	int r;

	if (!engagement_v3(app, b->location_id)) {
		log_info("engagement: locationId=%s messageId=%s %zu event(s) not reported: HighLevel's v2 status has no "
		    "place for them", b->location_id, b->message_id, b->n);
		metrics_inc(M_ENGAGE_V2);
		if (store_engage_done(app->store, b, "v2: no events") < 0)
			log_error("engagement: messageId=%s not recorded (store error)", b->message_id);
		return;
	}
	if (store_job_get(app->store, b->message_id, &job) == 1) {
		job_status = job_report_status_name(job->fsm.status);
		rs = job->rcpt_state ? json_loads(job->rcpt_state, 0, NULL) : NULL;
		if (json_object_size(rs) == 1)
			sole = json_object_iter_key(json_object_iter(rs));
	}
	engagement_counters(b, &ev, &n_ev, has);
	/* an open or a click names the recipient when there was only one */
	if (sole && has[ENG_OPENED])
		rcpts[n_rcpts++] = (struct ghl_recipient){ sole, engage_name(ENG_OPENED), NULL };
	if (sole && has[ENG_CLICKED])
		rcpts[n_rcpts++] = (struct ghl_recipient){ sole, engage_name(ENG_CLICKED), NULL };
	status = engage_status(job_status, has);
	ghl_update_email_status(app->ghl, b->location_id, b->message_id, status, rcpts, n_rcpts, ev, n_ev, &res);
	if (engagement_v3_missing(app, b->location_id, &res)) {
		metrics_inc(M_ENGAGE_V2);
		r = store_engage_done(app->store, b, "v2: no events");
	} else switch (engagement_next(&res, b->attempts, ENGAGE_MAX_ATTEMPTS, ENGAGE_BASE_MS, ENGAGE_MAX_MS, &delay)) {
	case GHL_NEXT_DONE:
		log_info("engagement: messageId=%s %zu event(s) reported, status=%s", b->message_id, b->n, status);
		metrics_inc(M_ENGAGE_POSTED);
		r = store_engage_done(app->store, b, NULL);
		break;
	case GHL_NEXT_DEFER:
	case GHL_NEXT_LATER:
		log_debug("engagement: messageId=%s again in %lld ms: %s", b->message_id, (long long)delay,
		    res.error ? res.error : "?");
		metrics_inc(M_ENGAGE_RETRY);
		r = store_engage_later(app->store, b, now_ms() + delay, res.error);
		break;
	case GHL_NEXT_STOP:
	default:
		log_error("engagement: messageId=%s events given up (HTTP %ld): %s", b->message_id, res.status,
		    res.error ? res.error : "?");
		metrics_inc(M_ENGAGE_GAVE_UP);
		r = store_engage_done(app->store, b, res.error ? res.error : "refused");
		break;
	}
	if (r < 0)
		log_error("engagement: messageId=%s outcome not recorded (store error): the batch goes again when its "
		    "lease ends", b->message_id);
	ghl_result_clear(&res);
	store_job_free(job);
	json_decref(rs);
	free(ev);
}

static int64_t
engage_step(void *arg, void **slot)
{
	struct engagement *e = arg;
	struct engage_batch *b = NULL;
	int64_t d;

	(void)slot;
	if (store_engage_claim(e->app->store, now_ms(), ENGAGE_LEASE_MS, &b) == 1) {
		post_batch(e, b);
		store_engage_batch_free(b);
		return 0;
	}
	/* nothing taken: never "due now" (a report may finish any moment; the
	 * reporter takes those events itself, and a wait of this floor costs
	 * nothing), so this thread cannot spin on the store */
	d = poller_until(store_engage_next_due(e->app->store), ENGAGE_IDLE_MS);
	return d < ENGAGE_MIN_WAIT_MS ? ENGAGE_MIN_WAIT_MS : d;
}

struct engagement *
engagement_start(struct app *app)
{
	struct engagement *e = xcalloc(1, sizeof(*e));
	struct poller_params pp = { .name = "engagement", .threads = 1, .max_wait_ms = ENGAGE_IDLE_MS,
		.step = engage_step, .ctx = e };

	e->app = app;
	pthread_mutex_init(&e->memo_lock, NULL);
	if (!(e->poller = poller_start(&pp))) {
		pthread_mutex_destroy(&e->memo_lock);
		free(e);
		return NULL;
	}
	return e;
}

void
engagement_wake(struct engagement *e)
{
	if (e)
		poller_wake(e->poller);
}

void
engagement_stop(struct engagement *e)
{
	if (!e)
		return;
	poller_stop(e->poller);
	for (size_t i = 0; i < e->n_memo; i++)
		free(e->memo[i].location_id);
	free(e->memo);
	pthread_mutex_destroy(&e->memo_lock);
	free(e);
}
