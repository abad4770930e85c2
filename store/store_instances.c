/* store_instances: instances, their heartbeats, and leases (store_instances.h). */
#include "store_private.h"
#include "store_instances.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

void
store_set_instance(struct store *st, const char *name, int64_t lease_ms)
{
	free(st->instance);
	st->instance = xstrdup(name);
	st->lease_ms = lease_ms;
}

const char *
store_instance_name(const struct store *st)
{
	return st->instance;
}

int64_t
store_instance_lease_ms(const struct store *st)
{
	return st->lease_ms;
}

int
store_instance_beat(struct store *st, const char *detail)
{
	int64_t now = now_ms();
	return store_exec(st, "INSERT INTO instances (name, started_at, heartbeat_at, detail) VALUES (?1, ?2, ?2, ?3) "
	    "ON CONFLICT(name) DO UPDATE SET heartbeat_at=excluded.heartbeat_at, "
	    "detail=COALESCE(excluded.detail, instances.detail)", "sis", st->instance, now, detail) == 1 ? 1 : -1;
}

int
store_instance_leave(struct store *st)
{
	if (store_exec(st, "DELETE FROM instances WHERE name=?1", "s", st->instance) < 0 ||
	    store_exec(st, "DELETE FROM leases WHERE owner=?1", "s", st->instance) < 0)
		return -1;
	return 1;
}

struct list_cb {
	void (*fn)(const char *, int64_t, int64_t, const char *, void *);
	void *arg;
};

static void
row_instance(const struct store_row *r, void *arg)
{
	struct list_cb *cb = arg;
	cb->fn(store_col_str(r, 0), store_col_int(r, 1), store_col_int(r, 2), store_col_str(r, 3), cb->arg);
}

int
store_instance_list(struct store *st, void (*fn)(const char *name, int64_t started_at, int64_t heartbeat_at,
    const char *detail, void *arg), void *arg)
{
	struct list_cb cb = { fn, arg };
	return store_query_rows(st, row_instance, &cb, "SELECT name, started_at, heartbeat_at, detail FROM instances "
	    "ORDER BY name", "");
}

int
store_instance_live(struct store *st)
{
	int64_t n = -1;
	if (store_query_row(st, store_row_int64, &n, "SELECT count(*) FROM instances WHERE heartbeat_at >= ?1", "i",
	    now_ms() - st->lease_ms) < 0)
		return -1;
	return (int)n;
}

int
store_lease_take(struct store *st, const char *name, int64_t ttl_ms)
{
	int64_t now = now_ms();
	/* ours already, or free, or its holder let it run out */
	return store_exec(st, "INSERT INTO leases (name, owner, until) VALUES (?1, ?2, ?3) "
	    "ON CONFLICT(name) DO UPDATE SET owner=excluded.owner, until=excluded.until "
	    "WHERE leases.owner=excluded.owner OR leases.until < ?4", "ssii", name, st->instance, now + ttl_ms, now);
}

int
store_lease_drop(struct store *st, const char *name)
{
	return store_exec(st, "DELETE FROM leases WHERE name=?1 AND owner=?2", "ss", name, st->instance) < 0 ? -1 : 1;
}

int
store_lease_renew_mine(struct store *st, const char *prefix, int64_t ttl_ms)
{
	return store_exec(st, "UPDATE leases SET until=?3 WHERE owner=?1 AND substr(name, 1, length(?2)) = ?2", "ssi",
	    st->instance, prefix, now_ms() + ttl_ms);
}

int
store_lease_holder(struct store *st, const char *name, char **owner_r)
{
	*owner_r = NULL;
	return store_query_row(st, store_row_text, owner_r, "SELECT owner FROM leases WHERE name=?1 AND until >= ?2",
	    "si", name, now_ms());
}

int
store_lease_release(struct store *st, const char *name, int64_t grace_ms)
{
	return store_exec(st, "UPDATE leases SET owner='', until=?3 WHERE name=?1 AND owner=?2", "ssi", name,
	    st->instance, now_ms() + grace_ms) < 0 ? -1 : 1;
}

struct each_cb {
	void (*fn)(const char *, const char *, void *);
	void *arg;
};

static void
row_lease(const struct store_row *r, void *arg)
{
	struct each_cb *cb = arg;
	cb->fn(store_col_str(r, 0), store_col_str(r, 1), cb->arg);
}

int
store_lease_each(struct store *st, const char *prefix, void (*fn)(const char *name, const char *owner, void *arg),
    void *arg)
{
	struct each_cb cb = { fn, arg };
	return store_query_rows(st, row_lease, &cb, "SELECT name, owner FROM leases WHERE until >= ?2 AND "
	    "substr(name, 1, length(?1)) = ?1 ORDER BY name", "si", prefix, now_ms());
}

bool
store_is_shared(const struct store *st)
{
	return st->ops->shared;
}

struct rate_grant {
	int64_t granted, wait;
};

static void
row_rate_grant(const struct store_row *r, void *arg)
{
	struct rate_grant *g = arg;
	g->granted = store_col_int(r, 0);
	g->wait = store_col_int(r, 1);
}

int64_t
store_rate_take(struct store *st, const char *key, long limit, int64_t window_ms, int64_t lease_ms, long want,
    long *granted_r)
{
	struct rate_grant g = { 0, -1 };

	*granted_r = 0;
	if (!st->ops->shared)
		return -1;
	if (store_query_row(st, row_rate_grant, &g, "SELECT granted, wait_ms FROM mb_rate_lease(?1, ?2, ?3, ?4, ?5)",
	    "siiii", key, (int64_t)limit, window_ms, lease_ms, (int64_t)(want > 0 ? want : 1)) != 1)
		return -1;
	if (g.wait == 0 && g.granted < 1)
		return -1;
	*granted_r = (long)g.granted;
	return g.wait;
}
