/* status: GET /status, a small read-only HTML page for the operator: per
 * location the token, the IMAP watcher, the queue (unfinished jobs and the
 * oldest), the last error and the last 20 events. Rendered here, with no
 * script at all; it refreshes itself every 30 s. Behind [server]
 * metrics_token (as a Bearer token, or the password of HTTP Basic, which a
 * browser asks for), or from loopback only when no token is set. Every
 * string that came from outside (relay replies, addresses, subjects) is
 * escaped. */
#ifndef MB_STATUS_H
#define MB_STATUS_H

#include "http.h"

/* app is struct app * */
void status_http(void *app, const struct http_request *req, struct http_response *resp);

#endif
