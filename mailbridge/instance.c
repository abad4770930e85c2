/* instance: heartbeat, recovery of gone instances' work, leases (instance.h). */
#include "instance.h"
#include "app.h"
#include "config.h"
#include "jobs.h"
#include "log.h"
#include "store.h"
#include "store_inbound.h"
#include "store_instances.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* Beats per lease: an instance is declared gone after missing several. */
#define BEATS_PER_LEASE 5

int
instance_start(struct app *app)
{
	char host[256], *name;
	int recovered;

	if (app->cfg->instance && *app->cfg->instance) {
		name = xstrdup(app->cfg->instance);
	} else {
		/* stable across restarts, distinct for two instances on one host */
		if (gethostname(host, sizeof(host)) < 0)
			snprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		name = xasprintf("%s:%d", host, app->cfg->listen_port);
	}
	store_set_instance(app->store, name, app->cfg->store_lease * 1000);
	free(name);
	/* our last run's claims are orphans now, whoever looks */
	if (store_instance_leave(app->store) < 0)
		return -1;
	recovered = jobs_recover(app->store, true);
	if (recovered < 0)
		return -1;
	if (store_spool_release(app->store, true) < 0)
		return -1;
	if (store_instance_beat(app->store, NULL) < 0)
		return -1;
	log_info("instance: %s (%s store, lease %lds)", store_instance_name(app->store),
	    store_backend_name(app->store), app->cfg->store_lease);
	return recovered;
}

int64_t
instance_tick(struct app *app)
{
	int64_t every = store_instance_lease_ms(app->store) / BEATS_PER_LEASE;
	int uncertain, released;

	if (store_instance_beat(app->store, NULL) < 0) {
		log_error("instance: heartbeat failed (store unreachable?); retrying in 1 s");
		return 1000;
	}
	/* what instances that stopped beating had claimed: none on a store
	 * no other instance can share (SQLite), where instance_start took
	 * back the last run's and the heartbeat only tells `store migrate`
	 * that this one runs */
	if (!store_is_shared(app->store))
		return every > 1000 ? every : 1000;
	uncertain = jobs_recover(app->store, false);
	if (uncertain > 0)
		log_warn("instance: %d job(s) of a gone instance were interrupted during DATA; %s", uncertain,
		    app->cfg->postfix_log ? "each is sent again unless postfix_log shows the relay kept it" :
		    "they are sent again (its relay may hold a copy)");
	released = store_spool_release(app->store, false);
	if (released > 0)
		log_warn("instance: %d spooled message(s) of a gone instance released", released);
	return every > 1000 ? every : 1000;
}

void
instance_stop(struct app *app)
{
	if (store_instance_leave(app->store) < 0)
		log_error("instance: cannot remove %s from the store; the others take its work back after %lds",
		    store_instance_name(app->store), app->cfg->store_lease);
}

int
instance_exclusive(struct app *app, const char *name, int64_t ttl_ms, void (*fn)(struct app *))
{
	int r = store_lease_take(app->store, name, ttl_ms);

	if (r <= 0)
		return r < 0 ? -1 : 0;
	fn(app);
	return 1;
}
