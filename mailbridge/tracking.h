/* tracking: open and click tracking for a location's email (off by
 * default: track_opens, track_clicks).
 *
 * Opens: a 1x1 image at <public_url>/o/<token>.gif at the end of the HTML
 * part. Clicks: each http(s) link of the HTML part (<a href>) goes through
 * <public_url>/c/<token>, which answers 302 to the original URL. The text
 * part keeps its links.
 *
 * A token carries what it names (location, messageId, the send time, and
 * for a click the link's index and its URL; never an address: a URL is
 * seen by proxies and by whoever a message is forwarded to) and an HMAC
 * over all of it under the store's key: a
 * redirect goes only to the URL that was signed, and nothing is looked up
 * to answer. A hit is then queued in memory and written to the store's
 * engagement outbox in batches (the "opened" / "clicked" event, each once
 * per message) off the request's path; the report names the recipient
 * when the message had only one.
 *
 * Not counted (a machine, not a reader): HEAD requests; hits within
 * track_min_delay seconds of the send (security gateways fetch at once);
 * user agents of known scanners, link checkers and HTTP libraries, or
 * none. Image proxies that fetch when the reader opens (Gmail's, Yahoo's)
 * are counted. */
#ifndef MB_TRACKING_H
#define MB_TRACKING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http.h"

struct app;
struct location_config;
struct tracker;

/* The HTML with tracking added as the location asks (malloc'd), or NULL
 * when nothing changes. */
char *tracking_html(const struct app *app, const struct location_config *loc, const char *html,
    const char *message_id, int64_t sent_ms);

/* GET|HEAD /o/<token>.gif and /c/<token> (app is struct app *). */
void tracking_http(void *app, const struct http_request *req, struct http_response *resp);

/* The queue's writer; NULL app->tracker drops hits (CLI). */
struct tracker *tracking_start(struct app *app);
void tracking_stop(struct tracker *t);

/* Exposed for tests: is this user agent a machine's? */
bool tracking_is_machine(const char *user_agent);

#endif
