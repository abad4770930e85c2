/* store_instances: the mailbridge instances sharing one store, and named
 * leases between them.
 *
 * Each instance has a name ([server] instance) and beats a heartbeat row.
 * What it claims (jobs, spooled messages) carries its name; an instance
 * whose heartbeat is older than the lease is dead, and what it held is
 * taken back by the others (jobs_recover, the spool's release). A lease
 * ("prune", "mailbox:<location>") is held by one live instance at a time,
 * for ttl, renewed by its holder. With SQLite there is one instance; the
 * same rows make a restart take back what the last run held. */
#ifndef MB_STORE_INSTANCES_H
#define MB_STORE_INSTANCES_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

/* This process's name, and how long a silent instance keeps its claims. */
void store_set_instance(struct store *st, const char *name, int64_t lease_ms);
const char *store_instance_name(const struct store *st);
int64_t store_instance_lease_ms(const struct store *st);

/* The heartbeat: 1, or -1. detail is shown by `accounts` (NULL: kept). */
int store_instance_beat(struct store *st, const char *detail);
/* Our row goes (a clean stop: the others need not wait for the lease). */
int store_instance_leave(struct store *st);
/* Every instance with a row: how many, or -1. */
int store_instance_list(struct store *st, void (*fn)(const char *name, int64_t started_at, int64_t heartbeat_at,
    const char *detail, void *arg), void *arg);
/* Live instances (heartbeat within the lease), ourselves included: n, or -1. */
int store_instance_live(struct store *st);

/* Takes or renews the lease `name` for ttl_ms: 1 ours, 0 another live
 * holder's, -1 error. */
int store_lease_take(struct store *st, const char *name, int64_t ttl_ms);
int store_lease_drop(struct store *st, const char *name);
/* Renews every lease of ours named prefix* for ttl_ms: how many, or -1. */
int store_lease_renew_mine(struct store *st, const char *prefix, int64_t ttl_ms);
/* Who holds `name` now (malloc'd in *owner_r): 1, 0 nobody, -1. */
int store_lease_holder(struct store *st, const char *name, char **owner_r);
/* Hands the lease `name` over: nobody's, and free for the others after
 * grace_ms (our reader has stopped by then). 1, or -1. */
int store_lease_release(struct store *st, const char *name, int64_t grace_ms);
/* Live leases named prefix*, each to fn with its holder: how many, or -1. */
int store_lease_each(struct store *st, const char *prefix, void (*fn)(const char *name, const char *owner, void *arg),
    void *arg);

/* Whether other instances can share this store (PostgreSQL). */
bool store_is_shared(const struct store *st);
/* HighLevel's window for key, shared by every instance: 0 go, with
 * *granted_r slots (1 to want, each counted in the window from lease_ms
 * after now, the latest they may be spent), else the ms to wait; -1 when
 * the store cannot tell (SQLite: one instance, whose own window is the
 * whole truth; or an error). */
int64_t store_rate_take(struct store *st, const char *key, long limit, int64_t window_ms, int64_t lease_ms, long want,
    long *granted_r);

#endif
