#include "mime_out.h"
#include "payload.h"
#include "util.h"

#include <ctype.h>
#include <gmime/gmime.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>

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

struct buf {
	char *p;
	size_t len, cap;
};

static void
buf_putc(struct buf *b, char c)
{
	if (b->len + 2 > b->cap) {
		b->cap = b->cap ? b->cap * 2 : 256;
		b->p = xrealloc(b->p, b->cap);
	}
	b->p[b->len++] = c;
	b->p[b->len] = '\0';
}

static void
buf_puts(struct buf *b, const char *s)
{
	while (*s)
		buf_putc(b, *s++);
}

/* Appends the UTF-8 encoding of code point cp. */
static void
buf_put_utf8(struct buf *b, unsigned long cp)
{
	char tmp[8];
	int n = g_unichar_to_utf8((gunichar)cp, tmp);
	for (int i = 0; i < n; i++)
		buf_putc(b, tmp[i]);
}

static const char *
html_entity(const char *s, struct buf *out)
{
	static const struct { const char *name; unsigned long cp; } ents[] = {
		{ "amp;", '&' }, { "lt;", '<' }, { "gt;", '>' }, { "quot;", '"' }, { "apos;", '\'' },
		{ "nbsp;", ' ' }, { "#39;", '\'' }, { "copy;", 0xA9 }, { "hellip;", 0x2026 },
		{ "mdash;", 0x2014 }, { "ndash;", 0x2013 }, { "rsquo;", 0x2019 }, { "lsquo;", 0x2018 },
		{ "rdquo;", 0x201D }, { "ldquo;", 0x201C }, { "euro;", 0x20AC },
	};
	if (s[1] == '#') {
		char *end;
		unsigned long cp = (s[2] == 'x' || s[2] == 'X') ? strtoul(s + 3, &end, 16) : strtoul(s + 2, &end, 10);
		if (*end == ';' && cp > 0 && cp < 0x110000 && !(cp >= 0xD800 && cp < 0xE000)) {
			buf_put_utf8(out, cp);
			return end + 1;
		}
	}
	for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++)
		if (strncmp(s + 1, ents[i].name, strlen(ents[i].name)) == 0) {
			buf_put_utf8(out, ents[i].cp);
			return s + 1 + strlen(ents[i].name);
		}
	buf_putc(out, '&');
	return s + 1;
}

static bool
tag_is(const char *tag, size_t len, const char *name)
{
	size_t n = strlen(name);
	return len >= n && strncasecmp(tag, name, n) == 0 && (len == n || !isalnum((unsigned char)tag[n]));
}

char *
mime_out_html_to_text(const char *html)
{
	struct buf out = { 0 };
	const char *p = html;
	bool space = false;

	buf_puts(&out, "");
	while (*p) {
		if (*p == '<') {
			const char *end = strchr(p, '>');
			const char *tag = p + 1;
			bool closing = *tag == '/';
			size_t tlen;

			if (!end)
				break;
			if (closing)
				tag++;
			tlen = (size_t)(end - tag);
			if (!closing && (tag_is(tag, tlen, "style") || tag_is(tag, tlen, "script") ||
			    tag_is(tag, tlen, "head"))) {
				/* skip to the matching close tag */
				const char *name = tag_is(tag, tlen, "style") ? "</style" :
				    tag_is(tag, tlen, "script") ? "</script" : "</head";
				const char *close = strcasestr(end, name);
				end = close ? strchr(close, '>') : NULL;
				if (!end)
					break;
			} else if (tag_is(tag, tlen, "br") || tag_is(tag, tlen, "p") || tag_is(tag, tlen, "div") ||
			    tag_is(tag, tlen, "tr") || tag_is(tag, tlen, "h1") || tag_is(tag, tlen, "h2") ||
			    tag_is(tag, tlen, "h3") || tag_is(tag, tlen, "blockquote") || tag_is(tag, tlen, "ul") ||
			    tag_is(tag, tlen, "ol")) {
				if (out.len > 0 && out.p[out.len - 1] != '\n')
					buf_putc(&out, '\n');
				if (closing && (tag_is(tag, tlen, "p") || tag_is(tag, tlen, "h1") || tag_is(tag, tlen, "h2")))
					buf_putc(&out, '\n');
				space = false;
			} else if (!closing && tag_is(tag, tlen, "li")) {
				if (out.len > 0 && out.p[out.len - 1] != '\n')
					buf_putc(&out, '\n');
				buf_puts(&out, "- ");
			}
			p = end + 1;
			continue;
		}
		if (isspace((unsigned char)*p)) {
			space = true;
			p++;
			continue;
		}
		if (space && out.len > 0 && out.p[out.len - 1] != '\n')
			buf_putc(&out, ' ');
		space = false;
		if (*p == '&')
			p = html_entity(p, &out);
		else
			buf_putc(&out, *p++);
	}
	/* trim trailing blank lines */
	while (out.len > 0 && (out.p[out.len - 1] == '\n' || out.p[out.len - 1] == ' '))
		out.p[--out.len] = '\0';
	buf_putc(&out, '\n');
	return out.p;
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

	if (!m->text)
		text_owned = mime_out_html_to_text(m->html);
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
