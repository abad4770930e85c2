#include "ghl.h"
#include "log.h"
#include "util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define GHL_MAX_RESPONSE   (4 * 1024 * 1024)
#define GHL_DEFAULT_429_MS 10000

/* Per-location limiter: a sliding window log of the last rate_limit
 * request times. A token bucket of capacity N refilling N per window lets
 * up to 2N through in some window, which is exactly what HighLevel's
 * "100 per 10 s" answers with 429; the log never exceeds N in any window. */
struct ghl_bucket {
	char *location_id;
	int64_t *sent;             /* ring of rate_limit monotonic ms stamps */
	long head;
	int64_t blocked_until;     /* from X-RateLimit-Remaining: 0 or a 429 */
	int64_t bulk_until;        /* the shared window has no room for bulk
	                            * calls until then (there may be for messages) */
	long day;                  /* days since epoch of the daily count */
	long daily;
	long daily_remaining;      /* X-RateLimit-Daily-Remaining last seen, -1 unknown */
	long daily_limit;
	long warned_day;
	/* slots leased from the shared limiter, spent here without asking */
	long share_left;
	int64_t share_until;       /* monotonic ms: unspent slots lapse then */
	int64_t share_asked;       /* when the last lease was asked */
	long share_want;           /* slots the next ask wants: doubled when a
	                            * lease is spent before its end, halved when
	                            * slots lapse unspent */
	int64_t share_tight_until; /* the window was full or nearly: until then,
	                            * one slot an ask, logged when it is taken */
	struct ghl_bucket *next;
};

/* Which share of a location's window a call draws from (ratelimit_take). */
enum ghl_lane {
	GHL_LANE_MESSAGE,          /* a conversation message and what it needs: contacts, uploads */
	GHL_LANE_BULK,             /* statuses and contact updates, which can wait */
};

#define GHL_WINDOW_MARGIN_MS 50  /* clock and network slack against the server's window */
/* The shared window's slots are taken a database round trip before the
 * request leaves, and a thread may be descheduled in between: more slack
 * (measured: 50 ms let one 429 through in 300 calls at 50 per second) */
#define GHL_SHARED_MARGIN_MS 250
/* A lease is at most a tenth of the window, and holds at most a quarter
 * of its slots: slots that lapse unspent stay counted for a window, so a
 * lease wastes at most that when the location's load falls away. */
#define GHL_SHARE_LEASE_WINDOW_DIV 10
#define GHL_SHARE_MAX_DIV 4
/* Easy handles kept between calls: a new one per call also made (and
 * freed) curl's own multi handle behind curl_easy_perform, 2 % of the
 * daemon's CPU in a burst. Connections live in the share either way. */
#define GHL_IDLE_HANDLES 8

struct ghl {
	char *api_base;
	char *ca_file;
	long timeout, rate_limit, rate_window;
	long reserve;              /* slots of each window that bulk calls leave free */
	int64_t share_lease;       /* ms: the configured lease, at most a tenth of the window */
	ghl_token_fn token_fn;     /* OAuth tokens, or NULL */
	void *token_ctx;
	ghl_count_fn count_fn;     /* the owner's counters, or NULL */
	void *count_ctx;
	ghl_share_fn share_fn;     /* a limiter shared between instances, or NULL */
	void *share_ctx;
	/* an outage: requests in a row that got no answer, or a 5xx (under lock) */
	long streak;
	int64_t streak_since;      /* ms */
	CURLSH *share;
	pthread_mutex_t share_locks[CURL_LOCK_DATA_LAST];
	pthread_mutex_t idle_lock;
	CURL *idle[GHL_IDLE_HANDLES];  /* reset, attached to share */
	int n_idle;
	pthread_mutex_t lock;      /* buckets */
	struct ghl_bucket *buckets;
};

