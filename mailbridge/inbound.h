/* inbound: one received message of a location -> HighLevel. The same
 * path serves every intake (IMAP today): parse (mime_in), classify
 * (DSN / our own mail / auto-reply / reply), dedupe, thread (Message-ID
 * map, then the reply+<token> address), find or create the contact,
 * upload attachments, post with POST /conversations/messages/inbound,
 * and record the result before the caller may checkpoint. */
#ifndef MB_INBOUND_H
#define MB_INBOUND_H

#include <stddef.h>
#include <stdint.h>

struct app;
struct location_config;

enum inbound_result {
	INBOUND_DONE,    /* recorded: posted, skipped, DSN applied, or failed with a reason */
	INBOUND_RETRY,   /* temporary trouble (429, 5xx, network, no token): recorded as
	                  * "retry" only, so the next read processes it again */
	INBOUND_WAIT,    /* not posted, nothing recorded: the location's HighLevel window
	                  * is full (our own limiter); again once it has room, not a failure */
};

#define INBOUND_MAX_MESSAGE (50 * 1024 * 1024)
#define INBOUND_MAX_ATTACH  (25 * 1024 * 1024)

/* received_at: ms since the epoch when the message was read or received
 * (the reply-to-post latency is measured from it); 0 when unknown.
 * wait_ms_r (may be NULL): on INBOUND_WAIT, how long until the window
 * has room. */
enum inbound_result inbound_handle(struct app *app, const struct location_config *loc,
    const char *raw, size_t len, int64_t received_at, int64_t *wait_ms_r);

/* The text posted as the message: the reply (above the quoted history),
 * "(auto-reply) " first when it is one, then upload_notes (files
 * HighLevel refused; may be NULL), files too large to forward and the
 * parser's notes (forwarded messages), one bracketed line each. */
struct inbound_msg;
char *inbound_message_text(const struct inbound_msg *m, const char *upload_notes);

/* Re-processes a failed inbound message kept in the store. */
enum inbound_result inbound_retry(struct app *app, const struct location_config *loc, const char *key);

#endif
