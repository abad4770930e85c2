/* engage: see engage.h. */
#include "engage.h"

#include <string.h>

static const char *const names[ENG_KIND_N] = {
	[ENG_ACCEPTED] = "accepted",
	[ENG_DELIVERED] = "delivered",
	[ENG_REJECTED] = "rejected",
	[ENG_PERMANENT_FAIL] = "permanent_fail",
	[ENG_TEMPORARY_FAIL] = "temporary_fail",
	[ENG_FAILED] = "failed",
	[ENG_REPLIED] = "replied",
	[ENG_OPENED] = "opened",
	[ENG_CLICKED] = "clicked",
	[ENG_UNSUBSCRIBED] = "unsubscribed",
	[ENG_COMPLAINED] = "complained",
};

const char *
engage_name(enum engage_kind k)
{
	return (unsigned)k < ENG_KIND_N ? names[k] : NULL;
}

int
engage_parse(const char *name)
{
	for (int k = 0; name && k < ENG_KIND_N; k++)
		if (!strcmp(name, names[k]))
			return k;
	return -1;
}

/* A DSN's Action (RFC 3464 2.3.3) as events. */
static const struct {
	const char *action;
	enum engage_kind kind;
} dsn_events[] = {
	{ "failed", ENG_PERMANENT_FAIL },
	{ "delayed", ENG_TEMPORARY_FAIL },
	{ "delivered", ENG_DELIVERED },
	{ "relayed", ENG_DELIVERED },
	{ "expanded", ENG_DELIVERED },
};

size_t
engage_on_rcpt(int code, const char *dsn_action, bool await_dsn, enum engage_kind out[2])
{
	size_t n = 0;

	if (dsn_action) {
		for (size_t i = 0; i < sizeof(dsn_events) / sizeof(dsn_events[0]); i++)
			if (!strncmp(dsn_action, dsn_events[i].action, strlen(dsn_events[i].action))) {
				out[n++] = dsn_events[i].kind;
				return n;
			}
		return 0;
	}
	if (code >= 200 && code < 300) {
		out[n++] = ENG_ACCEPTED;
		if (!await_dsn)
			out[n++] = ENG_DELIVERED;
	} else if (code >= 500 && code < 600) {
		out[n++] = ENG_REJECTED;
	} else if (code >= 400 && code < 500) {
		out[n++] = ENG_TEMPORARY_FAIL;
	}
	return n;
}

const char *
engage_status(const char *job_status, const bool has[ENG_KIND_N])
{
	if (job_status && !strcmp(job_status, "failed"))
		return "failed";
	if (has[ENG_CLICKED])
		return "clicked";
	if (has[ENG_OPENED])
		return "opened";
	if (has[ENG_REPLIED] || has[ENG_UNSUBSCRIBED] || has[ENG_COMPLAINED] || has[ENG_DELIVERED])
		return "delivered";
	if (has[ENG_PERMANENT_FAIL] || has[ENG_REJECTED] || has[ENG_FAILED])
		return job_status ? job_status : "failed";
	return job_status ? job_status : "sent";
}
