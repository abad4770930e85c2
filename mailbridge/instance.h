/* instance: this process among the mailbridge instances sharing one store
 * (PostgreSQL; with SQLite there is one). It names itself, beats a
 * heartbeat, and takes back the claimed work of instances that stopped
 * beating (store_instances.h). Work that must run on one instance at a
 * time (the retention prune) goes through a lease. */
#ifndef MB_INSTANCE_H
#define MB_INSTANCE_H

#include <stdbool.h>
#include <stdint.h>

struct app;

/* Names this process in the store ([server] instance, or host:port), and
 * takes back what its last run held: after a crash, claimed jobs go back
 * to the queue and spooled messages are released. Returns how many jobs
 * were uncertain (found sending), or -1. */
int instance_start(struct app *app);
/* One heartbeat, and the work of instances that are gone taken back.
 * Returns the delay in ms until the next. */
int64_t instance_tick(struct app *app);
/* A clean stop: the row goes, so no one waits for the lease. */
void instance_stop(struct app *app);
/* Runs fn(app) if this instance holds (or takes) the lease `name` for
 * ttl_ms: 1 ran, 0 another instance holds it, -1 store error. */
int instance_exclusive(struct app *app, const char *name, int64_t ttl_ms, void (*fn)(struct app *));

#endif