/* Borrowed string member or NULL. */
static const char *
ghl_jstr(json_t *o, const char *k)
{
	json_t *v = json_object_get(o, k);
	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Sets key to s, unless s is NULL (or not UTF-8). */
static void
ghl_jset(json_t *o, const char *key, const char *s)
{
	json_t *v = s ? json_string(s) : NULL;
	if (v)
		json_object_set_new(o, key, v);
}

struct ghl_resp {
	char *data;
	size_t len;
	bool too_big;
	long rl_remaining;         /* -1 unknown */
	long rl_daily_remaining;
	long rl_daily_limit;
	long rl_interval_ms;
	long retry_after_s;
};

static void
share_lock(CURL *h, curl_lock_data data, curl_lock_access access, void *userptr)
{
	struct ghl *g = userptr;
	pthread_mutex_lock(&g->share_locks[data]);
}

static void
share_unlock(CURL *h, curl_lock_data data, void *userptr)
{
	struct ghl *g = userptr;
	pthread_mutex_unlock(&g->share_locks[data]);
}

struct ghl *
ghl_new(const struct ghl_params *p)
{
	struct ghl *g = xcalloc(1, sizeof(*g));
	g->api_base = xstrdup(p->api_base);
	g->ca_file = xstrdup(p->ca_file);
	g->timeout = p->timeout;
	g->rate_limit = p->rate_limit > 0 ? p->rate_limit : 1;
	g->rate_window = p->rate_window;
	g->reserve = p->rate_reserve > 0 && p->rate_reserve < 100 ? g->rate_limit * p->rate_reserve / 100 : 0;
	g->share_lease = p->rate_share_lease > 0 ? p->rate_share_lease : 0;
	if (g->share_lease > g->rate_window * 1000 / GHL_SHARE_LEASE_WINDOW_DIV)
		g->share_lease = g->rate_window * 1000 / GHL_SHARE_LEASE_WINDOW_DIV;
	pthread_mutex_init(&g->lock, NULL);
	pthread_mutex_init(&g->idle_lock, NULL);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_init(&g->share_locks[i], NULL);
	g->share = curl_share_init();
	curl_share_setopt(g->share, CURLSHOPT_LOCKFUNC, share_lock);
	curl_share_setopt(g->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
	curl_share_setopt(g->share, CURLSHOPT_USERDATA, g);
	curl_share_setopt(g->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
	curl_share_setopt(g->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
	curl_share_setopt(g->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
	return g;
}

void
ghl_free(struct ghl *g)
{
	if (!g)
		return;
	/* the handles first: a share still attached to one is not freed */
	while (g->n_idle > 0)
		curl_easy_cleanup(g->idle[--g->n_idle]);
	pthread_mutex_destroy(&g->idle_lock);
	curl_share_cleanup(g->share);
	for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
		pthread_mutex_destroy(&g->share_locks[i]);
	while (g->buckets) {
		struct ghl_bucket *b = g->buckets;
		g->buckets = b->next;
		free(b->location_id);
		free(b->sent);
		free(b);
	}
	pthread_mutex_destroy(&g->lock);
	free(g->api_base);
	free(g->ca_file);
	free(g);
}

/* An easy handle with no options set (an idle one, or new). */
static CURL *
handle_take(struct ghl *g)
{
	CURL *h = NULL;

	pthread_mutex_lock(&g->idle_lock);
	if (g->n_idle > 0)
		h = g->idle[--g->n_idle];
	pthread_mutex_unlock(&g->idle_lock);
	return h ? h : curl_easy_init();
}

/* Back to the idle ones, reset (its options pointed into the call's
 * frame), or freed when enough are idle. NULL (curl could not make one)
 * is nothing to give back. */
static void
handle_give(struct ghl *g, CURL *h)
{
	if (!h)
		return;
	curl_easy_reset(h);
	pthread_mutex_lock(&g->idle_lock);
	if (g->n_idle < GHL_IDLE_HANDLES) {
		g->idle[g->n_idle++] = h;
		h = NULL;
	}
	pthread_mutex_unlock(&g->idle_lock);
	if (h)
		curl_easy_cleanup(h);
}

void
ghl_set_counter(struct ghl *g, ghl_count_fn fn, void *ctx)
{
	g->count_fn = fn;
	g->count_ctx = ctx;
}

void
ghl_set_shared_limiter(struct ghl *g, ghl_share_fn fn, void *ctx)
{
	g->share_fn = fn;
	g->share_ctx = ctx;
}

static void
count(struct ghl *g, enum ghl_count what, int64_t usec)
{
	if (g->count_fn)
		g->count_fn(g->count_ctx, what, usec);
}

void
ghl_set_token_source(struct ghl *g, ghl_token_fn fn, void *ctx)
{
	g->token_fn = fn;
	g->token_ctx = ctx;
}

void
ghl_result_clear(struct ghl_result *r)
{
	free(r->error);
	free(r->trace_id);
	json_decref(r->body);
	memset(r, 0, sizeof(*r));
}

const char *
ghl_class_name(enum ghl_class c)
{
	switch (c) {
	case GHL_OK: return "ok";
	case GHL_RETRY: return "retry";
	case GHL_AUTH: return "auth";
	case GHL_PERMANENT: return "permanent";
	}
	return "?";
}

static struct ghl_bucket *
bucket_get(struct ghl *g, const char *location_id)
{
	struct ghl_bucket *b;
	for (b = g->buckets; b; b = b->next)
		if (strcmp(b->location_id, location_id) == 0)
			return b;
	b = xcalloc(1, sizeof(*b));
	b->location_id = xstrdup(location_id);
	b->sent = xcalloc((size_t)g->rate_limit, sizeof(*b->sent));
	b->daily_remaining = -1;
	b->share_want = 1;
	for (long i = 0; i < g->rate_limit; i++)
		b->sent[i] = INT64_MIN / 2;
	b->next = g->buckets;
	g->buckets = b;
	return b;
}

/* How many slots the next ask of the shared limiter wants, and for how
 * long (*lease_r), from how the last lease went (under g->lock).
 * Leftovers that lapsed mean the location asks for fewer than it leased:
 * halve. A lease spent before its end means more were needed: double, up
 * to a quarter of the window. A window that was full or nearly, within
 * the last window, makes it one slot with no lease: a leased slot is
 * logged at its lease's end, so at the limit each would hold the window
 * for a lease longer than the call needs, and a location waiting on its
 * window saves no round trip by leasing anyway. */
static long
share_want(const struct ghl *g, struct ghl_bucket *b, int64_t now, int64_t *lease_r)
{
	long most = g->rate_limit / GHL_SHARE_MAX_DIV;

	*lease_r = 0;
	if (g->share_lease == 0 || most < 1 || b->share_tight_until > now)
		return 1;
	*lease_r = g->share_lease;
	if (b->share_left > 0)
		b->share_want = b->share_want > 1 ? b->share_want / 2 : 1;
	else if (b->share_asked + g->share_lease > now)
		b->share_want = b->share_want * 2 < most ? b->share_want * 2 : most;
	b->share_left = 0;
	b->share_asked = now;
	return b->share_want;
}

/* Keeps the slots of a lease beyond the one spent now (under g->lock).
 * Another thread's lease may still hold some: those lapse at the earlier
 * of the two ends, so no slot is spent after its own. */
static void
share_keep(struct ghl_bucket *b, long extra, int64_t until)
{
	if (extra <= 0)
		return;
	if (b->share_left == 0 || until < b->share_until)
		b->share_until = until;
	b->share_left += extra;
}

/* Takes one request from the location's window. 0 = go, else the ms to
 * wait before asking again. A bulk call (statuses, unsubscribes) goes only
 * while the window holds fewer than rate_limit - reserve calls: the last
 * slots of each window are kept for conversation messages, which a
 * backlog of statuses would otherwise starve (bulk and message calls
 * wake together when a window frees, and there are more of the first). */
static int64_t
ratelimit_take(struct ghl *g, const char *location_id, enum ghl_lane lane)
{
	int64_t now = mono_ms(), wait = 0, window = g->rate_window * 1000 + GHL_WINDOW_MARGIN_MS, shared = -1;
	struct ghl_bucket *b;
	long day = (long)(time(NULL) / 86400), granted = 0;
	long keep = lane == GHL_LANE_BULK ? g->reserve : 0;  /* the oldest of the newest rate_limit - keep */
	bool bulk_full;            /* the shared window said no room for bulk calls yet */

	pthread_mutex_lock(&g->lock);
	b = bucket_get(g, location_id);
	bulk_full = keep > 0 && b->bulk_until > now;
	if (b->blocked_until <= now && g->share_fn && !bulk_full) {
		if (b->share_left > 0 && b->share_until > now) {
			/* a slot of the lease this instance holds, whichever
			 * lane asked for it: a lease is at most a quarter of
			 * the window for at most a second, and none is taken
			 * near the limit (share_want), where the reserve counts */
			b->share_left--;
			shared = 0;
		} else {
			/* the window every instance draws from (a store round
			 * trip: not under our lock) */
			int64_t lease;
			long want = share_want(g, b, now, &lease);
			pthread_mutex_unlock(&g->lock);
			count(g, GHL_COUNT_SHARE_ASK, 0);
			shared = g->share_fn(g->share_ctx, location_id, g->rate_limit - keep,
			    window - GHL_WINDOW_MARGIN_MS + GHL_SHARED_MARGIN_MS, lease, want, &granted);
			pthread_mutex_lock(&g->lock);
			if (shared == 0 && lease > 0)
				share_keep(b, granted - 1, now + lease);
			if (shared > 0 || (shared == 0 && granted < want))
				b->share_tight_until = now + window;
		}
	}
	/* b->sent[head] is the oldest of the last rate_limit requests */
	if (b->blocked_until > now) {
		wait = b->blocked_until - now;
	} else if (bulk_full && g->share_fn) {
		wait = b->bulk_until - now;
	} else if (shared > 0) {
		/* the shared window is full until then: the next calls for
		 * this location (of this lane, or of both when the window is
		 * full for messages) wait here, without a round trip each */
		wait = shared;
		b->bulk_until = now + shared;
		if (keep == 0)
			b->blocked_until = now + shared;
	} else if (shared < 0 && b->sent[(b->head + keep) % g->rate_limit] + window > now) {
		wait = b->sent[(b->head + keep) % g->rate_limit] + window - now;
	} else {
		b->sent[b->head] = now;
		b->head = (b->head + 1) % g->rate_limit;
		if (b->day != day) {
			b->day = day;
			b->daily = 0;
		}
		b->daily++;
	}
	pthread_mutex_unlock(&g->lock);
	return wait;
}

static void
ratelimit_block(struct ghl *g, const char *location_id, int64_t ms)
{
	pthread_mutex_lock(&g->lock);
	struct ghl_bucket *b = bucket_get(g, location_id);
	b->blocked_until = mono_ms() + ms;
	pthread_mutex_unlock(&g->lock);
}

/* Keeps HighLevel's own daily figure and warns once a day below 10 %. */
static void
ratelimit_daily(struct ghl *g, const char *location_id, long remaining, long limit)
{
	long day = (long)(time(NULL) / 86400);
	bool warn = false;

	pthread_mutex_lock(&g->lock);
	struct ghl_bucket *b = bucket_get(g, location_id);
	b->daily_remaining = remaining;
	if (limit > 0)
		b->daily_limit = limit;
	if (b->daily_limit > 0 && remaining * 10 < b->daily_limit && b->warned_day != day) {
		b->warned_day = day;
		warn = true;
	}
	pthread_mutex_unlock(&g->lock);
	if (warn)
		log_warn("ghl: locationId=%s has %ld of its %ld daily HighLevel requests left", location_id,
		    remaining, b->daily_limit);
}

void
ghl_budget_each(struct ghl *g, void (*fn)(const char *location_id, long today, long remaining, void *arg), void *arg)
{
	pthread_mutex_lock(&g->lock);
	for (struct ghl_bucket *b = g->buckets; b; b = b->next)
		fn(b->location_id, b->day == (long)(time(NULL) / 86400) ? b->daily : 0, b->daily_remaining, arg);
	pthread_mutex_unlock(&g->lock);
}

static size_t
resp_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct ghl_resp *r = userdata;
	size_t n = size * nmemb;
	if (r->len + n > GHL_MAX_RESPONSE) {
		r->too_big = true;
		return 0;
	}
	r->data = xrealloc(r->data, r->len + n + 1);
	memcpy(r->data + r->len, ptr, n);
	r->len += n;
	r->data[r->len] = '\0';
	return n;
}

static long
header_long(const char *buf, size_t n, const char *name)
{
	size_t k = strlen(name);
	if (n > k + 1 && strncasecmp(buf, name, k) == 0 && buf[k] == ':')
		return strtol(buf + k + 1, NULL, 10);
	return -1;
}

static size_t
resp_header(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct ghl_resp *r = userdata;
	size_t n = size * nitems;
	long v;

	if ((v = header_long(buf, n, "X-RateLimit-Remaining")) >= 0)
		r->rl_remaining = v;
	else if ((v = header_long(buf, n, "X-RateLimit-Daily-Remaining")) >= 0)
		r->rl_daily_remaining = v;
	else if ((v = header_long(buf, n, "X-RateLimit-Limit-Daily")) >= 0)
		r->rl_daily_limit = v;
	else if ((v = header_long(buf, n, "X-RateLimit-Interval-Milliseconds")) >= 0)
		r->rl_interval_ms = v;
	else if ((v = header_long(buf, n, "Retry-After")) >= 0)
		r->retry_after_s = v;
	return n;
}

/* HighLevel's error bodies carry "message" as a string or an array. */
static char *
error_text(json_t *body, long status)
{
	json_t *m = body ? json_object_get(body, "message") : NULL;
	if (json_is_string(m))
		return xstrdup(json_string_value(m));
	if (json_is_array(m)) {
		size_t i, len = 0;
		json_t *e;
		char *out = xstrdup("");
		json_array_foreach(m, i, e) {
			const char *s = json_is_string(e) ? json_string_value(e) : "?";
			out = xrealloc(out, len + strlen(s) + 3);
			len += (size_t)sprintf(out + len, "%s%s", i ? "; " : "", s);
		}
		return out;
	}
	return xasprintf("HTTP %ld", status);
}

/* What a request carries: a text body (JSON or form) or multipart files
 * with form fields (uploads). */
struct ghl_body {
	const char *content_type;
	const char *text;
	const char *const *fields;               /* NULL-terminated name, value pairs */
	const struct ghl_file *files;            /* multipart parts named fileAttachment */
	size_t n_files;
};

/* HighLevel unavailable (no answer, or 5xx): said once when a streak
 * begins and once when it ends, with how long and how many, as Postfix
 * logs deferred mail; the retries between stay at debug. */
static void
outage_note(struct ghl *g, bool down, const char *what)
{
	long n = 0;
	int64_t since = 0;
	bool began = false;

	pthread_mutex_lock(&g->lock);
	if (down) {
		began = g->streak++ == 0;
		if (began)
			g->streak_since = now_ms();
	} else if (g->streak > 0) {
		n = g->streak;
		since = g->streak_since;
		g->streak = 0;
	}
	pthread_mutex_unlock(&g->lock);
	if (began)
		log_warn("ghl: HighLevel unavailable (%s); retrying, and logging again when it answers", what);
	else if (n > 0)
		log_warn("ghl: HighLevel answers again after %ld failed request(s) over %lld s", n,
		    (long long)((now_ms() - since) / 1000));
}

/* One HTTP exchange, no token logic. */
static enum ghl_class
ghl_perform(struct ghl *g, const char *location_id, enum ghl_lane lane, const char *method, const char *path,
    const struct ghl_body *body, const char *bearer, const char *version, struct ghl_result *res)
{
	curl_mime *mime = NULL;
	CURL *h;
	struct curl_slist *hdrs = NULL;
	struct ghl_resp r = { .rl_remaining = -1, .rl_interval_ms = -1, .retry_after_s = -1,
		.rl_daily_remaining = -1, .rl_daily_limit = -1 };
	char *url, *hv;
	char errbuf[CURL_ERROR_SIZE] = "";
	CURLcode rc;
	curl_off_t took_us = 0;
	int64_t wait;

	memset(res, 0, sizeof(*res));
	if (location_id && (wait = ratelimit_take(g, location_id, lane)) > 0) {
		res->cls = GHL_RETRY;
		res->retry_after_ms = wait;
		res->throttled = true;
		count(g, GHL_COUNT_THROTTLED, 0);
		res->error = xstrdup("local rate limit");
		return res->cls;
	}
	h = handle_take(g);
	url = xasprintf("%s%s", g->api_base, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_SHARE, g->share);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, g->timeout);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 10L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, resp_write);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &r);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, resp_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &r);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "mailbridge/" MB_VERSION);
	if (g->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, g->ca_file);
	hdrs = curl_slist_append(hdrs, "Accept: application/json");
	if (bearer) {
		hv = xasprintf("Authorization: Bearer %s", bearer);
		hdrs = curl_slist_append(hdrs, hv);
		free(hv);
	}
	if (version) {
		hv = xasprintf("Version: %s", version);
		hdrs = curl_slist_append(hdrs, hv);
		free(hv);
	}
	if (body && body->text) {
		hv = xasprintf("Content-Type: %s", body->content_type);
		hdrs = curl_slist_append(hdrs, hv);
		free(hv);
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body->text);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body->text));
	} else if (body && (body->fields || body->n_files)) {
		mime = curl_mime_init(h);
		for (const char *const *f = body->fields; f && f[0]; f += 2) {
			curl_mimepart *part = curl_mime_addpart(mime);
			curl_mime_name(part, f[0]);
			curl_mime_data(part, f[1], CURL_ZERO_TERMINATED);
		}
		for (size_t i = 0; i < body->n_files; i++) {
			curl_mimepart *part = curl_mime_addpart(mime);
			curl_mime_name(part, "fileAttachment");
			curl_mime_data(part, body->files[i].data, body->files[i].len);
			curl_mime_filename(part, body->files[i].filename);
			curl_mime_type(part, body->files[i].content_type);
		}
		curl_easy_setopt(h, CURLOPT_MIMEPOST, mime);
	}
	hdrs = curl_slist_append(hdrs, "Expect:");
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);

	rc = curl_easy_perform(h);
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &res->status);
	curl_easy_getinfo(h, CURLINFO_TOTAL_TIME_T, &took_us);
	handle_give(g, h);
	curl_slist_free_all(hdrs);
	curl_mime_free(mime);
	free(url);

	if (r.len > 0) {
		res->body = json_loadb(r.data, r.len, 0, NULL);
		if (json_is_object(res->body) && json_is_string(json_object_get(res->body, "traceId")))
			res->trace_id = xstrdup(json_string_value(json_object_get(res->body, "traceId")));
	}
	free(r.data);
	count(g, rc != CURLE_OK ? GHL_COUNT_NETWORK : res->status == 429 ? GHL_COUNT_429 :
	    res->status >= 500 ? GHL_COUNT_5XX : res->status >= 400 ? GHL_COUNT_4XX : GHL_COUNT_2XX, (int64_t)took_us);
	outage_note(g, rc != CURLE_OK || res->status >= 500,
	    rc != CURLE_OK ? (errbuf[0] ? errbuf : curl_easy_strerror(rc)) : "HTTP 5xx");
	if (rc != CURLE_OK) {
		res->cls = GHL_RETRY;
		res->error = xasprintf("%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
		res->retry_after_ms = 0;
	} else if (res->status >= 200 && res->status < 300) {
		res->cls = GHL_OK;
	} else {
		res->error = error_text(res->body, res->status);
		if (res->status == 429 || res->status >= 500 || res->status == 408) {
			res->cls = GHL_RETRY;
			if (res->status == 429) {
				res->retry_after_ms = r.retry_after_s > 0 ? r.retry_after_s * 1000 :
				    r.rl_interval_ms > 0 ? r.rl_interval_ms : GHL_DEFAULT_429_MS;
				if (location_id)
					ratelimit_block(g, location_id, res->retry_after_ms);
			}
		} else if (res->status == 401) {
			res->cls = GHL_AUTH;
		} else {
			res->cls = GHL_PERMANENT;
		}
	}
	if (location_id && r.rl_daily_remaining >= 0)
		ratelimit_daily(g, location_id, r.rl_daily_remaining, r.rl_daily_limit);
	/* HighLevel says the window is spent: do not spend the next request */
	if (location_id && r.rl_remaining == 0 && res->status != 429)
		ratelimit_block(g, location_id, r.rl_interval_ms > 0 ? r.rl_interval_ms : 1000);
	log_debug("ghl: %s %s status=%ld class=%s traceId=%s", method, path, res->status,
	    ghl_class_name(res->cls), res->trace_id ? res->trace_id : "-");
	return res->cls;
}

