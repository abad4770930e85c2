/* mime_in: parse a received message (GMime) into an inbound record:
 * addresses, subject, date, threading ids, the text (decoded to UTF-8
 * from whatever charset it declares, with fallbacks), the HTML, the new
 * reply text above the quoted history, attachments, and the signals that
 * it is not a person's reply (DSN, auto-reply). Bounded: total decoded
 * attachment bytes are capped. */
#ifndef MB_MIME_IN_H
#define MB_MIME_IN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mime_out.h"

#define MIME_IN_MAX_REFS 50
#define MIME_IN_MAX_PARTS 1000       /* MIME parts in one message */
#define MIME_IN_MAX_MULTIPARTS 100   /* multipart containers: bounds nesting too */
#define MIME_IN_MAX_DSN_RCPTS 1000   /* recipient blocks in one DSN */

struct dsn_rcpt {
	char *recipient;           /* Final-Recipient address */
	char *action;              /* failed | delayed | delivered | relayed | expanded */
	char *status;              /* e.g. 5.1.1 */
	char *diagnostic;          /* Diagnostic-Code text */
};

struct inbound_msg {
	char *message_id;          /* without <>; NULL when absent */
	char *in_reply_to;
	char **references;         /* without <>, oldest first */
	size_t n_references;
	char *from_name, *from_addr;
	char *to;                  /* "a@b, c@d" as written (decoded) */
	char **to_addrs, **cc_addrs;
	size_t n_to, n_cc;
	char **all_rcpt_addrs;     /* To, Cc, Delivered-To, X-Original-To: for plus-tokens */
	size_t n_all_rcpt;
	char *subject;
	int64_t date_ms;           /* 0 when absent/unparsable */
	char *text;                /* full text, UTF-8 */
	char *html;                /* UTF-8 or NULL */
	char *reply_text;          /* text above the quoted history */
	struct mime_attachment *attachments;
	char **attachment_cids;    /* each attachment's Content-ID (no <>), or NULL */
	size_t n_attachments;
	char **dropped;            /* names of attachments over the cap */
	size_t n_dropped;
	char **notes;              /* lines the posted text must add (forwarded messages) */
	size_t n_notes;
	bool auto_reply;           /* RFC 3834 and friends, auto-responders' subjects */
	bool list_mail;            /* List-Id, Precedence: bulk/list/junk: not an auto-reply */
	bool from_loose;           /* from_addr read from a From GMime could not parse */
	bool null_sender;          /* Return-Path: <> */
	/* DSN (multipart/report; report-type=delivery-status) */
	bool is_dsn;
	char *dsn_envid;           /* Original-Envelope-Id */
	char *dsn_orig_message_id; /* Message-ID of the returned message, without <> */
	char *dsn_job;             /* X-Mailbridge-Job of the returned message */
	char *orig_reply_to;       /* Reply-To of the returned message (DSN, ARF), as written */
	/* ARF (RFC 5965: multipart/report; report-type=feedback-report): a
	 * complaint; the returned message's fields are the dsn_* ones above */
	bool is_arf;
	struct dsn_rcpt *dsn;
	size_t n_dsn;
};

/* NULL when the bytes are not a message at all, or (with *refused_r set
 * to why) when the message is past a structural limit: more than
 * MIME_IN_MAX_PARTS parts or MIME_IN_MAX_MULTIPARTS multiparts (checked on
 * the raw bytes, before GMime builds a tree of them), or more than
 * MIME_IN_MAX_DSN_RCPTS recipients in a DSN. max_attach caps the sum of
 * decoded attachment sizes (the rest are listed in dropped). */
struct inbound_msg *mime_in_parse(const char *raw, size_t len, size_t max_attach, const char **refused_r);
void mime_in_free(struct inbound_msg *m);

/* The reply above the quoted history of a plain text ("On ... wrote:",
 * Outlook's "From:/Sent:" block, "-----Original Message-----", '>' lines).
 * malloc'd; the whole text when no history marker is found. */
char *mime_in_reply_text(const char *text);

#endif
