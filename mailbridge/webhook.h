/* webhook: HTTP handlers for what HighLevel POSTs to us.
 * POST /webhooks/provider (the Delivery URL): verify the signature over
 * the raw bytes, validate (payload.c), check the location, store the job
 * durably, and only then answer 200. A duplicate messageId is a 200 too. */
#ifndef MB_WEBHOOK_H
#define MB_WEBHOOK_H

#include "http.h"

void webhook_provider(void *app, const struct http_request *req, struct http_response *resp);
/* POST /webhooks/app: INSTALL / UNINSTALL, verified like the Delivery URL,
 * replay-protected by the timestamp window and webhookId dedupe. */
void webhook_app(void *app, const struct http_request *req, struct http_response *resp);
void webhook_health(void *app, const struct http_request *req, struct http_response *resp);

#endif