/* 1 = token in *token_r (malloc'd), 0 = none, -1 = temporary trouble;
 * *refreshable: a 401 may ask the source again. */
static int
ghl_token(struct ghl *g, const char *location_id, const char *stale, bool *refreshable, char **token_r)
{
	int r = g->token_fn ? g->token_fn(g->token_ctx, location_id, stale, token_r) : 0;

	*refreshable = r == GHL_TOKEN_REFRESHABLE;
	return r == GHL_TOKEN_REFRESHABLE || r == GHL_TOKEN_FIXED ? 1 : r;
}

/* A call for a location: token (refreshed once on 401), limiter, body. */
static enum ghl_class
ghl_location_call(struct ghl *g, const char *location_id, enum ghl_lane lane, const char *method,
    const char *path, const char *version, const struct ghl_body *body, struct ghl_result *res)
{
	char *token = NULL, *stale = NULL;
	bool refreshable;
	int r;

	for (int attempt = 0; attempt < 2; attempt++) {
		r = ghl_token(g, location_id, stale, &refreshable, &token);
		if (r <= 0) {
			memset(res, 0, sizeof(*res));
			res->cls = r == 0 ? GHL_AUTH : GHL_RETRY;
			res->retry_after_ms = r == 0 ? 0 : 5000;
			res->error = xstrdup(r == 0 ? "no token for this location (install the app)" :
			    "token refresh failed");
			break;
		}
		ghl_perform(g, location_id, lane, method, path, body, token, version, res);
		free(stale);
		stale = token;
		token = NULL;
		/* 401 "invalid token": refresh once and retry, but only when the
		 * token is ours to refresh */
		if (res->cls != GHL_AUTH || !refreshable || attempt == 1)
			break;
		log_info("ghl: 401 for locationId=%s, refreshing token", location_id);
		ghl_result_clear(res);
	}
	free(stale);
	return res->cls;
}

