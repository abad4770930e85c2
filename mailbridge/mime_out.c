#include "mime_out.h"
#include "html_text.h"
#include "payload.h"
#include "util.h"

#include <ctype.h>
#include <gmime/gmime.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

/* the text part of outbound mail: lines that fit a terminal (RFC 5322
 * recommends 78 characters) */
#define MIME_OUT_TEXT_WRAP 76

void
mime_attachment_clear(struct mime_attachment *a)
{
	free(a->filename);
	free(a->content_type);
	if (a->map_len > 0)
		munmap(a->data, a->map_len);
	else
		free(a->data);
	memset(a, 0, sizeof(*a));
}

static GMimePart *
text_part(const char *subtype, const char *text)
{
	GMimeTextPart *tp = g_mime_text_part_new_with_subtype(subtype);
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(text, strlen(text));
	GMimeDataWrapper *w = g_mime_data_wrapper_new_with_stream(s, GMIME_CONTENT_ENCODING_DEFAULT);

	/* g_mime_text_part_set_text would pick the smallest charset (often
	 * iso-8859-1) and 8bit with long lines kept (LIBRARIES.md B.3): we
	 * want UTF-8 as given, quoted-printable, lines within SMTP's 998 */
	g_mime_part_set_content(GMIME_PART(tp), w);
	g_mime_object_set_content_type_parameter(GMIME_OBJECT(tp), "charset", "utf-8");
	g_mime_part_set_content_encoding(GMIME_PART(tp), GMIME_CONTENT_ENCODING_QUOTEDPRINTABLE);
	g_object_unref(w);
	g_object_unref(s);
	return GMIME_PART(tp);
}

static void
add_addrs(GMimeMessage *msg, GMimeAddressType type, const struct addr *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		g_mime_message_add_mailbox(msg, type, a[i].name ? a[i].name : "", a[i].addr);
}

char *
mime_out_render(const struct mime_out *m, size_t *len_r)
{
	GMimeMessage *msg = g_mime_message_new(TRUE);
	GMimeMultipart *alt;
	GMimeObject *body;
	GMimeFormatOptions *fo;
	GDateTime *dt;
	char *text_owned = NULL, *out, *rendered;

	add_addrs(msg, GMIME_ADDRESS_TYPE_FROM, m->from, 1);
	add_addrs(msg, GMIME_ADDRESS_TYPE_TO, m->to, m->n_to);
	add_addrs(msg, GMIME_ADDRESS_TYPE_CC, m->cc, m->n_cc);
	if (m->reply_to)
		g_mime_message_add_mailbox(msg, GMIME_ADDRESS_TYPE_REPLY_TO, "", m->reply_to);
	g_mime_message_set_subject(msg, m->subject ? m->subject : "", "utf-8");
	dt = g_date_time_new_from_unix_utc(m->date_ms / 1000);
	g_mime_message_set_date(msg, dt);
	g_date_time_unref(dt);
	g_mime_message_set_message_id(msg, m->message_id);
	if (m->in_reply_to)
		g_mime_object_set_header(GMIME_OBJECT(msg), "In-Reply-To", m->in_reply_to, NULL);
	if (m->references)
		g_mime_object_set_header(GMIME_OBJECT(msg), "References", m->references, NULL);
	if (m->job_header)
		g_mime_object_set_header(GMIME_OBJECT(msg), "X-Mailbridge-Job", m->job_header, NULL);
	if (m->feedback_id)
		g_mime_object_set_header(GMIME_OBJECT(msg), "Feedback-ID", m->feedback_id, NULL);
	if (m->list_unsubscribe) {
		/* RFC 2369, and RFC 8058's one-click POST */
		g_mime_object_set_header(GMIME_OBJECT(msg), "List-Unsubscribe", m->list_unsubscribe, NULL);
		g_mime_object_set_header(GMIME_OBJECT(msg), "List-Unsubscribe-Post", "List-Unsubscribe=One-Click", NULL);
	}

	if (!m->text)
		text_owned = html_text(m->text_from ? m->text_from : m->html, MIME_OUT_TEXT_WRAP);
	if (m->html) {
		GMimePart *tp = text_part("plain", m->text ? m->text : text_owned);
		GMimePart *hp = text_part("html", m->html);
		alt = g_mime_multipart_new_with_subtype("alternative");
		g_mime_multipart_add(alt, GMIME_OBJECT(tp));
		g_mime_multipart_add(alt, GMIME_OBJECT(hp));
		g_object_unref(tp);
		g_object_unref(hp);
		body = GMIME_OBJECT(alt);
	} else {
		body = GMIME_OBJECT(text_part("plain", m->text));
	}
	free(text_owned);

	if (m->n_attachments > 0) {
		GMimeMultipart *mixed = g_mime_multipart_new_with_subtype("mixed");
		g_mime_multipart_add(mixed, body);
		g_object_unref(body);
		for (size_t i = 0; i < m->n_attachments; i++) {
			const struct mime_attachment *a = &m->attachments[i];
			char *slash = strchr(a->content_type, '/');
			char *type = slash ? strndup(a->content_type, (size_t)(slash - a->content_type)) : xstrdup("application");
			GMimePart *part = g_mime_part_new_with_type(type, slash ? slash + 1 : "octet-stream");
			GMimeStream *stream = g_mime_stream_mem_new_with_buffer(a->data, a->len);
			GMimeDataWrapper *w = g_mime_data_wrapper_new_with_stream(stream, GMIME_CONTENT_ENCODING_DEFAULT);
			g_mime_part_set_content(part, w);
			g_mime_part_set_filename(part, a->filename);
			g_mime_part_set_content_encoding(part, GMIME_CONTENT_ENCODING_BASE64);
			g_mime_multipart_add(mixed, GMIME_OBJECT(part));
			g_object_unref(w);
			g_object_unref(stream);
			g_object_unref(part);
			free(type);
		}
		body = GMIME_OBJECT(mixed);
	}
	g_mime_message_set_mime_part(msg, body);
	g_object_unref(body);

	fo = g_mime_format_options_clone(g_mime_format_options_get_default());
	g_mime_format_options_set_newline_format(fo, GMIME_NEWLINE_FORMAT_DOS);
	rendered = g_mime_object_to_string(GMIME_OBJECT(msg), fo);
	g_mime_format_options_free(fo);
	g_object_unref(msg);

	*len_r = strlen(rendered);
	out = xmalloc(*len_r + 1);
	memcpy(out, rendered, *len_r + 1);
	g_free(rendered);
	return out;
}
