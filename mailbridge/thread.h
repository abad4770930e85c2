/* thread: how a message finds its conversation, in one place.
 *
 * Outbound, a message answers an earlier one (HighLevel's
 * emailMessageId, or replyToAltId in custom mode) and gets In-Reply-To and
 * References from the Message-ID map. Its reply and bounce addresses carry
 * a token, reply+<token>@ and bounce+<token>@ the location's reply domain:
 * an HMAC under the store's key of location/messageId, lower case (mail
 * systems may fold a local part's case). Inbound, a reply finds its parent
 * by In-Reply-To, then References, then the reply+ token it was sent to; a
 * DSN finds its message by the bounce+ token only. Tokens are looked up in
 * the map, never recomputed, so tokens of mail sent before keep working. */
#ifndef MB_THREAD_H
#define MB_THREAD_H

#include <stddef.h>

struct store;
struct msgmap;

#define THREAD_REPLY  "reply"
#define THREAD_BOUNCE "bounce"

/* The token for a message: 16 lower-case hex digits. malloc'd. */
char *thread_token_make(const unsigned char key[32], const char *location_id, const char *message_id);

/* The token of "<local>+<token>@<domain>" (local and domain compared
 * without case), lower-cased; NULL for any other address. malloc'd. */
char *thread_token_parse(const char *addr, const char *local, const char *domain);

/* The map entry of the first address among addrs that is
 * "<local>+<token>@<domain>" with a token this location issued; NULL. */
struct msgmap *thread_by_token(struct store *st, const char *location_id, const char *domain, const char *local,
    char *const *addrs, size_t n_addrs);

/* What an outbound message answers: the map entry of the earlier message
 * (or NULL), and *parent_id_r (malloc'd) the Message-ID to answer even
 * when it is not in the map (an altId we never saw). */
struct msgmap *thread_parent_for_outbound(struct store *st, const char *location_id, const char *reply_to_alt_id,
    const char *email_message_id, const char *message_id, char **parent_id_r);

/* What an inbound message answers, or NULL for a new thread. */
struct msgmap *thread_parent_for_inbound(struct store *st, const char *location_id, const char *reply_domain,
    const char *in_reply_to, char *const *references, size_t n_references, char *const *rcpts, size_t n_rcpts);

/* In-Reply-To and References (malloc'd, or NULL) answering parent_id,
 * continuing the parent's chain when it is known. */
void thread_headers(const struct msgmap *parent, const char *parent_id, char **in_reply_to_r, char **references_r);

#endif