/* A JSON call for a location: body (stolen; may be NULL). */
static enum ghl_class
ghl_call(struct ghl *g, const char *location_id, enum ghl_lane lane, const char *method, const char *path,
    const char *version, json_t *body, struct ghl_result *res)
{
	char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
	struct ghl_body b = { "application/json", payload, NULL, NULL, 0 };

	json_decref(body);
	ghl_location_call(g, location_id, lane, method, path, version, payload ? &b : NULL, res);
	free(payload);
	return res->cls;
}

enum ghl_class
ghl_upload(struct ghl *g, const char *location_id, const char *conversation_id, const char *contact_id,
    const struct ghl_file *files, size_t n_files, struct ghl_result *res)
{
	const char *fields[] = { "conversationId", conversation_id, "contactId", contact_id,
		"locationId", location_id, NULL, NULL };
	struct ghl_body b = { NULL, NULL, fields, files, n_files };
	return ghl_location_call(g, location_id, GHL_LANE_MESSAGE, "POST", "/conversations/messages/upload",
	    GHL_VERSION_CONVERSATIONS, &b, res);
}

void
ghl_grant_clear(struct ghl_grant *t)
{
	free(t->access_token);
	free(t->refresh_token);
	free(t->user_type);
	free(t->company_id);
	free(t->location_id);
	free(t->scope);
	memset(t, 0, sizeof(*t));
}

