#include "oauth.h"
#include "app.h"
#include "config.h"
#include "ghl.h"
#include "log.h"
#include "metrics.h"
#include "store_inbound.h"
#include "store_instances.h"
#include "store_jobs.h"
#include "store_tokens.h"
#include "util.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct oauth_lock {
	char *key;
	pthread_mutex_t mutex;
	struct oauth_lock *next;
};

struct oauth {
	const struct config *cfg;
	struct store *store;
	struct ghl *ghl;
	pthread_mutex_t lock;      /* the list below, and the callback window */
	struct oauth_lock *locks;
	int64_t window_start;      /* code exchanges in the current minute */
	long window_count;
};

#define OAUTH_STATE_COOKIE "mb_oauth_state"
#define OAUTH_STATE_TTL_S  600

struct oauth *
oauth_new(const struct config *cfg, struct store *st, struct ghl *g)
{
	struct oauth *o = xcalloc(1, sizeof(*o));
	o->cfg = cfg;
	o->store = st;
	o->ghl = g;
	pthread_mutex_init(&o->lock, NULL);
	return o;
}

void
oauth_free(struct oauth *o)
{
	if (!o)
		return;
	while (o->locks) {
		struct oauth_lock *l = o->locks;
		o->locks = l->next;
		pthread_mutex_destroy(&l->mutex);
		free(l->key);
		free(l);
	}
	pthread_mutex_destroy(&o->lock);
	free(o);
}

/* The mutex that serialises token work for one key; never freed while
 * the daemon runs, so the pointer stays valid without holding o->lock. */
static pthread_mutex_t *
oauth_key_lock(struct oauth *o, const char *key)
{
	struct oauth_lock *l;
	pthread_mutex_lock(&o->lock);
	for (l = o->locks; l; l = l->next)
		if (strcmp(l->key, key) == 0)
			break;
	if (!l) {
		l = xcalloc(1, sizeof(*l));
		l->key = xstrdup(key);
		pthread_mutex_init(&l->mutex, NULL);
		l->next = o->locks;
		o->locks = l;
	}
	pthread_mutex_unlock(&o->lock);
	return &l->mutex;
}

static char *
form_add(char *form, const char *k, const char *v)
{
	char *ev = curl_easy_escape(NULL, v, 0);
	char *out = xasprintf("%s%s%s=%s", form ? form : "", form ? "&" : "", k, ev);
	curl_free(ev);
	free(form);
	return out;
}

/* The store's token for key from a /oauth/token or /oauth/locationToken
 * grant (ghl read the answer). */
static struct token *
token_from_grant(const struct ghl_grant *g, const char *key)
{
	struct token *t = xcalloc(1, sizeof(*t));
	t->location_id = xstrdup(key);
	t->user_type = xstrdup(g->user_type ? g->user_type : "Location");
	t->company_id = xstrdup(g->company_id);
	t->access_token = xstrdup(g->access_token);
	t->refresh_token = xstrdup(g->refresh_token);
	t->expires_at = now_ms() + (g->expires_in > 0 ? g->expires_in : 3600) * 1000LL;
	t->scope = xstrdup(g->scope);
	return t;
}

static bool
oauth_ready(const struct oauth *o)
{
	return o->cfg->client_id && o->cfg->client_secret;
}

/* Refreshes key's token; caller holds the key lock. 1 ok (*t_r replaced),
 * 0 refused (marked for re-install), -1 temporary. */
