/* store_engage: the engagement outbox. Each (message, event, who) is kept
 * once (a second add is ignored) until HighLevel has taken it, so a
 * merged counter is never raised twice by us (fsm/engage.h names the
 * events). Rows are added in the commit of what caused them (a send's
 * end, a DSN, a posted reply) or alone (a tracking hit, an unsubscribe). */
#ifndef MB_STORE_ENGAGE_H
#define MB_STORE_ENGAGE_H

#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* One event to add: who is the recipient it concerns ("" or NULL: the
 * message as a whole). */
struct engage_add {
	const char *event;         /* engage_name() */
	const char *who;
};

/* Adds n events of a message. durable: on disk before it returns.
 * Returns how many were new (0: all known already), or -1. */
int store_engage_add(struct store *st, const char *location_id, const char *message_id,
    const struct engage_add *ev, size_t n, int durable);

/* A claimed batch: every due event of one message, leased. */
struct engage_row {
	char *event, *who;
	int attempts;              /* this claim included */
};
struct engage_batch {
	char *message_id, *location_id;
	struct engage_row *rows;
	size_t n;
	int attempts;              /* the most among the rows */
};
void store_engage_batch_free(struct engage_batch *b);

/* The due events of one message whose status report is not pending (that
 * report carries them itself), leased for lease_ms: 1, 0 none, -1 error. */
int store_engage_claim(struct store *st, int64_t now, int64_t lease_ms, struct engage_batch **b_r);
/* The due events of this message, leased, for its status report: 1, 0
 * none, -1 error. */
int store_engage_claim_message(struct store *st, const char *message_id, int64_t now, int64_t lease_ms,
    struct engage_batch **b_r);
/* The batch was taken (error NULL) or given up (error says why). */
int store_engage_done(struct store *st, const struct engage_batch *b, const char *error);
/* Not yet: due again at next_at (0: now). */
int store_engage_later(struct store *st, const struct engage_batch *b, int64_t next_at, const char *error);
/* Earliest next_at of an event store_engage_claim could take (its
 * message's report not pending), or -1 when none. */
int64_t store_engage_next_due(struct store *st);
/* How many of a message's events are reported (for tests and trace):
 * fn per row. Returns the rows, or -1. */
int store_engage_each(struct store *st, const char *message_id, void (*fn)(const char *event, const char *who,
    int64_t done_at, const char *error, void *arg), void *arg);

#endif