enum ghl_class
ghl_oauth_grant(struct ghl *g, const char *path, const char *form, const char *bearer,
    const char *version, struct ghl_grant *t, struct ghl_result *res)
{
	struct ghl_body b = { "application/x-www-form-urlencoded", form, NULL, NULL, 0 };
	json_t *exp;

	memset(t, 0, sizeof(*t));
	if (ghl_perform(g, NULL, GHL_LANE_MESSAGE, "POST", path, &b, bearer, version, res) != GHL_OK)
		return res->cls;
	if (!ghl_jstr(res->body, "access_token")) {
		res->cls = GHL_PERMANENT;
		free(res->error);
		res->error = xstrdup("token answer without an access_token");
		return res->cls;
	}
	t->access_token = xstrdup(ghl_jstr(res->body, "access_token"));
	t->refresh_token = xstrdup(ghl_jstr(res->body, "refresh_token"));
	t->user_type = xstrdup(ghl_jstr(res->body, "userType"));
	t->company_id = xstrdup(ghl_jstr(res->body, "companyId"));
	t->location_id = xstrdup(ghl_jstr(res->body, "locationId"));
	t->scope = xstrdup(ghl_jstr(res->body, "scope"));
	exp = json_object_get(res->body, "expires_in");
	t->expires_in = json_is_integer(exp) && json_integer_value(exp) > 0 ? (long)json_integer_value(exp) : 0;
	return GHL_OK;
}

