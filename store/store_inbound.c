/* store_inbound: dedupe records, IMAP marks, watcher states (store_inbound.h). */
#include "store_private.h"
#include "store_inbound.h"
#include "store_threads.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static void
row_checkpoint(const struct store_row *stmt, void *arg)
{
	struct imap_checkpoint *c = arg;
	c->uidvalidity = (uint32_t)store_col_int(stmt, 0);
	c->last_uid = (uint32_t)store_col_int(stmt, 1);
	c->rescan_upto = (uint32_t)store_col_int(stmt, 2);
}

int
store_checkpoint_get(struct store *st, const char *account, struct imap_checkpoint *c)
{
	memset(c, 0, sizeof(*c));
	return store_query_row(st, row_checkpoint, c, "SELECT uidvalidity, last_uid, rescan_upto "
	    "FROM imap_checkpoints WHERE account=?1", "s", account);
}

int
store_checkpoint_put(struct store *st, const char *account, const struct imap_checkpoint *c)
{
	return store_exec(st, "INSERT INTO imap_checkpoints (account, uidvalidity, last_uid, rescan_upto, updated_at) "
	    "VALUES (?1,?2,?3,?4,?5) ON CONFLICT(account) DO UPDATE SET uidvalidity=excluded.uidvalidity, "
	    "last_uid=excluded.last_uid, rescan_upto=excluded.rescan_upto, updated_at=excluded.updated_at",
	    "siiii", account, (int64_t)c->uidvalidity, (int64_t)c->last_uid, (int64_t)c->rescan_upto,
	    now_ms()) < 0 ? -1 : 1;
}

struct seen_row {
	char *state;
	int64_t version;
};

static void
row_seen(const struct store_row *r, void *arg)
{
	struct seen_row *s = arg;
	s->state = store_col_text(r, 0);
	s->version = store_col_int(r, 1);
}

int
store_inbound_state(struct store *st, const char *location_id, const char *key, enum inbound_state *state_r,
    int64_t *version_r)
{
	struct seen_row row = { NULL, 0 };
	int r = store_query_row(st, row_seen, &row, "SELECT state, attempts FROM inbound_seen "
	    "WHERE location_id=?1 AND dedupe_key=?2", "ss", location_id, key);
	int s = inbound_state_parse(row.state);

	*state_r = r == 1 && s > IN_NEW ? (enum inbound_state)s : IN_NEW;
	*version_r = r == 1 ? row.version : 0;
	if (r == 1 && s <= IN_NEW) {
		log_error("store: inbound %s/%s has an unknown state \"%s\"", location_id, key,
		    row.state ? row.state : "");
		r = -1;
	}
	free(row.state);
	return r;
}

int
store_inbound_take(struct store *st, const char *location_id, const char *key, int64_t version, const char *summary)
{
	/* every write of a record counts one more attempt: the version */
	int r = store_exec_durable(st, "INSERT INTO inbound_seen (location_id, dedupe_key, state, summary, attempts, "
	    "created_at) VALUES (?1,?2,?6,?3,1,?4) ON CONFLICT(location_id, dedupe_key) DO UPDATE SET "
	    "state=excluded.state, ghl_message_id=NULL, error=NULL, summary=COALESCE(excluded.summary, "
	    "inbound_seen.summary), raw=NULL, attempts=inbound_seen.attempts+1 WHERE inbound_seen.attempts=?5",
	    "sssiis", location_id, key, summary, now_ms(), version, inbound_state_name(IN_POSTING));
	return r < 0 ? -1 : r > 0 ? 1 : 0;
}

#define INBOUND_UPSERT "INSERT INTO inbound_seen (location_id, dedupe_key, state, ghl_message_id, error, " \
	"summary, raw, attempts, created_at) VALUES (?1,?2,?3,?4,?5,?6,?7,1,?8) " \
	"ON CONFLICT(location_id, dedupe_key) DO UPDATE SET state=excluded.state, " \
	"ghl_message_id=excluded.ghl_message_id, error=excluded.error, " \
	"summary=COALESCE(excluded.summary, inbound_seen.summary), raw=excluded.raw, " \
	"attempts=inbound_seen.attempts+1"

int
store_inbound_record(struct store *st, const char *location_id, const char *key, enum inbound_state state,
    const char *ghl_message_id, const char *error, const char *summary, const void *raw, size_t raw_len)
{
	return store_exec_durable(st, INBOUND_UPSERT, "ssssssbi", location_id, key, inbound_state_name(state),
	    ghl_message_id, error, summary, raw, raw_len, now_ms()) == 1 ? 1 : -1;
}

