/* inbound_fsm: the state of one received message, by (location, dedupe
 * key), and what a (re-)read of it is to do. Pure C, like job.h: the
 * store persists the states by name; inbound.c acts on the decisions.
 *
 *   (none) -> posting -> posted
 *                     -> retry   (HighLevel or the network said later)
 *                     -> failed  (refused for good: the raw message is kept)
 *   (none) -> skipped | dsn | failed (recorded without a post)
 *   retry  -> posting ...;   failed -> posting ... on an operator's retry */
#ifndef MB_INBOUND_FSM_H
#define MB_INBOUND_FSM_H

#include <stdbool.h>

enum inbound_state {
	IN_NEW,               /* no record: never seen */
	IN_POSTING,           /* the intent, on disk before the post */
	IN_POSTED,
	IN_SKIPPED,           /* not posted on purpose (why is kept) */
	IN_DSN,               /* a delivery report, applied to its job */
	IN_FAILED,            /* refused for good; `inbound retry` may try again */
	IN_RETRY,       /* temporary trouble: the next read tries again */
	IN_STATE_N
};

/* Names as stored and shown; IN_NEW has none (NULL). parse: -1 for
 * an unknown name, IN_NEW for NULL. */
const char *inbound_state_name(enum inbound_state s);
int inbound_state_parse(const char *name);

enum inbound_action {
	IN_ACT_NONE,          /* already ended: nothing to do (a re-read) */
	IN_ACT_HANDLE,        /* handle it: post, skip, or apply the DSN */
	IN_ACT_HANDLE_AGAIN,  /* a post was under way when we stopped: HighLevel
	                            * may have it; posting again may show it twice */
};
/* What a read of a message in state s does; operator: `inbound retry`,
 * which takes failed messages too. */
enum inbound_action inbound_on_read(enum inbound_state s, bool operator);

/* True for the states that end a message (the IMAP mark may pass it). */
bool inbound_is_final(enum inbound_state s);

#endif
