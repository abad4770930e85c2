/* store_inbound: what was received (dedupe records), where each mailbox
 * stands (IMAP marks) and what its watcher is doing. */
#ifndef MB_STORE_INBOUND_H
#define MB_STORE_INBOUND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"
#include "inbound_fsm.h"

struct msgmap;

/* IMAP checkpoints: per account (location), UIDVALIDITY and the highest
 * UID whose message is recorded. */
struct imap_checkpoint {
	uint32_t uidvalidity;
	uint32_t last_uid;         /* every UID up to it is done */
	uint32_t rescan_upto;      /* after a UIDVALIDITY change: UIDs up to it are re-read
	                            * only if recent enough for the dedupe table; 0 none */
};
int store_checkpoint_get(struct store *st, const char *account, struct imap_checkpoint *c);
int store_checkpoint_put(struct store *st, const char *account, const struct imap_checkpoint *c);

/* Inbound dedupe by (location, key = Message-ID or header hash), in the
 * states of fsm/inbound_fsm.h (failed ones keep their raw message for
 * `inbound retry`). state_r: IN_NEW when there is no record; version_r:
 * how often it was written (0 when there is none), for store_inbound_take.
 * 1 found, 0 none, -1 error. */
int store_inbound_state(struct store *st, const char *location_id, const char *key, enum inbound_state *state_r,
    int64_t *version_r);
/* The intent to post, durably, if the record is still at version (as
 * store_inbound_state read it): 1 taken, 0 another reader of the same
 * message (a second spooled copy, another instance) took it meanwhile,
 * -1 error. Two readers can never both post. */
int store_inbound_take(struct store *st, const char *location_id, const char *key, int64_t version,
    const char *summary);
int store_inbound_record(struct store *st, const char *location_id, const char *key, enum inbound_state state,
    const char *ghl_message_id, const char *error, const char *summary, const void *raw, size_t raw_len);
/* HighLevel took the message: the "posted" record, the threading record m
 * (if any) and the trace events ("reply" under the parent's id, if any;
 * "inbound" under the new one) in one durable commit; with a parent, also
 * its "replied" engagement event (store_engage.h) for replier. */
int store_inbound_posted(struct store *st, const char *location_id, const char *key, const char *ghl_message_id,
    const char *summary, const struct msgmap *m, const char *parent_ghl_id, const char *event,
    const char *replier);
struct inbound_row {
	const char *location_id, *key, *ghl_message_id, *error, *summary;
	enum inbound_state state;
	int attempts;
	int64_t created_at;
};
/* Records in state (IN_NEW: all). */
int store_inbound_list(struct store *st, enum inbound_state state, void (*fn)(const struct inbound_row *, void *),
    void *arg);
int store_inbound_raw(struct store *st, const char *location_id, const char *key, char **raw_r, size_t *len_r);

/* IMAP watcher state per location, for `mailbridge accounts`. */
int store_watcher_state(struct store *st, const char *location_id, const char *state, const char *detail);
int store_watcher_get(struct store *st, const char *location_id, char **state_r, char **detail_r, int64_t *at_r);

/* The app was uninstalled from a location (UNINSTALL webhook): its
 * watcher stops until it is installed again. */
int store_set_installed(struct store *st, const char *location_id, bool installed);
int store_is_uninstalled(struct store *st, const char *location_id);

/* The inbound spool: messages read from a mailbox, durably kept until
 * the core has handled them (posted, skipped or failed for good). */
struct spooled {
	int64_t id;
	char *location_id;
	char *raw;                 /* NUL-terminated; len bytes */
	size_t len;
	int attempts;              /* this claim included */
	int64_t received_at;
};
void store_spooled_free(struct spooled *s);
/* Durable before it returns (the mailbox's mark may then pass it). */
int store_spool_add(struct store *st, const char *location_id, const char *raw, size_t len);
/* The oldest due unclaimed message, now claimed: 1, 0 none, -1 error. */
int store_spool_claim(struct store *st, int64_t now, struct spooled **s_r);
/* Handled: gone. */
int store_spool_done(struct store *st, int64_t id);
/* Not handled yet: unclaimed, due at next_at. counted: false when it
 * was not tried (a full window), so the claim's attempt is taken back
 * and the next failure's backoff does not grow from it. */
int store_spool_later(struct store *st, int64_t id, int64_t next_at, bool counted);
/* Claims whose instance is gone are released (mine_too: ours too, at
 * start: the last run's). How many, or -1. */
int store_spool_release(struct store *st, bool mine_too);
/* Earliest next_at of an unclaimed message, or -1 when none. */
int64_t store_spool_next_due(struct store *st);
int store_spool_count(struct store *st);

#endif
