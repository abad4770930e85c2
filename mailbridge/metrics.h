/* metrics: process-wide counters (lock-free) and the Prometheus text
 * rendering of GET /metrics, with gauges read from the store and the
 * IMAP watcher at scrape time. */
#ifndef MB_METRICS_H
#define MB_METRICS_H

#include "http.h"

enum metric {
	M_WEBHOOK_ACCEPTED, M_WEBHOOK_DUPLICATE, M_WEBHOOK_BAD_SIGNATURE, M_WEBHOOK_INVALID,
	M_WEBHOOK_UNKNOWN_LOCATION, M_WEBHOOK_UNSUPPORTED_TYPE, M_WEBHOOK_STORE_ERROR,
	M_SMTP_2XX, M_SMTP_4XX, M_SMTP_5XX, M_SMTP_NO_REPLY,
	M_JOB_RETRIES, M_JOB_SENT, M_JOB_FAILED,
	M_REPORT_POSTED, M_REPORT_RETRY, M_REPORT_GAVE_UP,
	M_DSN_APPLIED,
	M_INBOUND_POSTED, M_INBOUND_SKIPPED, M_INBOUND_FAILED, M_INBOUND_RETRY,
	M_GHL_2XX, M_GHL_4XX, M_GHL_429, M_GHL_5XX, M_GHL_NETWORK, M_GHL_THROTTLED,
	M_TOKEN_REFRESH_OK, M_TOKEN_REFRESH_FAILED,
	M__COUNT
};

void metrics_inc(enum metric m);
unsigned long metrics_get(enum metric m);

/* GET /metrics (app is struct app *). Requires "Authorization: Bearer
 * <metrics_token>" when [server] metrics_token is set. */
void metrics_http(void *app, const struct http_request *req, struct http_response *resp);

#endif