int
store_inbound_posted(struct store *st, const char *location_id, const char *key, const char *ghl_message_id,
    const char *summary, const struct msgmap *m, const char *parent_ghl_id, const char *event, const char *replier)
{
	int64_t now = now_ms();

	if (store_tx_begin(st, "inbound posted") < 0)
		return -1;
	if (m)
		store_tx_extra(st, MSGMAP_UPSERT, "sssssssssi", MSGMAP_ARGS(m));
	/* the bind types as store_inbound_record's (raw a blob): PostgreSQL
	 * prepares the text once per connection, with whichever comes first */
	store_tx_step(st, INBOUND_UPSERT, "ssssssbi", location_id, key, inbound_state_name(IN_POSTED), ghl_message_id,
	    (const char *)NULL, summary, (const void *)NULL, (size_t)0, now);
	if (parent_ghl_id) {
		store_tx_trace(st, EVENT_INSERT, "issss", now, parent_ghl_id, "reply", event, location_id);
		/* the parent's "replied" event, once per replier */
		store_tx_trace(st, ENGAGE_INSERT, "ssssi", parent_ghl_id, "replied", replier ? replier : "", location_id,
		    now);
	}
	store_tx_trace(st, EVENT_INSERT, "issss", now, ghl_message_id, "inbound", event, location_id);
	/* durable: HighLevel has it; a re-read must not post it again */
	return store_tx_end(st, "inbound posted", true) < 0 ? -1 : 1;
}

struct list_cb {
	void (*fn)(const struct inbound_row *, void *);
	void *arg;
};

static void
list_row(const struct store_row *r, void *arg)
{
	struct list_cb *cb = arg;
	int state_of = inbound_state_parse(store_col_str(r, 2));
	struct inbound_row row = {
		.location_id = store_col_str(r, 0),
		.key = store_col_str(r, 1),
		.ghl_message_id = store_col_str(r, 3),
		.error = store_col_str(r, 4),
		.summary = store_col_str(r, 5),
		.state = state_of > 0 ? (enum inbound_state)state_of : IN_NEW,
		.attempts = (int)store_col_int(r, 6), .created_at = store_col_int(r, 7),
	};
	cb->fn(&row, cb->arg);
}

int
store_inbound_list(struct store *st, enum inbound_state state, void (*fn)(const struct inbound_row *, void *),
    void *arg)
{
	struct list_cb cb = { fn, arg };
	return store_query_rows(st, list_row, &cb, "SELECT location_id, dedupe_key, state, ghl_message_id, error, "
	    "summary, attempts, created_at FROM inbound_seen WHERE ?1 IS NULL OR state=?1 ORDER BY created_at DESC "
	    "LIMIT 1000", "s", inbound_state_name(state));
}

/* A blob column, copied with a terminating NUL (not counted in *len_r). */
static char *
col_blob_copy(const struct store_row *r, int i, size_t *len_r)
{
	const void *b = store_col_blob(r, i, len_r);
	char *out = xmalloc(*len_r + 1);
	if (*len_r)
		memcpy(out, b, *len_r);
	out[*len_r] = '\0';
	return out;
}

struct raw_out {
	char **raw;
	size_t *len;
};

static void
row_raw(const struct store_row *r, void *arg)
{
	struct raw_out *o = arg;
	*o->raw = col_blob_copy(r, 0, o->len);
}

int
store_inbound_raw(struct store *st, const char *location_id, const char *key, char **raw_r, size_t *len_r)
{
	struct raw_out o = { raw_r, len_r };
	*raw_r = NULL;
	return store_query_row(st, row_raw, &o, "SELECT raw FROM inbound_seen WHERE location_id=?1 AND dedupe_key=?2 "
	    "AND raw IS NOT NULL", "ss", location_id, key);
}

int
store_watcher_state(struct store *st, const char *location_id, const char *state, const char *detail)
{
	return store_exec(st, "INSERT INTO watchers (location_id, state, detail, updated_at) VALUES (?1,?2,?3,?4) "
	    "ON CONFLICT(location_id) DO UPDATE SET state=excluded.state, detail=excluded.detail, "
	    "updated_at=excluded.updated_at", "sssi", location_id, state, detail, now_ms()) < 0 ? -1 : 1;
}