static int
oauth_refresh(struct oauth *o, struct token **t_r)
{
	struct token *t = *t_r, *nt;
	struct ghl_result res;
	struct ghl_grant grant;
	char *form = NULL;
	int ret;

	if (!oauth_ready(o) || !t->refresh_token)
		return 0;
	form = form_add(form, "client_id", o->cfg->client_id);
	form = form_add(form, "client_secret", o->cfg->client_secret);
	form = form_add(form, "grant_type", "refresh_token");
	form = form_add(form, "refresh_token", t->refresh_token);
	form = form_add(form, "user_type", t->user_type && !strcmp(t->user_type, "Company") ? "Company" : "Location");
	ghl_oauth_grant(o->ghl, "/oauth/token", form, NULL, NULL, &grant, &res);
	free(form);
	if (res.cls == GHL_OK) {
		nt = token_from_grant(&grant, t->location_id);
		/* single-use refresh token: the new pair is on disk before use */
		if (store_token_put(o->store, nt) < 0) {
			log_error("oauth: refreshed token for %s could not be stored", t->location_id);
			store_token_free(nt);
			ret = -1;
		} else {
			log_info("oauth: refreshed token for %s", t->location_id);
			metrics_inc(M_TOKEN_REFRESH_OK);
			store_token_free(t);
			*t_r = nt;
			ret = 1;
		}
	} else if (res.status == 400 || res.status == 401 || res.status == 422) {
		metrics_inc(M_TOKEN_REFRESH_FAILED);
		log_error("oauth: refresh refused for %s (%s): location needs re-install of the app",
		    t->location_id, res.error ? res.error : "?");
		store_token_mark_reinstall(o->store, t->location_id);
		ret = 0;
	} else {
		log_warn("oauth: refresh for %s failed for now: %s", t->location_id, res.error ? res.error : "?");
		ret = -1;
	}
	ghl_grant_clear(&grant);
	ghl_result_clear(&res);
	return ret;
}

static int
oauth_company_token(struct oauth *o, const char *company_id, char **token_r);

/* Mints a location token from the agency token. Caller holds the lock. */
static int
oauth_mint_location(struct oauth *o, const char *company_id, const char *location_id, struct token **t_r)
{
	struct ghl_result res;
	struct ghl_grant grant;
	char *ctoken = NULL, *form = NULL;
	int r = oauth_company_token(o, company_id, &ctoken);
	struct token *nt;

	if (r != 1)
		return r;
	form = form_add(form, "companyId", company_id);
	form = form_add(form, "locationId", location_id);
	ghl_oauth_grant(o->ghl, "/oauth/locationToken", form, ctoken, GHL_VERSION_CONTACTS, &grant, &res);
	free(form);
	free(ctoken);
	r = -1;
	if (res.cls == GHL_OK) {
		nt = token_from_grant(&grant, location_id);
		free(nt->company_id);
		nt->company_id = xstrdup(company_id);
		if (store_token_put(o->store, nt) == 1) {
			log_info("oauth: location token minted for %s from company %s", location_id, company_id);
			store_token_free(*t_r);
			*t_r = nt;
			r = 1;
		} else {
			store_token_free(nt);
		}
	} else if (res.cls == GHL_PERMANENT || res.cls == GHL_AUTH) {
		log_error("oauth: locationToken for %s refused: %s", location_id, res.error ? res.error : "?");
		r = 0;
	}
	ghl_grant_clear(&grant);
	ghl_result_clear(&res);
	return r;
}

/* How long an instance waits for another one's refresh of the same key. */
#define OAUTH_PEER_WAIT_MS 15000
#define OAUTH_REFRESH_LEASE_MS 30000

static bool
token_needs_refresh(const struct token *t, const char *stale)
{
	return t->expires_at - OAUTH_REFRESH_MARGIN_MS <= now_ms() || (stale && t->access_token &&
	    strcmp(stale, t->access_token) == 0);
}

/* Renews *t (caller holds the key lock) when no other instance on the
 * store does it meanwhile: refresh tokens are single-use, so one instance
 * at a time holds the lease "refresh:<key>" and refreshes; the others
 * wait for the new pair in the store. 1 a fresh token in *t, 0 refused,
 * -1 temporary trouble. */
