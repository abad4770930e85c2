/* store_threads: the Message-ID map that threads replies to what we sent. */
#ifndef MB_STORE_THREADS_H
#define MB_STORE_THREADS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Message map: our RFC 5322 Message-ID <-> HighLevel ids. */
struct msgmap {
	char *rfc_message_id;
	char *location_id;
	char *ghl_message_id;
	char *email_message_id;
	char *alt_id;
	char *conversation_id;
	char *contact_id;
	char *references;          /* the chain this message continues, "<a> <b>" */
	char *reply_token;
};
void store_msgmap_free(struct msgmap *m);
int store_msgmap_put(struct store *st, const struct msgmap *m);
/* What a map entry is looked up by. */
enum msgmap_key {
	MSGMAP_BY_RFC,             /* our or the sender's Message-ID */
	MSGMAP_BY_GHL,             /* HighLevel's messageId */
	MSGMAP_BY_EMAIL,           /* HighLevel's emailMessageId (the thread) */
	MSGMAP_BY_ALT,             /* the altId we posted (custom mode) */
	MSGMAP_BY_TOKEN,           /* the reply/bounce token */
};
/* The newest entry of location_id with that key: 1, 0 none, -1 error. */
int store_msgmap_get(struct store *st, enum msgmap_key by, const char *location_id,
    const char *key, struct msgmap **m_r);

#endif
