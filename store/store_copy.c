/* store_copy: rows from one store into another (store_copy.h). */
#include "store_private.h"
#include "store_copy.h"
#include "store_instances.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* The tables at schema 14 and their columns, with how each is read and
 * bound ('i' integer, 's' text, 'b' bytes). A migration that adds a table
 * or a column adds it here: tests/test_ha.py compares every table's rows
 * after a copy. Identity columns named rowid are left to the target. */
static const struct copy_table {
	const char *name;
	const char *cols;
	const char *types;
	const char *id;            /* an id the target numbers after the copy, or NULL */
	const char *read;          /* how cols are read, when not as they are */
} copy_tables[] = {
	{ "jobs", "id, message_id, location_id, type, state, attempts, next_at, created_at, updated_at, last_code, "
	  "last_error, rfc_message_id, report_status, report_state, report_attempts, report_next_at, report_error, "
	  "rcpt_state, email_message_id, uncertain, owner", "issssiiiiissssiisssis", "id", NULL },
	/* unpacked (store_pack.c): the target packs, or not, as it does */
	{ "job_payload", "job_id, payload", "is", NULL, "job_id, mb_payload(payload)" },
	{ "message_map", "rfc_message_id, location_id, ghl_message_id, email_message_id, alt_id, conversation_id, "
	  "contact_id, refs, reply_token, created_at", "sssssssssi", NULL, NULL },
	{ "imap_checkpoints", "account, uidvalidity, last_uid, updated_at, rescan_upto", "siiii", NULL, NULL },
	{ "inbound_seen", "location_id, dedupe_key, state, ghl_message_id, error, created_at, raw, summary, attempts",
	  "sssssibsi", NULL, NULL },
	{ "tokens", "location_id, user_type, company_id, access_token, refresh_token, expires_at, scope, "
	  "needs_reinstall, updated_at", "sssssisii", NULL, NULL },
	{ "webhook_seen", "webhook_id, received_at", "si", NULL, NULL },
	{ "events", "id, at, message_id, kind, detail, location_id", "iissss", "id", NULL },
	{ "watchers", "location_id, state, detail, updated_at", "sssi", NULL, NULL },
	{ "uninstalled", "location_id, at", "si", NULL, NULL },
	{ "plugin_kv", "plugin, key, value, updated_at", "sssi", NULL, NULL },
	{ "replay_guard", "fp, at", "bi", NULL, NULL },
	{ "secrets", "name, value, created_at", "ssi", NULL, NULL },
	{ "inbound_spool", "id, location_id, raw, received_at, next_at, attempts, claimed, owner", "isbiiiis", "id", NULL },
	{ "unsubscribes", "id, location_id, contact_id, message_id, via, created_at, next_at, attempts, done_at, "
	  "error, if_email", "issssiiiiss", "id", NULL },
	{ "engagement", "message_id, event, who, location_id, created_at, next_at, attempts, done_at, error",
	  "ssssiiiis", NULL, NULL },
};

struct copy_ctx {
	struct store *to;
	const struct copy_table *t;
	const char *insert;        /* one SQL text for every row: prepared once */
	int64_t rows;
	bool failed;
};

static void
copy_row(const struct store_row *r, void *arg)
{
	struct copy_ctx *c = arg;
	struct store_val vals[32];
	size_t n = strlen(c->t->types);
	char fmt[40];

	if (c->failed)
		return;
	fmt[0] = '*';
	memcpy(fmt + 1, c->t->types, n + 1);
	for (size_t k = 0; k < n; k++) {
		int i = (int)k;
		memset(&vals[k], 0, sizeof(vals[k]));
		vals[k].null = store_col_null(r, i);
		if (vals[k].null)
			continue;
		if (c->t->types[k] == 'i')
			vals[k].i = store_col_int(r, i);
		else if (c->t->types[k] == 'b')
			vals[k].p = store_col_blob(r, i, &vals[k].len);
		else
			vals[k].p = store_col_str(r, i);
	}
	if (store_tx_step(c->to, c->insert, fmt, vals) != 1)
		c->failed = true;
	else
		c->rows++;
}

/* "?1, ?2, ... ?n" */
static char *
placeholders(size_t n)
{
	char *out = xstrdup("");
	for (size_t k = 1; k <= n; k++) {
		char *next = xasprintf("%s%s?%zu", out, k > 1 ? ", " : "", k);
		free(out);
		out = next;
	}
	return out;
}

int
store_copy(struct store *from, struct store *to, void (*fn)(const char *table, int64_t rows, void *arg), void *arg,
    char **error_r)
{
	enum { N_TABLES = sizeof(copy_tables) / sizeof(copy_tables[0]) };
	/* the SQL texts live until the end: both stores key their prepared
	 * statements by the text's address (store_private.h), and a freed
	 * text's address may come back for the next table */
	char *texts[N_TABLES * 3] = { NULL };
	int64_t jobs = -1;
	int ret = 1;

	*error_r = NULL;
	if (store_query_row(to, store_row_int64, &jobs, "SELECT count(*) FROM jobs", "") != 1 || jobs != 0) {
		*error_r = xstrdup(jobs > 0 ? "the target already holds jobs: copy into a new, empty database" :
		    "cannot read the target");
		return -1;
	}
	for (size_t t = 0; t < N_TABLES && ret == 1; t++) {
		const struct copy_table *ct = &copy_tables[t];
		char *ph = placeholders(strlen(ct->types));
		char *select = texts[3 * t] = xasprintf("SELECT %s FROM %s", ct->read ? ct->read : ct->cols, ct->name);
		/* the target made its own secrets when it was opened: the copy's win */
		char *insert = texts[3 * t + 1] = xasprintf("INSERT INTO %s (%s) VALUES (%s)%s", ct->name, ct->cols, ph,
		    strcmp(ct->name, "secrets") == 0 ? " ON CONFLICT(name) DO UPDATE SET value=excluded.value, "
		    "created_at=excluded.created_at" : "");
		struct copy_ctx c = { to, ct, insert, 0, false };
		bool began = store_tx_begin(to, "copy") == 0;
		int r = began ? 0 : -1;

		free(ph);
		if (began && ((r = store_query_rows(from, copy_row, &c, select, "")) < 0 || c.failed)) {
			r = -1;
			store_tx_fail(to);
		}
		if (r >= 0 && ct->id && store_is_shared(to)) {
			/* PostgreSQL's identity: new rows numbered after the copied ones */
			char *seq = texts[3 * t + 2] = xasprintf("SELECT setval(pg_get_serial_sequence('%s', '%s'), "
			    "COALESCE((SELECT max(%s) FROM %s), 0) + 1, false)", ct->name, ct->id, ct->id, ct->name);
			if (store_tx_row(to, store_row_none, NULL, seq, "") != 1) {
				r = -1;
				store_tx_fail(to);
			}
		}
		if ((began && store_tx_end(to, "copy", true) < 0) || r < 0) {
			*error_r = xasprintf("copying %s failed (see the log above); nothing of it was kept", ct->name);
			ret = -1;
		} else if (fn) {
			fn(ct->name, c.rows, arg);
		}
	}
	for (size_t k = 0; k < N_TABLES * 3; k++)
		free(texts[k]);
	return ret;
}