enum ghl_class
ghl_update_status(struct ghl *g, const char *location_id, const char *message_id, const char *status,
    const char *error_code, const char *error_message, const char *email_message_id,
    struct ghl_result *res)
{
	json_t *body = json_pack("{s:s}", "status", status);
	char *esc = curl_easy_escape(NULL, message_id, 0);
	char *path = xasprintf("/conversations/messages/%s/status", esc);

	if (error_message)
		json_object_set_new(body, "error", json_pack("{s:s, s:s, s:s}", "code",
		    error_code ? error_code : "0", "type", "smtp", "message", error_message));
	if (email_message_id)
		json_object_set_new(body, "emailMessageId", json_string(email_message_id));
	ghl_call(g, location_id, GHL_LANE_BULK, "PUT", path, GHL_VERSION_CONVERSATIONS, body, res);
	/* 403 until HighLevel has "downstreamed" the message to the provider
	 * (highlevel-api-docs issue #4, maintainer reply 2025-06-24) */
	if (res->cls == GHL_PERMANENT && res->status == 403)
		res->cls = GHL_RETRY;
	curl_free(esc);
	free(path);
	return res->cls;
}

enum ghl_class
ghl_update_email_status(struct ghl *g, const char *location_id, const char *message_id, const char *status,
    const struct ghl_recipient *rcpts, size_t n_rcpts, const struct ghl_event_count *events, size_t n_events,
    struct ghl_result *res)
{
	json_t *body = json_pack("{s:s}", "status", status), *list = json_array();
	char *esc = curl_easy_escape(NULL, message_id, 0);
	char *path = xasprintf("/conversations/messages/email/%s/status", esc);

	for (size_t i = 0; i < n_rcpts; i++) {
		json_t *r = json_pack("{s:s, s:s}", "emailId", rcpts[i].email, "status", rcpts[i].status);
		if (rcpts[i].fail_reason)
			ghl_jset(r, "failReason", rcpts[i].fail_reason);
		json_array_append_new(list, r);
	}
	if (n_rcpts > 0)
		json_object_set_new(body, "recipients", list);
	else
		json_decref(list);
	if (n_events > 0) {
		json_t *ev = json_object();
		for (size_t i = 0; i < n_events; i++)
			json_object_set_new(ev, events[i].name, json_integer(events[i].count));
		json_object_set_new(body, "events", ev);
	}
	ghl_call(g, location_id, GHL_LANE_BULK, "PUT", path, GHL_VERSION_V3, body, res);
	if (res->cls == GHL_PERMANENT && res->status == 403)
		res->cls = GHL_RETRY;      /* as for v2: not downstreamed yet */
	curl_free(esc);
	free(path);
	return res->cls;
}

