/* store_unsub: unsubscribe requests (store_unsub.h). */
#include "store_private.h"
#include "store_unsub.h"
#include "util.h"

#include <stdlib.h>

void
store_unsub_free(struct unsub *u)
{
	if (!u)
		return;
	free(u->location_id);
	free(u->contact_id);
	free(u->message_id);
	free(u->if_email);
	free(u);
}

int
store_unsub_add(struct store *st, const char *location_id, const char *contact_id, const char *message_id,
    const char *via, const char *event, const char *if_email)
{
	int64_t now = now_ms();

	if (store_tx_begin(st, "unsubscribe") < 0)
		return -1;
	if (if_email)
		/* conditional (a hard bounce): never weakens a request already there */
		store_tx_step(st, "INSERT INTO unsubscribes (location_id, contact_id, message_id, via, created_at, next_at, "
		    "if_email) VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6) ON CONFLICT(location_id, contact_id) DO NOTHING",
		    "ssssis", location_id, contact_id, message_id, via, now, if_email);
	else
		store_tx_step(st, "INSERT INTO unsubscribes (location_id, contact_id, message_id, via, created_at, "
		    "next_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT(location_id, contact_id) DO UPDATE SET "
		    "message_id=excluded.message_id, via=excluded.via, created_at=excluded.created_at, "
		    "next_at=excluded.next_at, attempts=0, done_at=NULL, error=NULL, if_email=NULL", "ssssi", location_id,
		    contact_id, message_id, via, now);
	if (event && message_id)
		store_tx_trace(st, ENGAGE_INSERT, "ssssi", message_id, event, "", location_id, now);
	/* durable: the unsubscriber is told it is done once this returns */
	return store_tx_end(st, "unsubscribe", true) < 0 ? -1 : 1;
}

static void
row_unsub(const struct store_row *s, void *arg)
{
	struct unsub *u = xcalloc(1, sizeof(*u));
	u->id = store_col_int(s, 0);
	u->location_id = store_col_text(s, 1);
	u->contact_id = store_col_text(s, 2);
	u->message_id = store_col_text(s, 3);
	u->attempts = store_col_int(s, 4);
	u->if_email = store_col_text(s, 5);
	*(struct unsub **)arg = u;
}

int
store_unsub_claim(struct store *st, int64_t now, int64_t lease_ms, struct unsub **u_r)
{
	*u_r = NULL;
	return store_query_row(st, row_unsub, u_r,
	    "UPDATE unsubscribes SET next_at=?2, attempts=attempts+1 WHERE id = (SELECT id FROM unsubscribes "
	    "WHERE done_at IS NULL AND next_at<=?1 ORDER BY next_at, id LIMIT 1" STORE_SKIP_LOCKED ") AND next_at<=?1 "
	    "RETURNING id, location_id, contact_id, message_id, attempts, if_email", "ii", now, now + lease_ms);
}

int
store_unsub_done(struct store *st, int64_t id, const char *error)
{
	return store_exec(st, "UPDATE unsubscribes SET done_at=?2, error=?3 WHERE id=?1", "iis", id, now_ms(), error) < 0 ?
	    -1 : 1;
}

int
store_unsub_later(struct store *st, int64_t id, int64_t next_at, const char *error, bool counted)
{
	return store_exec(st, "UPDATE unsubscribes SET next_at=?2, error=?3, attempts=CASE WHEN ?4 = 0 AND attempts > 0 "
	    "THEN attempts - 1 ELSE attempts END WHERE id=?1", "iisi", id, next_at, error, (int64_t)counted) < 0 ? -1 : 1;
}

int64_t
store_unsub_next_due(struct store *st)
{
	int64_t at = -1;
	store_query_row(st, store_row_int64, &at, "SELECT MIN(next_at) FROM unsubscribes WHERE done_at IS NULL", "");
	return at;
}

int
store_unsub_is_done(struct store *st, const char *location_id, const char *contact_id)
{
	int64_t n = -1;
	if (store_query_row(st, store_row_int64, &n, "SELECT COUNT(*) FROM unsubscribes WHERE location_id=?1 AND "
	    "contact_id=?2 AND done_at IS NOT NULL AND error IS NULL", "ss", location_id, contact_id) < 0)
		return -1;
	return n > 0;
}
