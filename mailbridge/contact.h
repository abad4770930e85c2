/* contact: the HighLevel contact and conversation a message belongs to.
 * Contacts are found by email or phone (GET /contacts/search/duplicate)
 * and created when asked (POST /contacts/upsert), cached per location;
 * conversations are searched, then created. Shared by inbound mail and
 * call logs. */
#ifndef MB_CONTACT_H
#define MB_CONTACT_H

#include <stdbool.h>

#include "ghl.h"

struct app;
struct location_config;

/* Contact id (malloc'd) by email, else phone; NULL with s filled. When
 * !create an unknown contact is a permanent failure. */
char *contact_find(struct app *app, const struct location_config *loc, const char *email, const char *phone,
    const char *name, bool create, struct ghl_step *s);
/* Conversation id (malloc'd) of the contact, created when there is none. */
char *contact_conversation_find(struct app *app, const struct location_config *loc, const char *contact_id,
    struct ghl_step *s);

/* Both at once, for a message from or to email / phone: 1 with both ids
 * (malloc'd; the caller frees both, also on 0), 0 with s filled. */
int contact_conversation(struct app *app, const struct location_config *loc, const char *email, const char *phone,
    const char *name, bool create, char **contact_r, char **conversation_r, struct ghl_step *s);

#endif
