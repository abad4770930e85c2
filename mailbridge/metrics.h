/* metrics: process-wide counters (lock-free) and the Prometheus text
 * rendering of GET /metrics, with gauges read from the store and from
 * whatever registered a gauge writer (HighLevel's budget, the IMAP
 * watcher): metrics includes none of the modules it reports on. */
#ifndef MB_METRICS_H
#define MB_METRICS_H

#include <stdio.h>

#include "http.h"

/* Writes gauges (with their HELP and TYPE lines) at each scrape. */
typedef void (*metrics_gauge_fn)(void *arg, FILE *out);
#define METRICS_MAX_GAUGES 8
/* Registered at start-up, before the HTTP server starts; cleared after it
 * stops (metrics_gauges_clear). Beyond METRICS_MAX_GAUGES: -1. */
int metrics_gauge_add(metrics_gauge_fn fn, void *arg);
void metrics_gauges_clear(void);

enum metric {
	M_WEBHOOK_ACCEPTED, M_WEBHOOK_DUPLICATE, M_WEBHOOK_BAD_SIGNATURE, M_WEBHOOK_INVALID,
	M_WEBHOOK_UNKNOWN_LOCATION, M_WEBHOOK_UNSUPPORTED_TYPE, M_WEBHOOK_STORE_ERROR,
	M_SMTP_2XX, M_SMTP_4XX, M_SMTP_5XX, M_SMTP_NO_REPLY,
	M_JOB_RETRIES, M_JOB_SENT, M_JOB_FAILED,
	M_PAYLOAD_FROM_WEBHOOK, M_PAYLOAD_FROM_STORE,
	M_REPORT_POSTED, M_REPORT_RETRY, M_REPORT_GAVE_UP,
	M_DSN_APPLIED,
	M_INBOUND_POSTED, M_INBOUND_SKIPPED, M_INBOUND_FAILED, M_INBOUND_RETRY,
	M_GHL_2XX, M_GHL_4XX, M_GHL_429, M_GHL_5XX, M_GHL_NETWORK, M_GHL_THROTTLED, M_GHL_SHARE_ASK,
	M_TOKEN_REFRESH_OK, M_TOKEN_REFRESH_FAILED,
	M_ENGAGE_POSTED, M_ENGAGE_RETRY, M_ENGAGE_GAVE_UP, M_ENGAGE_V2,
	M_TRACK_COUNTED, M_TRACK_NOT_COUNTED, M_TRACK_BAD_TOKEN,
	M__COUNT
};

void metrics_inc(enum metric m);
unsigned long metrics_get(enum metric m);

/* Latency histograms (Prometheus, seconds; fixed buckets from 1 ms to
 * 60 s), lock-free. */
enum histogram {
	H_WEBHOOK_ACK,             /* a Delivery-URL request: first byte to the durable answer */
	H_SMTP_TRANSACTION,        /* one message's SMTP session or reuse, connect to last reply */
	H_HIGHLEVEL_CALL,          /* one HighLevel API request */
	H_REPLY_TO_POST,           /* a reply read (IMAP) or received (LMTP) to posted in HighLevel */
	H__COUNT
};
void metrics_observe(enum histogram h, int64_t usec);

/* Failures per location, by kind ("send": a job failed for good,
 * "report": a status HighLevel never took, "inbound": a received
 * message that could not be posted). At most METRICS_MAX_LOCATIONS
 * locations get their own series; the rest count under location="_other". */
#define METRICS_MAX_LOCATIONS 256
enum location_failure { LF_SEND, LF_REPORT, LF_INBOUND, LF__COUNT };
void metrics_location_failure(const char *location_id, enum location_failure kind);

/* GET /metrics (app is struct app *). Requires "Authorization: Bearer
 * <metrics_token>" when [server] metrics_token is set. */
void metrics_http(void *app, const struct http_request *req, struct http_response *resp);

#endif
