/* unsubscribe: one-click unsubscribe (RFC 8058, RFC 2369) for the email a
 * location sends.
 *
 * Every message gets List-Unsubscribe with an https link and a mailto
 * address, and List-Unsubscribe-Post: List-Unsubscribe=One-Click (per
 * location: unsubscribe = yes|no). The token is the message's reply token
 * (thread.h) and an HMAC under the store's key binding the location, the
 * contact and the messageId: it cannot be guessed, and a changed one is
 * refused.
 *
 * GET /u/<locationId>/<token> shows a page with a button and changes
 * nothing (link scanners prefetch); POST (List-Unsubscribe=One-Click, or
 * the button) or a mail to the mailto address records the request durably
 * and answers at once; a worker then sets the contact's Email DND in
 * HighLevel, retried like a status. */
#ifndef MB_UNSUBSCRIBE_H
#define MB_UNSUBSCRIBE_H

#include <stddef.h>

#include "http.h"

struct app;
struct location_config;
struct unsubscriber;

/* The List-Unsubscribe value of a message (malloc'd), or NULL when the
 * location has it off or the message names no contact. */
char *unsubscribe_header(const struct app *app, const struct location_config *loc, const char *reply_token,
    const char *contact_id, const char *message_id);

/* GET and POST /u/<locationId>/<token> (app is struct app *). */
void unsubscribe_http(void *app, const struct http_request *req, struct http_response *resp);

/* A received message sent to a location's unsubscribe mailto address:
 * 1 recorded (the message is not to be posted), 0 not one, -1 store error. */
int unsubscribe_by_mail(struct app *app, const struct location_config *loc, char *const *rcpts, size_t n_rcpts);

/* The worker that sets the DND; wake it after a request. */
struct unsubscriber *unsubscribe_start(struct app *app);
void unsubscribe_wake(struct unsubscriber *u);
void unsubscribe_stop(struct unsubscriber *u);

#endif
