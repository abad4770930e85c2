/* store_threads: the Message-ID map (store_threads.h). */
#include "store_private.h"
#include "store_threads.h"
#include "log.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

void
store_msgmap_free(struct msgmap *m)
{
	if (!m)
		return;
	free(m->rfc_message_id);
	free(m->location_id);
	free(m->ghl_message_id);
	free(m->email_message_id);
	free(m->alt_id);
	free(m->conversation_id);
	free(m->contact_id);
	free(m->references);
	free(m->reply_token);
	free(m);
}

int
store_msgmap_put(struct store *st, const struct msgmap *m)
{
	return store_exec(st, MSGMAP_UPSERT, "sssssssssi", MSGMAP_ARGS(m)) < 0 ? -1 : 1;
}

static void
row_msgmap(const struct store_row *r, void *arg)
{
	struct msgmap *m = xcalloc(1, sizeof(*m));
	m->rfc_message_id = store_col_text(r, 0);
	m->location_id = store_col_text(r, 1);
	m->ghl_message_id = store_col_text(r, 2);
	m->email_message_id = store_col_text(r, 3);
	m->alt_id = store_col_text(r, 4);
	m->conversation_id = store_col_text(r, 5);
	m->contact_id = store_col_text(r, 6);
	m->references = store_col_text(r, 7);
	m->reply_token = store_col_text(r, 8);
	*(struct msgmap **)arg = m;
}

int
store_msgmap_get(struct store *st, enum msgmap_key by, const char *location_id, const char *key,
    struct msgmap **m_r)
{
#define MSGMAP_SELECT(col) "SELECT rfc_message_id, location_id, ghl_message_id, email_message_id, " \
	"alt_id, conversation_id, contact_id, refs, reply_token FROM message_map " \
	"WHERE " col "=?1 AND location_id=?2 ORDER BY created_at DESC LIMIT 1"
	static const char *const sql_by[] = {
		[MSGMAP_BY_RFC] = MSGMAP_SELECT("rfc_message_id"),
		[MSGMAP_BY_GHL] = MSGMAP_SELECT("ghl_message_id"),
		[MSGMAP_BY_EMAIL] = MSGMAP_SELECT("email_message_id"),
		[MSGMAP_BY_ALT] = MSGMAP_SELECT("alt_id"),
		[MSGMAP_BY_TOKEN] = MSGMAP_SELECT("reply_token"),
	};
	*m_r = NULL;
	if ((unsigned)by >= sizeof(sql_by) / sizeof(sql_by[0]))
		return -1;
	return store_query_row(st, row_msgmap, m_r, sql_by[by], "ss", key, location_id);
}