static int
oauth_renew(struct oauth *o, const char *key, const char *stale, struct token **t_r)
{
	char *lease = xasprintf("refresh:%s", key);
	int64_t until = now_ms() + OAUTH_PEER_WAIT_MS;
	int r, held;

	while ((held = store_lease_take(o->store, lease, OAUTH_REFRESH_LEASE_MS)) == 0 && now_ms() < until) {
		struct token *nt = NULL;
		sleep_ms(100);
		/* another instance's refresh: its new pair is in the store */
		if (store_token_get(o->store, key, &nt) == 1 && nt->access_token && !token_needs_refresh(nt, stale)) {
			store_token_free(*t_r);
			*t_r = nt;
			free(lease);
			return 1;
		}
		store_token_free(nt);
	}
	if (held != 1) {
		free(lease);
		return -1;
	}
	/* ours: maybe another instance finished just before we took it */
	{
		struct token *nt = NULL;
		if (store_token_get(o->store, key, &nt) == 1 && nt->access_token && !nt->needs_reinstall &&
		    !token_needs_refresh(nt, stale)) {
			store_token_free(*t_r);
			*t_r = nt;
			store_lease_drop(o->store, lease);
			free(lease);
			return 1;
		}
		if (nt) {
			store_token_free(*t_r);
			*t_r = nt;
		}
		if (nt && nt->needs_reinstall) {
			/* another instance's refresh was refused meanwhile */
			store_lease_drop(o->store, lease);
			free(lease);
			return 0;
		}
	}
	if ((*t_r)->refresh_token)
		r = oauth_refresh(o, t_r);
	else if ((*t_r)->company_id && strncmp(key, "company:", 8) != 0)
		r = oauth_mint_location(o, (*t_r)->company_id, key, t_r);
	else
		r = 0;
	store_lease_drop(o->store, lease);
	free(lease);
	return r;
}

static int
oauth_token_for_key(struct oauth *o, const char *key, const char *stale, char **token_r)
{
	pthread_mutex_t *m = oauth_key_lock(o, key);
	struct token *t = NULL;
	int r;

	pthread_mutex_lock(m);
	r = store_token_get(o->store, key, &t);
	if (r == 1 && t->needs_reinstall) {
		r = 0;
	} else if (r == 1 && !t->access_token) {
		/* installed (agency) but no token yet */
		r = t->company_id && strncmp(key, "company:", 8) != 0 ?
		    oauth_mint_location(o, t->company_id, key, &t) : 0;
	} else if (r == 1) {
		bool rejected = stale && strcmp(stale, t->access_token) == 0;
		if (token_needs_refresh(t, stale)) {
			r = oauth_renew(o, key, stale, &t);
			/* an expiring (not yet rejected) token still works meanwhile */
			if (r == -1 && !rejected && t->access_token && t->expires_at > now_ms())
				r = 1;
		}
	}
	if (r == 1)
		*token_r = xstrdup(t->access_token);
	pthread_mutex_unlock(m);
	store_token_free(t);
	return r < 0 ? -1 : r;
}

static int
oauth_company_token(struct oauth *o, const char *company_id, char **token_r)
{
	char *key = xasprintf("company:%s", company_id);
	int r = oauth_token_for_key(o, key, NULL, token_r);
	free(key);
	return r;
}

int
oauth_access_token(struct oauth *o, const char *location_id, const char *stale, char **token_r)
{
	return oauth_token_for_key(o, location_id, stale, token_r);
}

int
oauth_on_install(struct oauth *o, const char *company_id, const char *location_id)
{
	struct token *t = NULL;
	int r;

	if (!location_id)
		return 0;           /* agency-level install: the callback stores it */
	r = store_token_get(o->store, location_id, &t);
	if (r == 0) {
		struct token nt = { .location_id = (char *)location_id, .user_type = "Location",
		    .company_id = (char *)company_id };
		r = store_token_put(o->store, &nt);
	} else if (r == 1 && company_id && !t->company_id) {
		free(t->company_id);
		t->company_id = xstrdup(company_id);
		r = store_token_put(o->store, t);
	}
	store_token_free(t);
	if (r >= 0)
		r = store_set_installed(o->store, location_id, true);
	if (r < 0)
		return -1;
	log_info("oauth: INSTALL locationId=%s companyId=%s", location_id, company_id ? company_id : "-");
	if (company_id) {
		char *tok = NULL;
		/* best effort now; done on first use otherwise */
		if (oauth_access_token(o, location_id, NULL, &tok) == 1)
			free(tok);
	}
	return 0;
}

