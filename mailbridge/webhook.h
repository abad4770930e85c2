/* webhook: HTTP handlers for what HighLevel POSTs to us.
 * POST /webhooks/provider (the Delivery URL): verify the signature over
 * the raw bytes, validate (payload.c), check the location, store the job
 * durably, and only then answer 200. A duplicate messageId is a 200 too. */
#ifndef MB_WEBHOOK_H
#define MB_WEBHOOK_H

#include "http.h"

#include <stdint.h>

/* With [highlevel] delivery_token set, the Delivery URL must carry it:
 * /webhooks/provider/<token> or ?token=<token> (401 otherwise). */
void webhook_provider(void *app, const struct http_request *req, struct http_response *resp);
/* On the headers alone, before the body is read: the delivery token and
 * the presence of a signature header (when one is required). */
bool webhook_provider_precheck(void *app, const struct http_request *req, struct http_response *resp);
bool webhook_app_precheck(void *app, const struct http_request *req, struct http_response *resp);
/* POST /webhooks/app: INSTALL / UNINSTALL. Always signed (whatever
 * require_signature says), appId must be [highlevel] app_id, timestamp
 * (when present) within 5 minutes, each event acted on once (webhookId,
 * else the body's hash, kept replay_days). */
void webhook_app(void *app, const struct http_request *req, struct http_response *resp);
/* An ISO 8601 time with its offset ("...Z", "+02:00", "-0130") in ms
 * since the epoch; -1 when it is anything else. */
int64_t webhook_parse_timestamp(const char *s);
void webhook_health(void *app, const struct http_request *req, struct http_response *resp);

#endif
