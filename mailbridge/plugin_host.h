/* plugin_host: loads the plugins locations name (sms = x, call = y) from
 * [plugins] dir with dlopen, checks the ABI before anything else, gives
 * each one the host function table (plugin.h), routes /plugins/<name>/...
 * to its http hook, and runs its send with a timeout. */
#ifndef MB_PLUGIN_HOST_H
#define MB_PLUGIN_HOST_H

#include "http.h"
#include "plugin.h"

struct app;
struct location_config;
struct plugin_host;
struct loaded_plugin;

/* Loads every plugin a location names. NULL with *error_r (e.g. a wrong
 * ABI version, a missing file, init refused). With no plugin named it
 * returns an empty host. */
struct plugin_host *plugin_host_load(struct app *app, char **error_r);
/* What load does short of starting them (check-config): each plugin the
 * locations name is opened and its ABI and allow_from checked. */
struct plugin_host *plugin_host_check(struct app *app, char **error_r);
void plugin_host_free(struct plugin_host *h);

/* The plugin serving type (MB_TYPE_*) at loc, or NULL. */
struct loaded_plugin *plugin_host_for(struct plugin_host *h, const struct location_config *loc, unsigned type);

/* Runs send, bounded by the configured timeout (a late send counts as
 * temporary; its thread is left to finish on its own). */
enum mb_send_result plugin_send(struct plugin_host *h, struct loaded_plugin *p, const struct mb_outbound *job,
    char **reason_r);

/* HTTP handler for the /plugins/ prefix (app is struct app *). */
void plugin_http(void *app, const struct http_request *req, struct http_response *resp);

#endif
