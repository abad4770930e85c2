/* mime_out: render an outbound email with GMime 3 (RFC 5322 + MIME).
 * Structure: multipart/alternative (text/plain, text/html), wrapped in
 * multipart/mixed when there are attachments. Text parts are UTF-8,
 * quoted-printable; attachments base64; non-ASCII subject and names are
 * RFC 2047-encoded by GMime. Output uses CRLF line ends, ready for DATA.
 * Callers pass header values already checked for CR/LF (payload.c). */
#ifndef MB_MIME_OUT_H
#define MB_MIME_OUT_H

#include <stddef.h>
#include <stdint.h>

struct addr;

struct mime_attachment {
	char *filename;
	char *content_type;        /* "type/subtype" */
	char *data;
	size_t len;
	size_t map_len;            /* > 0: data is a read-only mmap of that length */
};

struct mime_out {
	const struct addr *from;
	const char *reply_to;      /* addr-spec or NULL */
	const struct addr *to, *cc;
	size_t n_to, n_cc;         /* Bcc never appears in headers */
	const char *subject;
	const char *html;          /* either or both */
	const char *text;
	const char *text_from;     /* with no text: the HTML the text part is made from (the
	                            * original, before tracking); NULL: html */
	const char *message_id;    /* without <> */
	const char *in_reply_to;   /* "<id>" or NULL */
	const char *references;    /* "<a> <b>" or NULL */
	const char *job_header;    /* value of X-Mailbridge-Job */
	const char *feedback_id;   /* value of Feedback-ID (Gmail's feedback loop), or NULL */
	const char *list_unsubscribe;  /* value of List-Unsubscribe (with the one-click Post), or NULL */
	int64_t date_ms;
	const struct mime_attachment *attachments;
	size_t n_attachments;
};

/* Returns the message (malloc'd, NUL-terminated) and its length. */
char *mime_out_render(const struct mime_out *m, size_t *len_r);

void mime_attachment_clear(struct mime_attachment *a);

#endif
