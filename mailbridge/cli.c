/* cli: opening and closing the long-lived objects a command or the
 * daemon works with (configuration, store, the store's keys). */
#include "cli.h"
#include "app.h"
#include "config.h"
#include "ghl.h"
#include "log.h"
#include "metrics.h"
#include "oauth.h"
#include "plugin_host.h"
#include "sig.h"
#include "store.h"
#include "store_instances.h"
#include "store_tokens.h"
#include "util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Opens config + store for a command; NULL on failure (printed). */
struct config *
app_load_config(const char *path)
{
	struct config *cfg = config_load(path, stderr);
	enum log_level lvl;
	if (cfg && log_level_from_name(cfg->log_level, &lvl) == 0)
		log_set_level(lvl);
	return cfg;
}

static int
app_open_as(struct app *app, const char *path, bool readonly)
{
	char *err = NULL;
	memset(app, 0, sizeof(*app));
	app->cfg = app_load_config(path);
	if (!app->cfg)
		return -1;
	/* data_dir holds spooled attachments whatever the backend (SQLite
	 * also keeps its database there) */
	if (!readonly && mkdir(app->cfg->data_dir, 0700) < 0 && errno != EEXIST) {
		fprintf(stderr, "mailbridge: cannot create data_dir %s: %s\n", app->cfg->data_dir, strerror(errno));
		config_free(app->cfg);
		return -1;
	}
	app->store = store_open_conf(&(struct store_conf){ .backend = app->cfg->store_backend,
	    .data_dir = app->cfg->data_dir, .dsn = app->cfg->store_dsn, .pool = (int)app->cfg->store_pool,
	    .cache_kib = (int)app->cfg->store_cache_kib }, readonly, &err);
	if (!app->store) {
		fprintf(stderr, "mailbridge: %s\n", err);
		free(err);
		config_free(app->cfg);
		return -1;
	}
	if (app->cfg->have_token_key)
		store_set_token_key(app->store, app->cfg->token_key);
	if (readonly)
		return 0;    /* no key is made: nothing here writes */
	if (store_secret(app->store, "address-token", app->address_key) != 1) {
		fprintf(stderr, "mailbridge: cannot read or create the store's address key\n");
		store_close(app->store);
		config_free(app->cfg);
		return -1;
	}
	return 0;
}

int
app_open(struct app *app, const char *path)
{
	return app_open_as(app, path, false);
}

int
app_open_readonly(struct app *app, const char *path)
{
	return app_open_as(app, path, true);
}

/* ghl's token source: the location's OAuth token when the app is set up
 * for OAuth, else the token written in its [location] section. */
static int
app_token(void *arg, const char *location_id, const char *stale, char **token_r)
{
	struct app *app = arg;
	const struct location_config *loc = config_location(app->cfg, location_id);
	int r = app->oauth ? oauth_access_token(app->oauth, location_id, stale, token_r) : 0;

	if (r != 0)
		return r < 0 ? -1 : GHL_TOKEN_REFRESHABLE;
	if (loc && loc->token) {
		*token_r = xstrdup(loc->token);
		return GHL_TOKEN_FIXED;
	}
	return 0;
}

/* ghl's counters, into /metrics */
static void
app_ghl_count(void *arg, enum ghl_count what, int64_t usec)
{
	static const enum metric m[] = {
		[GHL_COUNT_2XX] = M_GHL_2XX, [GHL_COUNT_4XX] = M_GHL_4XX, [GHL_COUNT_429] = M_GHL_429,
		[GHL_COUNT_5XX] = M_GHL_5XX, [GHL_COUNT_NETWORK] = M_GHL_NETWORK,
		[GHL_COUNT_THROTTLED] = M_GHL_THROTTLED, [GHL_COUNT_SHARE_ASK] = M_GHL_SHARE_ASK,
	};
	(void)arg;
	if ((size_t)what < sizeof(m) / sizeof(m[0]))
		metrics_inc(m[what]);
	if (what != GHL_COUNT_THROTTLED && what != GHL_COUNT_SHARE_ASK)
		metrics_observe(H_HIGHLEVEL_CALL, usec);
}

/* HighLevel's window, shared through the store by every instance on it. */
static int64_t
app_shared_limit(void *ctx, const char *location_id, long limit, int64_t window_ms, int64_t lease_ms, long want,
    long *granted_r)
{
	return store_rate_take(ctx, location_id, limit, window_ms, lease_ms, want, granted_r);
}

void
app_open_highlevel(struct app *app)
{
	struct ghl_params p = { .api_base = app->cfg->api_base, .timeout = app->cfg->api_timeout,
		.ca_file = app->cfg->api_ca_file, .rate_limit = app->cfg->rate_limit,
		.rate_window = app->cfg->rate_window, .rate_reserve = app->cfg->rate_reserve,
		.rate_share_lease = app->cfg->rate_share_lease };

	app->ghl = ghl_new(&p);
	ghl_set_counter(app->ghl, app_ghl_count, NULL);
	if (store_is_shared(app->store))
		ghl_set_shared_limiter(app->ghl, app_shared_limit, app->store);
	if (app->cfg->client_id)
		app->oauth = oauth_new(app->cfg, app->store, app->ghl);
	ghl_set_token_source(app->ghl, app_token, app);
}

void
app_close(struct app *app)
{
	plugin_host_free(app->plugins);
	oauth_free(app->oauth);
	ghl_free(app->ghl);
	sig_keys_free(app->keys);
	store_close(app->store);
	config_free(app->cfg);
}

