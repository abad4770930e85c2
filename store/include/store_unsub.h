/* store_unsub: unsubscribe requests (RFC 8058 one-click, the page's
 * button, or a mail to the mailto address), kept durably until HighLevel
 * has the contact's Email DND set. One row per location and contact: a
 * new request for a contact resets it to pending. */
#ifndef MB_STORE_UNSUB_H
#define MB_STORE_UNSUB_H

#include <stdbool.h>
#include <stdint.h>

#include "store.h"

struct unsub {
	int64_t id;
	char *location_id, *contact_id, *message_id;
	char *if_email;            /* set only if this is still the contact's email; NULL: always */
	int attempts;              /* this claim included */
};
void store_unsub_free(struct unsub *u);

/* Durable before it returns (the 200 is sent after). via: "one-click",
 * "page", "mailto", "complaint", "hard-bounce". event (or NULL): the
 * engagement event it reports on message_id (store_engage.h), in the same
 * commit. if_email: only if that is still the contact's email (a request
 * already there for the contact is left as it is). 1, or -1. */
int store_unsub_add(struct store *st, const char *location_id, const char *contact_id, const char *message_id,
    const char *via, const char *event, const char *if_email);
/* The oldest due pending request, leased for lease_ms (a crash releases
 * it when the lease ends): 1, 0 none, -1 error. */
int store_unsub_claim(struct store *st, int64_t now, int64_t lease_ms, struct unsub **u_r);
/* Done (DND set), or given up with why: no longer pending. */
int store_unsub_done(struct store *st, int64_t id, const char *error);
/* Not yet: due again at next_at. counted false: this claim's attempt is
 * given back (nothing was sent: our own rate limiter said wait), so waits
 * for the window neither lengthen the backoff nor bring the give-up. */
int store_unsub_later(struct store *st, int64_t id, int64_t next_at, const char *error, bool counted);
/* Earliest next_at of a pending request, or -1 when none. */
int64_t store_unsub_next_due(struct store *st);
/* 1 when the contact's request is done, 0 pending or none, -1 error. */
int store_unsub_is_done(struct store *st, const char *location_id, const char *contact_id);

#endif