struct watcher_row {
	char **state, **detail;
	int64_t *at;
};

static void
row_watcher(const struct store_row *stmt, void *arg)
{
	struct watcher_row *w = arg;
	*w->state = store_col_text(stmt, 0);
	*w->detail = store_col_text(stmt, 1);
	*w->at = store_col_int(stmt, 2);
}

int
store_watcher_get(struct store *st, const char *location_id, char **state_r, char **detail_r, int64_t *at_r)
{
	struct watcher_row w = { state_r, detail_r, at_r };
	*state_r = *detail_r = NULL;
	return store_query_row(st, row_watcher, &w, "SELECT state, detail, updated_at FROM watchers "
	    "WHERE location_id=?1", "s", location_id);
}

int
store_set_installed(struct store *st, const char *location_id, bool installed)
{
	if (installed)
		return store_exec_durable(st, "DELETE FROM uninstalled WHERE location_id=?1", "s", location_id) < 0 ? -1 : 1;
	return store_exec_durable(st, "INSERT INTO uninstalled (location_id, at) VALUES (?1, ?2) "
	    "ON CONFLICT DO NOTHING", "si", location_id, now_ms()) < 0 ? -1 : 1;
}

int
store_is_uninstalled(struct store *st, const char *location_id)
{
	return store_query_row(st, store_row_none, NULL, "SELECT 1 FROM uninstalled WHERE location_id=?1", "s", location_id);
}

void
store_spooled_free(struct spooled *s)
{
	if (!s)
		return;
	free(s->location_id);
	free(s->raw);
	free(s);
}

int
store_spool_add(struct store *st, const char *location_id, const char *raw, size_t len)
{
	/* durable: the mailbox's mark passes the message once this returns */
	return store_exec_durable(st, "INSERT INTO inbound_spool (location_id, raw, received_at, next_at) "
	    "VALUES (?1, ?2, ?3, ?3)", "sbi", location_id, (const void *)raw, len, now_ms()) == 1 ? 1 : -1;
}

static void
row_spooled(const struct store_row *s, void *arg)
{
	struct spooled *sp = xcalloc(1, sizeof(*sp));
	sp->id = store_col_int(s, 0);
	sp->location_id = store_col_text(s, 1);
	sp->raw = col_blob_copy(s, 2, &sp->len);
	sp->attempts = store_col_int(s, 3);
	sp->received_at = store_col_int(s, 4);
	*(struct spooled **)arg = sp;
}

int
store_spool_claim(struct store *st, int64_t now, struct spooled **s_r)
{
	*s_r = NULL;
	return store_query_row(st, row_spooled, s_r,
	    "UPDATE inbound_spool SET claimed=1, attempts=attempts+1, owner=?2 WHERE id = (SELECT id FROM inbound_spool "
	    "WHERE claimed=0 AND next_at<=?1 ORDER BY next_at, id LIMIT 1" STORE_SKIP_LOCKED ") AND claimed=0 "
	    "RETURNING id, location_id, raw, attempts, received_at", "is", now, st->instance);
}

int
store_spool_done(struct store *st, int64_t id)
{
	/* not durable: after a crash the message is handled again, and its
	 * dedupe record (durable) says it was */
	return store_exec(st, "DELETE FROM inbound_spool WHERE id=?1", "i", id) < 0 ? -1 : 1;
}

int
store_spool_later(struct store *st, int64_t id, int64_t next_at, bool counted)
{
	return store_exec(st, "UPDATE inbound_spool SET claimed=0, next_at=?2, attempts=attempts-?3 WHERE id=?1",
	    "iii", id, next_at, (int64_t)!counted) < 0 ? -1 : 1;
}

int
store_spool_release(struct store *st, bool mine_too)
{
	return store_exec(st, "UPDATE inbound_spool SET claimed=0, owner=NULL WHERE claimed=1 AND "
	    STORE_ORPHAN("?1", "?2", "?3"), "sii", st->instance, (int64_t)mine_too, now_ms() - st->lease_ms);
}

int64_t
store_spool_next_due(struct store *st)
{
	int64_t at = -1;
	store_query_row(st, store_row_int64, &at, "SELECT MIN(next_at) FROM inbound_spool WHERE claimed=0", "");
	return at;
}

int
store_spool_count(struct store *st)
{
	int64_t n = -1;
	store_query_row(st, store_row_int64, &n, "SELECT COUNT(*) FROM inbound_spool", "");
	return (int)n;
}
