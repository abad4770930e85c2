/* calllog: a phone call as a HighLevel conversation entry. Inbound calls
 * go to POST /conversations/messages/inbound (type Call, the caller's
 * contact created when unknown); outbound calls to POST
 * /conversations/messages/outbound, which HighLevel only accepts for an
 * existing contact. A recording URL becomes an attachment. */
#ifndef MB_CALLLOG_H
#define MB_CALLLOG_H

#include <stdbool.h>
#include <stdint.h>

struct app;
struct location_config;

struct call_record {
	bool inbound;
	const char *from, *to;     /* E.164 */
	const char *status;        /* HighLevel's call status enum */
	const char *recording_url; /* or NULL */
	int64_t date_ms;           /* 0 = now */
};

/* 1 logged (*message_id_r malloc'd), 0 refused (*error_r: bad record or
 * HighLevel said no), -1 temporary (*error_r). */
int calllog_post(struct app *app, const struct location_config *loc, const struct call_record *c,
    char **message_id_r, char **error_r);

/* True when s is one of HighLevel's call statuses. */
bool calllog_status_ok(const char *s);

#endif
