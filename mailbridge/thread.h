/* thread: how a message finds its conversation, in one place.
 *
 * Outbound, a message answers an earlier one (HighLevel's
 * emailMessageId, or replyToAltId in custom mode) and gets In-Reply-To and
 * References from the Message-ID map. Its reply and bounce addresses carry
 * a token, an HMAC under the store's key of location/messageId, lower case
 * (mail systems may fold a local part's case), plus-addressed to the
 * location's mailboxes (config.h reply_box, return_box):
 * <local>+<token>@<domain> for replies, <local>+b<token>@<domain> for DSNs;
 * or reply+<token>@ and bounce+<token>@ the reply domain (the older form,
 * still recognised). Inbound, a reply finds its parent by In-Reply-To,
 * then References, then the token it was sent to; a DSN finds its message
 * by the bounce token only. Tokens are looked up in the map, never
 * recomputed, so tokens of mail sent before keep working. */
#ifndef MB_THREAD_H
#define MB_THREAD_H

#include <stdbool.h>
#include <stddef.h>

struct store;
struct msgmap;

struct location_config;

/* The older form's local parts, at the location's reply domain */
#define THREAD_REPLY  "reply"
#define THREAD_BOUNCE "bounce"

/* One address form tokens come in: <local>+<tag><token>@<domain>. */
struct thread_form {
	const char *local, *tag, *domain;
};

/* The reply and return addresses of a message with this token (malloc'd). */
char *thread_reply_address(const struct location_config *loc, const char *token);
char *thread_return_address(const struct location_config *loc, const char *token);

/* The token for a message: 16 lower-case hex digits. malloc'd. */
char *thread_token_make(const unsigned char key[32], const char *location_id, const char *message_id);

/* The token of "<local>+<tag><token>@<domain>" (compared without case),
 * lower-cased; NULL for any other address. malloc'd. */
char *thread_token_parse(const char *addr, const struct thread_form *form);

/* The token of addr when it is in one of the location's forms (replies,
 * or DSNs), each form's tag replaced by tag when tag is not NULL (the
 * unsubscribe address: "u"); NULL otherwise. malloc'd. */
char *thread_token_of(const struct location_config *loc, bool bounce, const char *tag, const char *addr);

/* The map entry of the first address among addrs that is in one of the
 * location's forms (replies, or DSNs) with a token it issued; NULL. */
struct msgmap *thread_by_token(struct store *st, const struct location_config *loc, bool bounce,
    char *const *addrs, size_t n_addrs);

/* What an outbound message answers: the map entry of the earlier message
 * (or NULL), and *parent_id_r (malloc'd) the Message-ID to answer even
 * when it is not in the map (an altId we never saw). */
struct msgmap *thread_parent_for_outbound(struct store *st, const char *location_id, const char *reply_to_alt_id,
    const char *email_message_id, const char *message_id, char **parent_id_r);

/* What an inbound message answers, or NULL for a new thread. */
struct msgmap *thread_parent_for_inbound(struct store *st, const struct location_config *loc,
    const char *in_reply_to, char *const *references, size_t n_references, char *const *rcpts, size_t n_rcpts);

/* In-Reply-To and References (malloc'd, or NULL) answering parent_id,
 * continuing the parent's chain when it is known. */
void thread_headers(const struct msgmap *parent, const char *parent_id, char **in_reply_to_r, char **references_r);

#endif
