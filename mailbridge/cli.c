/* cli: opening and closing the long-lived objects a command or the
 * daemon works with (configuration, store, the store's keys). */
#include "cli.h"
#include "app.h"
#include "config.h"
#include "ghl.h"
#include "log.h"
#include "oauth.h"
#include "plugin_host.h"
#include "sig.h"
#include "store.h"
#include "store_tokens.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int
app_open(struct app *app, const char *path)
{
	char *err = NULL;
	memset(app, 0, sizeof(*app));
	app->cfg = app_load_config(path);
	if (!app->cfg)
		return -1;
	app->store = store_open(app->cfg->data_dir, &err);
	if (!app->store) {
		fprintf(stderr, "mailbridge: %s\n", err);
		free(err);
		config_free(app->cfg);
		return -1;
	}
	if (app->cfg->have_token_key)
		store_set_token_key(app->store, app->cfg->token_key);
	if (store_secret(app->store, "address-token", app->address_key) != 1) {
		fprintf(stderr, "mailbridge: cannot read or create the store's address key\n");
		store_close(app->store);
		config_free(app->cfg);
		return -1;
	}
	return 0;
}

static int
app_oauth_token(void *oauth, const char *location_id, const char *stale, char **token_r)
{
	return oauth_access_token(oauth, location_id, stale, token_r);
}

void
app_open_highlevel(struct app *app)
{
	app->ghl = ghl_new(app->cfg, app->store);
	if (app->cfg->client_id) {
		app->oauth = oauth_new(app->cfg, app->store, app->ghl);
		ghl_set_token_source(app->ghl, app_oauth_token, app->oauth);
	}
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