int
oauth_on_uninstall(struct oauth *o, const char *company_id, const char *location_id)
{
	char *key = location_id ? xstrdup(location_id) : company_id ? xasprintf("company:%s", company_id) : NULL;
	int r;

	if (!key)
		return -1;
	r = store_token_delete(o->store, key);
	if (r >= 0 && location_id)
		r = store_set_installed(o->store, location_id, false);
	log_info("oauth: UNINSTALL %s: tokens deleted, watcher stopped, queued history kept", key);
	free(key);
	return r < 0 ? -1 : 0;
}

static char *
redirect_uri(const struct config *cfg)
{
	return xasprintf("%s/oauth/callback", cfg->public_url);
}

void
oauth_http_start(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	char *ru, *eru, *escope, *eid, state[33];

	if (!app->cfg->client_id) {
		http_text(resp, 503, "text/plain", "OAuth is not configured ([highlevel] client_id).\n");
		return;
	}
	/* a random state, in the consent URL and in a short-lived cookie: the
	 * callback of an install we started must bring both back */
	snprintf(state, sizeof(state), "%016llx%016llx", (unsigned long long)random_u64(),
	    (unsigned long long)random_u64());
	ru = redirect_uri(app->cfg);
	eru = curl_easy_escape(NULL, ru, 0);
	escope = curl_easy_escape(NULL, OAUTH_SCOPES, 0);
	eid = curl_easy_escape(NULL, app->cfg->client_id, 0);
	resp->status = 302;
	resp->content_type = "text/plain";
	resp->location = xasprintf("%s?response_type=code&redirect_uri=%s&client_id=%s&scope=%s&state=%s",
	    OAUTH_CONSENT_URL, eru, eid, escope, state);
	resp->set_cookie = xasprintf(OAUTH_STATE_COOKIE "=%s; Max-Age=%d; Path=/oauth; HttpOnly; SameSite=Lax%s", state,
	    OAUTH_STATE_TTL_S, strncmp(app->cfg->public_url, "https://", 8) ? "" : "; Secure");
	resp->body = xstrdup("Redirecting to HighLevel.\n");
	curl_free(eru);
	curl_free(escope);
	curl_free(eid);
	free(ru);
}

/* At most [highlevel] oauth_callbacks_per_minute code exchanges a
 * minute: each one carries our client secret to HighLevel, and anyone can
 * call the callback. */
static bool
oauth_callback_allowed(struct oauth *o)
{
	int64_t now = mono_ms();
	bool ok;

	pthread_mutex_lock(&o->lock);
	if (now - o->window_start >= 60000) {
		o->window_start = now;
		o->window_count = 0;
	}
	ok = o->window_count < o->cfg->oauth_callbacks_per_minute;
	if (ok)
		o->window_count++;
	pthread_mutex_unlock(&o->lock);
	return ok;
}

/* The state check: an install we started must come back with the state
 * we set in its cookie; one started in HighLevel's marketplace comes with
 * no state at all, allowed unless oauth_require_state is on. NULL when
 * fine, else why not. */
static const char *
oauth_state_problem(const struct app *app, const struct http_request *req)
{
	const char *state = http_query(req, "state"), *cookie = http_cookie(req, OAUTH_STATE_COOKIE);

	if (!state)
		return app->cfg->oauth_require_state ? "this installation did not start here (no state)" : NULL;
	if (!cookie || !secret_equal(state, cookie))
		return "the installation state does not match this browser's";
	return NULL;
}

