/* engage: the engagement events of an email (HighLevel v3's "events"
 * counters: conversations-v3.json, EmailEventsDto), and which of them an
 * outcome means. Pure C: no store, no I/O.
 *
 * HighLevel merges counters, so each event is reported once: the store
 * keeps an outbox row per (message, event, who), where who is the
 * recipient it concerns ("" for the message). */
#ifndef MB_ENGAGE_H
#define MB_ENGAGE_H

#include <stdbool.h>
#include <stddef.h>

enum engage_kind {
	ENG_ACCEPTED,              /* the relay took it for this recipient */
	ENG_DELIVERED,             /* delivered: the relay (delivered_on = relay) or a DSN said so */
	ENG_REJECTED,              /* the relay refused the recipient (5xx) */
	ENG_PERMANENT_FAIL,        /* a DSN: failed */
	ENG_TEMPORARY_FAIL,        /* a 4xx from the relay, or a DSN: delayed */
	ENG_FAILED,                /* the message failed with no recipient's outcome known */
	ENG_REPLIED,
	ENG_OPENED,
	ENG_CLICKED,
	ENG_UNSUBSCRIBED,
	ENG_COMPLAINED,
	ENG_KIND_N
};

/* HighLevel's counter key ("permanent_fail" ...); parse: -1 unknown. */
const char *engage_name(enum engage_kind k);
int engage_parse(const char *name);

/* A recipient's outcome: the relay's reply code to it (0 none) and the
 * DSN's Action (NULL none: "failed", "delayed", "delivered", "relayed",
 * "expanded"). await_dsn: the location counts delivery from DSNs only.
 * Writes at most 2 events to out; returns how many. */
size_t engage_on_rcpt(int code, const char *dsn_action, bool await_dsn, enum engage_kind out[2]);

/* The message status to send with events that go without a status of
 * their own (v3 wants one on every call): job_status is the job's status
 * name as reported ("delivered", "failed", ...) or NULL when the job is
 * gone or has none; has[k] says which events go. A failed message stays
 * failed; a click or an open shows as such; a reply, unsubscribe or
 * complaint proves delivery. */
const char *engage_status(const char *job_status, const bool has[ENG_KIND_N]);

#endif