void
ghl_step_from(struct ghl_step *s, struct ghl_result *res, const char *what)
{
	s->cls = res->cls;
	s->wait_ms = res->throttled ? res->retry_after_ms : 0;
	free(s->error);
	s->error = xasprintf("%s: %s (HTTP %ld)", what, res->error ? res->error : "?", res->status);
}

void
ghl_date(int64_t ms, char buf[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	gmtime_r(&t, &tm);
	/* "2026-11-29T21:09:33" is 19 bytes; then ".mmmZ" */
	if (strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm) == 19)
		snprintf(buf + 19, 13, ".%03dZ", (int)(ms % 1000 + 1000) % 1000);
	else
		snprintf(buf, 32, "1970-01-01T00:00:00.000Z");
}

void
ghl_posted_clear(struct ghl_posted *p)
{
	free(p->message_id);
	free(p->email_message_id);
	free(p->conversation_id);
	memset(p, 0, sizeof(*p));
}

static json_t *
string_array(const char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

/* The body of POST /conversations/messages/inbound or /outbound
 * (openapi/apps/conversations.json: InboundMessageBody,
 * OutboundMessageBody). */
static json_t *
message_body(const struct ghl_message *m)
{
	static const char *const types[] = { [GHL_MSG_EMAIL] = "Email", [GHL_MSG_CUSTOM] = "Custom",
		[GHL_MSG_SMS] = "SMS", [GHL_MSG_CALL] = "Call" };
	json_t *b = json_pack("{s:s}", "type", types[m->type]);
	char date[32];

	ghl_jset(b, "conversationId", m->conversation_id);
	ghl_jset(b, "conversationProviderId", m->provider_id);
	if (!m->outbound) {
		ghl_jset(b, "contactId", m->contact_id);
		ghl_jset(b, "direction", "inbound");
	}
	if (m->date_ms) {
		ghl_date(m->date_ms, date);
		ghl_jset(b, "date", date);
	}
	if (m->type == GHL_MSG_EMAIL || m->type == GHL_MSG_CUSTOM) {
		ghl_jset(b, "subject", m->subject ? m->subject : "");
		ghl_jset(b, "html", m->html);
		ghl_jset(b, "emailFrom", m->email_from);
		ghl_jset(b, "emailTo", m->email_to);
		json_object_set_new(b, "emailCc", string_array(m->email_cc, m->n_cc));
		ghl_jset(b, "altId", m->alt_id);
		ghl_jset(b, "emailMessageId", m->email_message_id);
	}
	ghl_jset(b, "message", m->message);
	if (m->type == GHL_MSG_CALL)
		json_object_set_new(b, "call", json_pack("{s:s, s:s, s:s}", "from", m->call_from, "to", m->call_to,
		    "status", m->call_status));
	if (m->n_attachments > 0)
		json_object_set_new(b, "attachments", string_array(m->attachments, m->n_attachments));
	return b;
}

enum ghl_class
ghl_message_post(struct ghl *g, const char *location_id, const struct ghl_message *m, struct ghl_posted *posted,
    struct ghl_result *res)
{
	memset(posted, 0, sizeof(*posted));
	ghl_call(g, location_id, GHL_LANE_MESSAGE, "POST", m->outbound ? "/conversations/messages/outbound" :
	    "/conversations/messages/inbound", GHL_VERSION_CONVERSATIONS, message_body(m), res);
	if (res->cls == GHL_OK && !ghl_jstr(res->body, "messageId")) {
		res->cls = GHL_PERMANENT;
		free(res->error);
		res->error = xstrdup("HighLevel answered without a messageId (message dropped; provider id?)");
	}
	if (res->cls == GHL_OK) {
		posted->message_id = xstrdup(ghl_jstr(res->body, "messageId"));
		posted->email_message_id = xstrdup(ghl_jstr(res->body, "emailMessageId"));
		posted->conversation_id = xstrdup(ghl_jstr(res->body, "conversationId"));
	}
	return res->cls;
}

char **
ghl_uploaded_urls(const struct ghl_result *res, size_t *n_r)
{
	json_t *files = json_object_get(res->body, "uploadedFiles"), *url;
	const char *name;
	char **out = NULL;

	*n_r = 0;
	json_object_foreach(files, name, url)
		if (json_is_string(url)) {
			out = xrealloc(out, (*n_r + 1) * sizeof(*out));
			out[(*n_r)++] = xstrdup(json_string_value(url));
		}
	return out;
}

/* "/path?k1=v1&k2=v2" with both values escaped. malloc'd. */
static char *
path_query2(const char *path, const char *k1, const char *v1, const char *k2, const char *v2)
{
	char *e1 = curl_easy_escape(NULL, v1, 0), *e2 = curl_easy_escape(NULL, v2, 0);   /* '+' becomes %2B */
	char *out = xasprintf("%s?%s=%s&%s=%s", path, k1, e1, k2, e2);
	curl_free(e1);
	curl_free(e2);
	return out;
}

/* The id at body[member].id (or body.id when member is NULL); NULL. */
static char *
id_in(json_t *body, const char *member)
{
	return xstrdup(ghl_jstr(member ? json_object_get(body, member) : body, "id"));
}

/* A create answered 2xx without the id it was for: permanent. */
static enum ghl_class
id_or_permanent(struct ghl_result *res, char **id_r, const char *what)
{
	if (res->cls == GHL_OK && !*id_r) {
		res->cls = GHL_PERMANENT;
		free(res->error);
		res->error = xasprintf("HighLevel answered without the %s's id", what);
	}
	return res->cls;
}

enum ghl_class
ghl_contact_search(struct ghl *g, const char *location_id, const char *email, const char *phone, char **id_r,
    struct ghl_result *res)
{
	char *path = path_query2("/contacts/search/duplicate", "locationId", location_id, email ? "email" : "number",
	    email ? email : phone);

	*id_r = NULL;
	ghl_call(g, location_id, GHL_LANE_MESSAGE, "GET", path, GHL_VERSION_CONTACTS, NULL, res);
	free(path);
	if (res->cls == GHL_OK)
		*id_r = id_in(res->body, "contact");
	return res->cls;
}

enum ghl_class
ghl_contact_upsert(struct ghl *g, const char *location_id, const char *email, const char *phone, const char *name,
    char **id_r, struct ghl_result *res)
{
	json_t *body = json_pack("{s:s, s:s}", "locationId", location_id, "source", "mailbridge");

	*id_r = NULL;
	ghl_jset(body, email ? "email" : "phone", email ? email : phone);
	ghl_jset(body, "name", name);
	ghl_call(g, location_id, GHL_LANE_MESSAGE, "POST", "/contacts/upsert", GHL_VERSION_CONTACTS, body, res);
	if (res->cls == GHL_OK)
		*id_r = id_in(res->body, "contact");
	return id_or_permanent(res, id_r, "contact");
}

enum ghl_class
ghl_conversation_search(struct ghl *g, const char *location_id, const char *contact_id, char **id_r,
    struct ghl_result *res)
{
	char *path = path_query2("/conversations/search", "locationId", location_id, "contactId", contact_id);
	json_t *list;

	*id_r = NULL;
	ghl_call(g, location_id, GHL_LANE_MESSAGE, "GET", path, GHL_VERSION_CONVERSATIONS, NULL, res);
	free(path);
	list = res->cls == GHL_OK ? json_object_get(res->body, "conversations") : NULL;
	if (json_is_array(list) && json_array_size(list) > 0)
		*id_r = id_in(json_array_get(list, 0), NULL);
	return res->cls;
}

enum ghl_class
ghl_conversation_create(struct ghl *g, const char *location_id, const char *contact_id, char **id_r,
    struct ghl_result *res)
{
	*id_r = NULL;
	ghl_call(g, location_id, GHL_LANE_MESSAGE, "POST", "/conversations/", GHL_VERSION_CONVERSATIONS,
	    json_pack("{s:s, s:s}", "locationId", location_id, "contactId", contact_id), res);
	if (res->cls == GHL_OK && !(*id_r = id_in(res->body, "conversation")))
		*id_r = id_in(res->body, NULL);
	return id_or_permanent(res, id_r, "conversation");
}

static void
budget_line(const char *location_id, long today, long remaining, void *arg)
{
	FILE *f = arg;
	fprintf(f, "mailbridge_highlevel_requests_today{location=\"%s\"} %ld\n", location_id, today);
	if (remaining >= 0)
		fprintf(f, "mailbridge_highlevel_daily_remaining{location=\"%s\"} %ld\n", location_id, remaining);
}

void
ghl_write_gauges(void *g, FILE *out)
{
	fprintf(out, "# HELP mailbridge_highlevel_requests_today Requests made today per location (daily budget)\n"
	    "# TYPE mailbridge_highlevel_requests_today gauge\n");
	ghl_budget_each(g, budget_line, out);
}

enum ghl_class
ghl_contact_email(struct ghl *g, const char *location_id, const char *contact_id, char **email_r,
    struct ghl_result *res)
{
	char *esc = curl_easy_escape(NULL, contact_id, 0);
	char *path = xasprintf("/contacts/%s", esc);

	*email_r = NULL;
	/* contacts.json: ContactsByIdSuccessfulResponseDto {contact: {email}} */
	if (ghl_call(g, location_id, GHL_LANE_BULK, "GET", path, GHL_VERSION_CONTACTS, NULL, res) == GHL_OK) {
		json_t *c = json_object_get(res->body, "contact");
		const char *e = json_string_value(json_object_get(c, "email"));
		if (!json_is_object(c)) {
			res->cls = GHL_PERMANENT;
			free(res->error);
			res->error = xstrdup("no contact in the answer");
		} else if (e && *e) {
			*email_r = xstrdup(e);
		}
	}
	curl_free(esc);
	free(path);
	return res->cls;
}

enum ghl_class
ghl_contact_email_dnd(struct ghl *g, const char *location_id, const char *contact_id, const char *message,
    struct ghl_result *res)
{
	char *esc = curl_easy_escape(NULL, contact_id, 0);
	char *path = xasprintf("/contacts/%s", esc);
	json_t *body = json_pack("{s:{s:{s:s, s:s, s:s}}}", "dndSettings", "Email", "status", "active", "message",
	    message, "code", "unsubscribe");

	ghl_call(g, location_id, GHL_LANE_BULK, "PUT", path, GHL_VERSION_CONTACTS, body, res);
	curl_free(esc);
	free(path);
	return res->cls;
}