void
oauth_http_callback(void *ctx, const struct http_request *req, struct http_response *resp)
{
	struct app *app = ctx;
	struct oauth *o = app->oauth;
	const char *code = http_query(req, "code"), *problem;
	struct ghl_result res;
	struct ghl_grant grant;
	struct token *t;
	char *form = NULL, *ru, *key;

	if (!o || !oauth_ready(o)) {
		http_text(resp, 503, "text/plain", "OAuth is not configured ([highlevel] client_id and client_secret).\n");
		return;
	}
	if (!code || !*code || strlen(code) > 512) {
		http_text(resp, 400, "text/plain", "Missing ?code= from HighLevel.\n");
		return;
	}
	if ((problem = oauth_state_problem(app, req)) != NULL) {
		log_warn("oauth: callback refused: %s", problem);
		http_text(resp, 400, "text/plain", "This installation link is not valid here. Start the installation again.\n");
		return;
	}
	if (!oauth_callback_allowed(o)) {
		log_warn("oauth: callback refused: more than %ld code exchanges this minute",
		    o->cfg->oauth_callbacks_per_minute);
		http_text(resp, 429, "text/plain", "Too many installation attempts. Wait a minute and try again.\n");
		return;
	}
	ru = redirect_uri(app->cfg);
	form = form_add(form, "client_id", app->cfg->client_id);
	form = form_add(form, "client_secret", app->cfg->client_secret);
	form = form_add(form, "grant_type", "authorization_code");
	form = form_add(form, "code", code);
	form = form_add(form, "redirect_uri", ru);
	free(ru);
	ghl_oauth_grant(app->ghl, "/oauth/token", form, NULL, NULL, &grant, &res);
	free(form);
	if (res.cls != GHL_OK) {
		log_warn("oauth: code exchange failed: status=%ld %s", res.status, res.error ? res.error : "");
		http_text(resp, 502, "text/plain", "HighLevel refused the installation code. Try installing again.\n");
		ghl_result_clear(&res);
		return;
	}
	if (grant.user_type && !strcmp(grant.user_type, "Company") && grant.company_id)
		key = xasprintf("company:%s", grant.company_id);
	else
		key = xstrdup(grant.location_id);
	t = key ? token_from_grant(&grant, key) : NULL;
	if (!t || store_token_put(app->store, t) < 0) {
		http_text(resp, 500, "text/plain", "Installation could not be saved.\n");
	} else {
		char *page = xasprintf("mailbridge is installed for %s.\n", key);
		log_info("oauth: installed %s (userType=%s)", key, t->user_type);
		/* status reports that waited for a token can go now */
		store_report_wake_location(app->store, key);
		store_set_installed(app->store, key, true);
		http_text(resp, 200, "text/plain", page);
		free(page);
	}
	store_token_free(t);
	free(key);
	ghl_grant_clear(&grant);
	ghl_result_clear(&res);
}

enum token_health
oauth_token_state(struct store *st, const struct location_config *loc, char *buf, size_t len)
{
	struct token *t = NULL;
	enum token_health lvl = TOKEN_OK;

	if (store_is_uninstalled(st, loc->id) == 1) {
		snprintf(buf, len, "uninstalled");
		return TOKEN_BAD;
	}
	if (store_token_get(st, loc->id, &t) == 1) {
		if (t->needs_reinstall) {
			snprintf(buf, len, "needs re-install");
			lvl = TOKEN_BAD;
		} else if (!t->access_token) {
			snprintf(buf, len, "installed, no token");
			lvl = TOKEN_WARN;
		} else {
			char when[32];
			iso_time(t->expires_at, when, sizeof(when));
			snprintf(buf, len, "until %s", when);
		}
	} else if (loc->token) {
		snprintf(buf, len, "static (config)");
	} else {
		snprintf(buf, len, "not installed");
		lvl = TOKEN_BAD;
	}
	store_token_free(t);
	return lvl;
}
