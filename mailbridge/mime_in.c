#include "mime_in.h"
#include "html_text.h"
#include "util.h"

#include <ctype.h>
#include <gmime/gmime.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MIME_IN_MAX_ADDRS 200

struct walk {
	struct inbound_msg *m;
	size_t max_attach, attach_total;
	bool have_text, have_html;
	const char *refused;       /* a limit was passed: why */
	int unnamed;               /* attachments named from their type so far */
	int forwarded;             /* forwarded messages so far */
};

#define MB_STR_(x) #x
#define MB_STR(x) MB_STR_(x)

static char *
strip_brackets(const char *s)
{
	size_t len;
	while (*s == ' ' || *s == '<' || *s == '\t')
		s++;
	len = strcspn(s, ">");
	while (len > 0 && isspace((unsigned char)s[len - 1]))
		len--;
	return len ? strndup(s, len) : NULL;
}

static void
push(char ***list, size_t *n, char *s)
{
	if (!s || *n >= MIME_IN_MAX_ADDRS) {
		free(s);
		return;
	}
	*list = xrealloc(*list, (*n + 1) * sizeof(char *));
	(*list)[(*n)++] = s;
}

static void
addrs_from(InternetAddressList *l, char ***out, size_t *n, struct inbound_msg *m)
{
	for (int i = 0; l && i < internet_address_list_length(l); i++) {
		InternetAddress *a = internet_address_list_get_address(l, i);
		if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
			const char *addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
			if (addr && *addr) {
				push(out, n, xstrdup(addr));
				push(&m->all_rcpt_addrs, &m->n_all_rcpt, xstrdup(addr));
			}
		}
	}
}

/* UTF-8 text of a text part: GMime converts from the declared charset;
 * undeclared or unknown charsets come back raw, so validate and fall back
 * to GMime's 8-bit guesser (utf-8, then iso-8859-1 by default). */
static char *
part_text(GMimeTextPart *tp)
{
	char *t = g_mime_text_part_get_text(tp), *out;
	if (!t)
		return NULL;
	if (g_utf8_validate(t, -1, NULL)) {
		out = xstrdup(t);
	} else {
		char *fixed = g_mime_utils_decode_8bit(NULL, t, strlen(t));
		out = xstrdup(fixed);
		g_free(fixed);
	}
	g_free(t);
	return out;
}

/* uuencode lines carry their length in their first character; mail in
 * transit often loses a line's trailing spaces (zero bits), and a
 * decoder then reads the next line's bytes into it. Each short line
 * between "begin" and "end" gets its zeros back ('`' = 0) before GMime
 * decodes it. A new stream; the raw one is left as it was. */
static GMimeStream *
uu_repaired(GMimeStream *raw)
{
	GMimeStream *in = g_mime_stream_mem_new(), *out = g_mime_stream_mem_new();
	GByteArray *b;
	bool body = false;

	g_mime_stream_reset(raw);
	g_mime_stream_write_to_stream(raw, in);
	g_mime_stream_reset(raw);
	b = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(in));
	for (size_t i = 0; i < b->len;) {
		const char *line = (const char *)b->data + i;
		const char *nl = memchr(line, '\n', b->len - i);
		size_t len = nl ? (size_t)(nl - line) : b->len - i, text = len;
		if (text > 0 && line[text - 1] == '\r')
			text--;
		g_mime_stream_write(out, line, text);
		if (!body && text >= 6 && !strncmp(line, "begin ", 6)) {
			body = true;
		} else if (body && text == 3 && !strncmp(line, "end", 3)) {
			body = false;
		} else if (body && text > 0 && line[0] > ' ' && line[0] <= '`') {
			size_t need = 1 + (((size_t)((line[0] - ' ') & 0x3f) + 2) / 3) * 4;
			for (size_t k = text; k < need; k++)
				g_mime_stream_write(out, "`", 1);
		}
		g_mime_stream_write(out, line + text, len - text);
		if (nl)
			g_mime_stream_write(out, "\n", 1);
		i += len + (nl ? 1 : 0);
	}
	g_object_unref(in);
	g_mime_stream_reset(out);
	return out;
}

static GByteArray *
part_bytes(GMimePart *part)
{
	GMimeDataWrapper *w = g_mime_part_get_content(part), *fixed = NULL;
	GMimeStream *s;
	GByteArray *copy;

	if (!w)
		return NULL;
	if (g_mime_data_wrapper_get_encoding(w) == GMIME_CONTENT_ENCODING_UUENCODE &&
	    g_mime_data_wrapper_get_stream(w)) {
		GMimeStream *r = uu_repaired(g_mime_data_wrapper_get_stream(w));
		fixed = g_mime_data_wrapper_new_with_stream(r, GMIME_CONTENT_ENCODING_UUENCODE);
		g_object_unref(r);
		w = fixed;
	}
	s = g_mime_stream_mem_new();
	g_mime_data_wrapper_write_to_stream(w, s);
	if (fixed)
		g_object_unref(fixed);
	copy = g_byte_array_new();
	g_byte_array_append(copy, g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s))->data,
	    g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(s))->len);
	g_object_unref(s);
	return copy;
}

/* Parses RFC 3464 fields: blocks separated by blank lines, "Name: value"
 * with folded continuations. */
static void
parse_dsn(struct inbound_msg *m, const char *body, size_t len, const char **refused)
{
	char *copy, *save = NULL, *line;
	struct dsn_rcpt *cur = NULL;
	char *last_value = NULL;
	bool first_block = true;

	if (!body || len == 0)
		return;   /* an empty delivery-status part has no buffer (found by fuzzing) */
	copy = strndup(body, len);

	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		size_t l = strlen(line);
		char *colon, *v;
		if (l && line[l - 1] == '\r')
			line[--l] = '\0';
		if ((line[0] == ' ' || line[0] == '\t') && last_value)
			continue;   /* continuation of a long Diagnostic-Code: first line is enough */
		colon = strchr(line, ':');
		if (!colon)
			continue;
		*colon = '\0';
		v = colon + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		last_value = v;
		if (!strcasecmp(line, "Original-Envelope-Id") && first_block) {
			free(m->dsn_envid);
			m->dsn_envid = xstrdup(v);
		} else if (!strcasecmp(line, "Final-Recipient")) {
			/* each recipient block names its Final-Recipient */
			char *semi = strchr(v, ';');
			if (m->n_dsn >= MIME_IN_MAX_DSN_RCPTS) {
				*refused = "more than " MB_STR(MIME_IN_MAX_DSN_RCPTS) " recipients in a DSN";
				break;
			}
			m->dsn = xrealloc(m->dsn, (m->n_dsn + 1) * sizeof(*m->dsn));
			cur = &m->dsn[m->n_dsn++];
			memset(cur, 0, sizeof(*cur));
			cur->recipient = strip_brackets(semi ? semi + 1 : v);
			first_block = false;
		} else if (cur && !strcasecmp(line, "Action")) {
			free(cur->action);
			cur->action = xstrdup(v);
			for (char *p = cur->action; *p; p++)
				*p = (char)tolower((unsigned char)*p);
		} else if (cur && !strcasecmp(line, "Status")) {
			free(cur->status);
			cur->status = xstrdup(v);
		} else if (cur && !strcasecmp(line, "Diagnostic-Code")) {
			char *semi = strchr(v, ';');
			free(cur->diagnostic);
			cur->diagnostic = xstrdup(semi ? semi + 1 + strspn(semi + 1, " ") : v);
		}
	}
	free(copy);
}

/* From the returned headers of a DSN: Message-ID and our job header. */
static void
parse_returned_headers(struct inbound_msg *m, GMimeObject *obj)
{
	const char *mid = g_mime_object_get_header(obj, "Message-ID");
	const char *job = g_mime_object_get_header(obj, "X-Mailbridge-Job");
	const char *rt = g_mime_object_get_header(obj, "Reply-To");
	if (rt && !m->orig_reply_to)
		m->orig_reply_to = xstrdup(rt);
	if (mid && !m->dsn_orig_message_id)
		m->dsn_orig_message_id = strip_brackets(mid);
	if (job && !m->dsn_job)
		m->dsn_job = xstrdup(job);
}

static void
returned_headers_from_text(struct inbound_msg *m, const char *text, size_t len)
{
	if (!text || len == 0)
		return;
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(text, len);
	GMimeParser *p = g_mime_parser_new_with_stream(s);
	GMimeMessage *msg = g_mime_parser_construct_message(p, NULL);
	if (msg) {
		parse_returned_headers(m, GMIME_OBJECT(msg));
		g_object_unref(msg);
	}
	g_object_unref(p);
	g_object_unref(s);
}

/* One encoded-word at p ("=?charset?B|Q?text?="): its parts, and where
 * it ends; false when p is not one. */
struct eword {
	const char *charset, *text, *end;
	size_t charset_len, text_len;
	char enc;                  /* 'B' or 'Q' */
};

static bool
eword_at(const char *p, struct eword *w)
{
	const char *q, *t, *e;

	if (p[0] != '=' || p[1] != '?' || !(q = strchr(p + 2, '?')) || q == p + 2)
		return false;
	/* q[1] first: strchr finds the terminator in any string (fuzz_mime_in) */
	if (!q[1] || !strchr("BbQq", q[1]) || q[2] != '?')
		return false;
	t = q + 3;
	if (!(e = strstr(t, "?=")))
		return false;
	if (memchr(p, ' ', (size_t)(e - p)) || memchr(p, '\n', (size_t)(e - p)))
		return false;
	w->charset = p + 2;
	w->charset_len = (size_t)(q - p - 2);
	w->enc = (char)toupper((unsigned char)q[1]);
	w->text = t;
	w->text_len = (size_t)(e - t);
	w->end = e + 2;
	return true;
}

/* Joins adjacent encoded-words of one charset and encoding into one, as
 * RFC 2047 allows (the white space between them is not part of the
 * text). GMime 3.2.13, Debian 12's, drops the text of a base64 word that
 * follows a padded one in the same charset (upstream issue 133, fixed in
 * 3.2.14); a joined word decodes whole, and a character split across two
 * words comes out right too. malloc'd. */
static char *
rfc2047_join(const char *v)
{
	GString *out = g_string_new(NULL);
	const char *p = v;
	char *res;

	while (*p) {
		struct eword a, b;
		const char *next;
		if (!eword_at(p, &a)) {
			g_string_append_c(out, *p++);
			continue;
		}
		if (a.enc == 'Q') {
			GString *text = g_string_new_len(a.text, (gssize)a.text_len);
			next = a.end;
			while (eword_at(next + strspn(next, " \t\r\n"), &b) && b.enc == a.enc &&
			    b.charset_len == a.charset_len && !strncasecmp(b.charset, a.charset, a.charset_len)) {
				g_string_append_len(text, b.text, (gssize)b.text_len);
				next = b.end;
			}
			g_string_append_printf(out, "=?%.*s?Q?%s?=", (int)a.charset_len, a.charset, text->str);
			g_string_free(text, TRUE);
		} else {
			GByteArray *bytes = g_byte_array_new();
			struct eword cur = a;
			char *enc;
			next = a.end;
			for (;;) {
				char *chunk = g_strndup(cur.text, cur.text_len);
				gsize n = 0;
				guchar *dec = g_base64_decode(chunk, &n);
				g_byte_array_append(bytes, dec, (guint)n);
				g_free(dec);
				g_free(chunk);
				if (!eword_at(next + strspn(next, " \t\r\n"), &b) || b.enc != a.enc ||
				    b.charset_len != a.charset_len || strncasecmp(b.charset, a.charset, a.charset_len))
					break;
				cur = b;
				next = b.end;
			}
			enc = g_base64_encode(bytes->data, bytes->len);
			g_string_append_printf(out, "=?%.*s?B?%s?=", (int)a.charset_len, a.charset, enc);
			g_free(enc);
			g_byte_array_unref(bytes);
		}
		p = next;
	}
	res = xstrdup(out->str);
	g_string_free(out, TRUE);
	return res;
}

/* A header's text decoded from its raw value with encoded-words joined
 * first (rfc2047_join); NULL when the message has no such header. */
static char *
header_text(GMimeObject *o, const char *name)
{
	GMimeHeader *h = g_mime_header_list_get_header(g_mime_object_get_header_list(o), name);
	const char *raw = h ? g_mime_header_get_raw_value(h) : NULL;
	char *joined, *dec, *out;

	if (!raw)
		return NULL;
	joined = rfc2047_join(raw + strspn(raw, " \t"));
	dec = g_mime_utils_header_decode_text(NULL, joined);
	free(joined);
	out = dec ? xstrdup(g_strstrip(dec)) : NULL;
	g_free(dec);
	return out;
}

/* text/enriched (RFC 1896) as plain text: commands dropped, "<<" is "<" */
static void
strip_enriched(char *t)
{
	char *o = t;
	for (const char *p = t; *p; p++) {
		if (p[0] == '<' && p[1] == '<') {
			*o++ = '<';
			p++;
		} else if (*p == '<') {
			const char *end = strchr(p, '>');
			if (!end)
				break;
			p = end;
		} else {
			*o++ = *p;
		}
	}
	*o = '\0';
}

/* A name for an attachment that came without one, from its type, as
 * mail clients do: image001.png, part2.pdf, invite.ics. malloc'd. */
static char *
name_for_type(GMimeContentType *ct, int n)
{
	static const struct { const char *type, *ext; } exts[] = {
		{ "image/jpeg", "jpg" }, { "image/png", "png" }, { "image/gif", "gif" }, { "image/webp", "webp" },
		{ "image/bmp", "bmp" }, { "image/tiff", "tif" }, { "application/pdf", "pdf" },
		{ "application/zip", "zip" }, { "text/calendar", "ics" }, { "text/plain", "txt" },
		{ "text/html", "html" }, { "text/csv", "csv" }, { "message/rfc822", "eml" },
		{ "application/ms-tnef", "dat" }, { "audio/mpeg", "mp3" }, { "video/mp4", "mp4" },
	};
	const char *type = g_mime_content_type_get_media_type(ct), *sub = g_mime_content_type_get_media_subtype(ct);
	char *mime = g_mime_content_type_get_mime_type(ct), *name;
	const char *ext = NULL;

	for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]) && !ext; i++)
		if (!strcasecmp(mime, exts[i].type))
			ext = exts[i].ext;
	if (!ext && sub && strlen(sub) <= 5 && strspn(sub, "abcdefghijklmnopqrstuvwxyz0123456789") == strlen(sub))
		ext = sub;
	if (ext && !strcmp(ext, "ics"))
		name = xstrdup("invite.ics");
	else if (type && !strcasecmp(type, "image"))
		name = xasprintf("image%03d.%s", n, ext ? ext : "bin");
	else
		name = xasprintf("part%d.%s", n, ext ? ext : "bin");
	g_free(mime);
	return name;
}

/* Keeps a decoded part as an attachment, or lists it as dropped when
 * the message's attachments would pass max_attach. */
static void
add_attachment(struct walk *w, const char *name, const char *type, const void *data, size_t len, const char *cid)
{
	struct inbound_msg *m = w->m;
	struct mime_attachment *a;

	if (w->attach_total + len > w->max_attach) {
		push(&m->dropped, &m->n_dropped, xstrdup(name));
		return;
	}
	m->attachments = xrealloc(m->attachments, (m->n_attachments + 1) * sizeof(*a));
	m->attachment_cids = xrealloc(m->attachment_cids, (m->n_attachments + 1) * sizeof(char *));
	m->attachment_cids[m->n_attachments] = cid && *cid ? xstrdup(cid) : NULL;
	a = &m->attachments[m->n_attachments++];
	a->filename = xstrdup(name);
	a->content_type = xstrdup(type);
	a->len = len;
	a->map_len = 0;    /* on the heap */
	a->data = xmalloc(len + 1);
	if (len)   /* an empty part has no buffer at all (found by fuzzing) */
		memcpy(a->data, data, len);
	w->attach_total += len;
}

/* A forwarded message (message/rfc822) goes as a .eml file, and the text
 * says what it was: its forwarded attachments would otherwise vanish. */
static void
add_forwarded(struct walk *w, GMimeMessage *inner)
{
	struct inbound_msg *m = w->m;
	char *bytes = g_mime_object_to_string(GMIME_OBJECT(inner), NULL);
	const char *subject = g_mime_message_get_subject(inner);
	InternetAddressList *from = g_mime_message_get_from(inner);
	char *who = from && internet_address_list_length(from) > 0 ?
	    internet_address_list_to_string(from, NULL, FALSE) : NULL;
	char *name = xasprintf("forwarded%d.eml", ++w->forwarded);

	if (!bytes) {
		free(name);
		g_free(who);
		return;
	}
	add_attachment(w, name, "message/rfc822", bytes, strlen(bytes), NULL);
	push(&m->notes, &m->n_notes, xasprintf("Forwarded message: %s from %s (attached as %s)",
	    subject && g_utf8_validate(subject, -1, NULL) ? subject : "(no subject)",
	    who && g_utf8_validate(who, -1, NULL) ? who : "(unknown sender)", name));
	free(name);
	g_free(who);
	g_free(bytes);
}

static void walk_part(GMimeObject *parent, GMimeObject *part, gpointer data);

/* A multipart in which no part was found (no boundary parameter, or
 * delimiters that do not match it): GMime keeps the whole body as its
 * prologue. That is the sender's text; as a multipart it was lost. */
static char *
broken_multipart_text(GMimeMultipart *mp)
{
	const char *pro = g_mime_multipart_get_prologue(mp), *epi = g_mime_multipart_get_epilogue(mp);
	char *t;
	if ((!pro || !*pro) && (!epi || !*epi))
		return NULL;
	t = xasprintf("%s%s%s", pro ? pro : "", pro && *pro && epi && *epi ? "\n" : "", epi ? epi : "");
	if (!g_utf8_validate(t, -1, NULL)) {
		/* no charset to go by: keep what is ASCII */
		for (char *c = t; *c; c++)
			if ((unsigned char)*c >= 0x80)
				*c = '?';
	}
	return t;
}

/* The same body, when its delimiter lines name a boundary other than the
 * declared one (or there is none declared): read again with the
 * boundary the lines use, so its parts are the message's, not raw MIME
 * text. True when that found parts. */
static bool
reparse_broken_multipart(struct walk *w, GMimeMultipart *mp)
{
	const char *body = g_mime_multipart_get_prologue(mp), *p;
	char boundary[71];
	size_t bl;
	char *raw, *close;
	GMimeStream *s;
	GMimeParser *parser;
	GMimeObject *obj;
	bool found = false;

	if (!body)
		return false;
	for (p = body; *p; p += strcspn(p, "\n"), p += *p == '\n') {
		if (p[0] == '-' && p[1] == '-' && (bl = strcspn(p + 2, " \t\r\n")) > 0 && bl < sizeof(boundary) &&
		    strspn(p + 2 + bl, " \t\r") == strcspn(p + 2 + bl, "\n"))
			break;
	}
	if (!*p)
		return false;
	memcpy(boundary, p + 2, bl);
	boundary[bl] = '\0';
	close = xasprintf("--%s--", boundary);
	if (!strstr(p, close) || strchr(boundary, '"')) {
		free(close);
		return false;
	}
	free(close);
	raw = xasprintf("Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n%s", boundary, body);
	s = g_mime_stream_mem_new_with_buffer(raw, strlen(raw));
	parser = g_mime_parser_new_with_stream(s);
	obj = g_mime_parser_construct_part(parser, NULL);
	if (obj && GMIME_IS_MULTIPART(obj) && g_mime_multipart_get_count(GMIME_MULTIPART(obj)) > 0) {
		g_mime_multipart_foreach(GMIME_MULTIPART(obj), walk_part, w);
		found = true;
	}
	if (obj)
		g_object_unref(obj);
	g_object_unref(parser);
	g_object_unref(s);
	free(raw);
	return found;
}

/* A plain text part with a file name that is not "attachment" is the
 * message's text when it says "inline", or when there is no text yet
 * (old mailers name the body msg.txt): as a file only, the CRM showed an
 * empty message. */
static bool
named_text_is_body(const struct walk *w, GMimeObject *part, GMimeContentType *ct)
{
	GMimeContentDisposition *d = g_mime_object_get_content_disposition(part);
	const char *disp = d ? g_mime_content_disposition_get_disposition(d) : NULL;
	if (!g_mime_content_type_is_type(ct, "text", "plain"))
		return false;
	return (disp && !strcasecmp(disp, "inline")) || !w->have_text;
}

static void
walk_part(GMimeObject *parent, GMimeObject *part, gpointer data)
{
	struct walk *w = data;
	struct inbound_msg *m = w->m;
	GMimeContentType *ct = g_mime_object_get_content_type(part);

	if (GMIME_IS_MESSAGE_PART(part)) {
		GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(part));
		if (g_mime_content_type_is_type(ct, "message", "delivery-status") && inner) {
			char *s = g_mime_object_to_string(GMIME_OBJECT(inner), NULL);
			parse_dsn(m, s, strlen(s), &w->refused);
			g_free(s);
		} else if ((m->is_dsn || m->is_arf) && inner) {
			/* the returned message of a DSN or a complaint (the ARF's
			 * machine part has no Message-ID: it changes nothing) */
			parse_returned_headers(m, GMIME_OBJECT(inner));
		} else if (inner) {
			add_forwarded(w, inner);
		}
		return;   /* an attached message is not our text: it goes as a file */
	}
	if (!GMIME_IS_PART(part))
		return;
	if (g_mime_content_type_is_type(ct, "message", "delivery-status") ||
	    g_mime_content_type_is_type(ct, "message", "global-delivery-status")) {
		GByteArray *b = part_bytes(GMIME_PART(part));
		if (b) {
			parse_dsn(m, (const char *)b->data, b->len, &w->refused);
			g_byte_array_unref(b);
		}
		return;
	}
	if (m->is_arf && g_mime_content_type_is_type(ct, "message", "feedback-report"))
		return;    /* the report's machine part: not the sender's text, not a file */
	if ((m->is_dsn || m->is_arf) && (g_mime_content_type_is_type(ct, "text", "rfc822-headers") ||
	    g_mime_content_type_is_type(ct, "message", "rfc822-headers"))) {
		GByteArray *b = part_bytes(GMIME_PART(part));
		if (b) {
			returned_headers_from_text(m, (const char *)b->data, b->len);
			g_byte_array_unref(b);
		}
		return;
	}
	if (GMIME_IS_TEXT_PART(part) && !g_mime_part_is_attachment(GMIME_PART(part)) &&
	    (!g_mime_part_get_filename(GMIME_PART(part)) || named_text_is_body(w, part, ct))) {
		const char *sub = g_mime_content_type_get_media_subtype(ct);
		const char *raw_ct = g_mime_object_get_header(part, "Content-Type");
		/* text with no subtype is text/plain (RFC 2045 5.2: GMime makes
		 * it application/octet-stream); enriched text reads as text once
		 * its few tags are gone */
		bool bare = raw_ct && !strncasecmp(raw_ct + strspn(raw_ct, " \t"), "text", 4) &&
		    strchr(" \t;\r\n", raw_ct[strspn(raw_ct, " \t") + 4]);
		bool plain = bare || !sub || !*sub || !strcasecmp(sub, "plain");
		bool enriched = sub && (!strcasecmp(sub, "enriched") || !strcasecmp(sub, "richtext"));
		if (plain || enriched) {
			char *t = part_text(GMIME_TEXT_PART(part));
			if (t && enriched)
				strip_enriched(t);
			if (t && !w->have_text) {
				m->text = t;
				w->have_text = true;
			} else if (t) {
				/* a later inline text part (Apple Mail splits a body
				 * around an image; lists append a footer): keep reading */
				char *joined = xasprintf("%s\n\n%s", m->text, t);
				free(m->text);
				free(t);
				m->text = joined;
			}
			return;
		}
		if (g_mime_content_type_is_type(ct, "text", "html") && !w->have_html) {
			m->html = part_text(GMIME_TEXT_PART(part));
			w->have_html = m->html != NULL;
			return;
		}
		/* another rendition of the same text (Apple's text/watch-html
		 * beside the HTML): nothing new */
		if (parent && GMIME_IS_MULTIPART(parent) &&
		    g_mime_content_type_is_type(g_mime_object_get_content_type(parent), "multipart", "alternative") &&
		    (w->have_text || w->have_html) && !g_mime_content_type_is_type(ct, "text", "calendar"))
			return;
		/* text/calendar, text/csv, a second HTML part...: unreadable
		 * as the message itself, so an attachment, never dropped */
	}
	/* anything else with content is an attachment (inline images too) */
	{
		const char *fname = g_mime_part_get_filename(GMIME_PART(part));
		GByteArray *b;
		char *type;

		b = part_bytes(GMIME_PART(part));
		if (!b)
			return;
		type = g_mime_content_type_get_mime_type(ct);
		{
			char *name = fname ? xstrdup(fname) : name_for_type(ct, ++w->unnamed);
			/* an inline image the HTML names by cid: keeps its id */
			add_attachment(w, name, type, b->data, b->len, g_mime_object_get_content_id(part));
			free(name);
		}
		g_free(type);
		g_byte_array_unref(b);
	}
}

static bool
header_is(GMimeObject *o, const char *name, const char *const *values)
{
	const char *v = g_mime_object_get_header(o, name);
	if (!v)
		return false;
	while (*v == ' ')
		v++;
	for (; *values; values++)
		if (strncasecmp(v, *values, strlen(*values)) == 0)
			return true;
	return false;
}

/* Subjects auto-responders use, by language, as prefixes (lower case) */
static const char *const auto_subjects[] = {
	"out of office", "automatic reply", "auto-reply", "autoreply", "auto reply", "auto:",
	"abwesenheitsnotiz", "automatische antwort", "réponse automatique", "absence du bureau",
	"respuesta automática", "fuera de la oficina", "resposta automática", "ausente do escritório",
	"automatisch antwoord", "afwezig", NULL,
};

/* RFC 3834's Auto-Submitted, the X-Autoreply family, Exchange's rule and
 * OOF markers, Precedence: auto_reply, and auto-responders' subjects.
 * Precedence: bulk/junk/list is list and bulk mail, not an auto-reply
 * (see is_list_mail). */
static bool
is_auto_reply(GMimeObject *o, const char *subject)
{
	static const char *const auto_prec[] = { "auto_reply", NULL };
	static const char *const oof[] = { "oof", "all", NULL };
	const char *as = g_mime_object_get_header(o, "Auto-Submitted");

	if (as) {
		while (*as == ' ')
			as++;
		if (strncasecmp(as, "no", 2) != 0 || isalpha((unsigned char)as[2]))
			return true;
	}
	if (g_mime_object_get_header(o, "X-Autoreply") || g_mime_object_get_header(o, "X-Autorespond") ||
	    g_mime_object_get_header(o, "X-MS-Exchange-Inbox-Rules-Loop") || header_is(o, "Precedence", auto_prec) ||
	    header_is(o, "X-Auto-Response-Suppress", oof))
		return true;
	for (int i = 0; subject && auto_subjects[i]; i++)
		if (!strncasecmp(subject, auto_subjects[i], strlen(auto_subjects[i])))
			return true;
	return false;
}

/* Mail from a list or a bulk sender: List-Id, or Precedence bulk/list/junk. */
static bool
is_list_mail(GMimeObject *o)
{
	static const char *const bulk[] = { "bulk", "junk", "list", NULL };
	return g_mime_object_get_header(o, "List-Id") || header_is(o, "Precedence", bulk);
}

/* The address in a From that GMime could not parse ("Big Bug
 * bb@bug.com"): the last word that looks like an addr-spec. NULL. */
static char *
loose_address(const char *h)
{
	const char *best = NULL;
	size_t best_len = 0;

	for (const char *p = h; p && *p;) {
		size_t n = strcspn(p, " \t<>,;\"()");
		const char *at = memchr(p, '@', n);
		if (at && at > p && at + 1 < p + n && strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		    "0123456789.!#$%&'*+/=?^_`{|}~-@") == n && memchr(at + 1, '.', (size_t)(p + n - at - 1))) {
			best = p;
			best_len = n;
		}
		p += n;
		p += strspn(p, " \t<>,;\"()");
	}
	return best ? strndup(best, best_len) : NULL;
}

/* Cuts HTML at the first quote container the common clients emit. */
static char *
html_without_quotes(const char *html)
{
	static const char *const markers[] = {
		"class=\"gmail_quote", "<blockquote", "id=\"divRplyFwdMsg\"", "id=\"appendonsend\"",
		"class=\"moz-cite-prefix\"", "id=\"mail-editor-reference-message-container\"", NULL,
	};
	const char *cut = NULL;
	for (int i = 0; markers[i]; i++) {
		const char *p = strcasestr(html, markers[i]);
		if (p) {
			/* back to the start of the tag holding the attribute */
			while (p > html && *p != '<')
				p--;
			if (!cut || p < cut)
				cut = p;
		}
	}
	return cut ? strndup(html, (size_t)(cut - html)) : xstrdup(html);
}

static bool
starts_with_ci(const char *s, const char *prefix)
{
	return strncasecmp(s, prefix, strlen(prefix)) == 0;
}

/* One line of a plain-text reply, as the extractor sees it. */
struct rline {
	const char *p;             /* its start */
	size_t len;                /* without the line end */
	bool blank, quoted;
};

static bool
starts_with_any(const char *s, const char *const *list)
{
	for (; *list; list++)
		if (starts_with_ci(s, *list))
			return true;
	return false;
}

static const char *
skip_blanks(const char *s, const char *end)
{
	while (s < end && (*s == ' ' || *s == '\t'))
		s++;
	return s;
}

/* A separator that starts a forwarded or replied-to history with no
 * quoting of its own (Outlook, Thunderbird, Gmail, Apple Mail). */
static bool
history_separator(const struct rline *l)
{
	static const char *const seps[] = {
		"-----Original Message-----", "----- Original Message -----", "-------- Original Message --------",
		"---------- Forwarded message", "-------- Forwarded Message --------", "Begin forwarded message:",
		"-----Ursprüngliche Nachricht-----", "-----Message d'origine-----", "-----Mensaje original-----",
		"-----Mensagem original-----", "-----Oorspronkelijk bericht-----", NULL,
	};
	return starts_with_any(skip_blanks(l->p, l->p + l->len), seps);
}

/* Outlook's header block: From: and, within three lines, Sent: (or its
 * Date: / localized forms), in en, de, fr, es, pt, nl. */
static bool
header_block(const struct rline *l, size_t left)
{
	static const char *const from[] = { "From:", "Von:", "De :", "De:", "Van:", NULL };
	static const char *const sent[] = { "Sent:", "Date:", "Gesendet:", "Datum:", "Envoyé :", "Envoyé:",
		"Date :", "Enviado:", "Enviada:", "Fecha:", "Data:", "Verzonden:", NULL };
	const char *s = skip_blanks(l->p, l->p + l->len);

	if (s == l->p + l->len || *s == '>')
		return false;
	if (starts_with_ci(s, "________________________________"))   /* Outlook on the web */
		return left > 1 && starts_with_any(skip_blanks(l[1].p, l[1].p + l[1].len), from);
	if (!starts_with_any(s, from))
		return false;
	for (size_t i = 1; i <= 3 && i < left; i++)
		if (starts_with_any(skip_blanks(l[i].p, l[i].p + l[i].len), sent))
			return true;
	return false;
}

/* "On <date>, <name> wrote:", "<name> wrote:" and the de, fr, es, pt, nl,
 * it forms, on one line or wrapped onto two (i, i+1): how many lines, 0
 * when it is not one. */
static int
attribution(const struct rline *l, size_t left)
{
	static const char *const verbs[] = { "wrote", "schrieb", "a \xc3\xa9" "crit", "a ecrit", "escribi",
		"escreveu", "schreef", "ha scritto", "napisa", NULL };
	for (int n = 1; n <= 2 && (size_t)n <= left; n++) {
		const struct rline *last = &l[n - 1];
		const char *e = last->p + last->len;
		bool verb = false;
		while (e > last->p && (e[-1] == ' ' || e[-1] == '\r'))
			e--;
		if (e == last->p || e[-1] != ':' || last->quoted)
			continue;
		for (int k = 0; k < n && !verb; k++)
			for (const char *const *v = verbs; *v && !verb; v++)
				verb = l[k].len >= strlen(*v) && memmem(l[k].p, l[k].len, *v, strlen(*v)) != NULL;
		if (verb && (size_t)(e - l[0].p) < 300)
			return n;
	}
	return 0;
}

/* The words an attribution opens with, when it names a date first. */
static bool
attribution_opens(const struct rline *l)
{
	static const char *const intro[] = { "On ", "Am ", "Le ", "El ", "Em ", "Op ", "Il ", NULL };
	return starts_with_any(skip_blanks(l->p, l->p + l->len), intro);
}

/* The sender's own words of a plain-text reply (the model: Mailgun's
 * talon, read, not copied). Cut: a quoted block that ends the message
 * (with the attribution line above it), or a forwarded or replied-to
 * history from its separator or header block on. Kept: inline answers
 * between quotes, with those quotes (they are what is answered). When
 * the cut would leave nothing, the whole text is kept. */
char *
mime_in_reply_text(const char *text)
{
	struct rline *l = NULL;
	size_t n = 0, cap = 0, cut;
	const char *p = text;

	while (*p) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		const char *q = skip_blanks(p, p + len);
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			l = xrealloc(l, cap * sizeof(*l));
		}
		l[n++] = (struct rline){ p, len, q == p + len || (*q == '\r' && q + 1 == p + len), *q == '>' };
		p = eol ? eol + 1 : p + len;
	}
	cut = n;
	/* a history with no quoting: from its first separator on */
	for (size_t i = 0; i < n && cut == n; i++)
		if (history_separator(&l[i]) || header_block(&l[i], n - i))
			cut = i;
	/* a quoted block that ends what is left, and its attribution */
	{
		size_t t = cut;
		bool any = false;
		while (t > 0 && (l[t - 1].blank || l[t - 1].quoted)) {
			any |= l[t - 1].quoted;
			t--;
		}
		if (any) {
			cut = t;
			while (t > 0 && l[t - 1].blank)
				t--;
			/* two lines only when the first opens one ("On <date>, <name>"
			 * wrapped before "<addr> wrote:"); else the last line alone */
			if (t >= 2 && attribution_opens(&l[t - 2]) && attribution(&l[t - 2], 2) == 2)
				cut = t - 2;
			else if (t >= 1 && attribution(&l[t - 1], 1) == 1)
				cut = t - 1;
		}
	}
	while (cut > 0 && l[cut - 1].blank)
		cut--;
	if (cut == 0 || cut == n) {
		free(l);
		return xstrdup(text);   /* nothing of the sender's above it, or nothing to cut */
	}
	{
		size_t len = (size_t)(l[cut - 1].p + l[cut - 1].len - text);
		char *out = xmalloc(len + 2);
		memcpy(out, text, len);
		while (len > 0 && (out[len - 1] == '\r' || out[len - 1] == ' '))
			len--;
		out[len] = '\n';
		out[len + 1] = '\0';
		free(l);
		return out;
	}
}

/* The boundary a "boundary=" parameter at p declares, into out (at most
 * 70 characters, RFC 2046); its length, 0 if none. */
static size_t
boundary_at(const char *p, const char *end, char *out)
{
	size_t n = 0;
	bool quoted = p < end && *p == '"';

	if (quoted)
		p++;
	while (p < end && n < 70 && (quoted ? *p != '"' : !strchr(" \t;\r\n", *p)) && *p != '\r' && *p != '\n')
		out[n++] = *p++;
	out[n] = '\0';
	return n;
}

/* True when the line starts "Field-Name:" (RFC 5322 ftext, 33-126 but
 * ':', then optional blanks, as obsolete syntax allows). */
static bool
header_line(const char *p, size_t ll)
{
	size_t i = 0;
	while (i < ll && p[i] > 32 && p[i] < 127 && p[i] != ':')
		i++;
	if (i == 0)
		return false;
	while (i < ll && (p[i] == ' ' || p[i] == '\t'))
		i++;
	return i < ll && p[i] == ':';
}

/* Before GMime sees the bytes, one pass over them:
 * - counts the multipart containers (by their boundary parameters) and
 *   the delimiter lines of their boundaries, so that a message of 200,000
 *   tiny parts is refused before GMime builds 200,000 objects;
 * - keeps the first valid Content-Type of each header block (the
 *   message's and each part's) and drops later ones: GMime would take the
 *   last, and some senders add a second, broken one, which made parts
 *   come out as raw MIME text. Most clients use the first;
 * - ends a header block at its first line that is neither a header nor a
 *   folded one, with the blank line the sender left out: GMime would
 *   drop that line and read the text after it as more headers, so the
 *   whole body was lost (Python's email calls it
 *   MissingHeaderBodySeparatorDefect and reads the body).
 * Returns why the message is refused, or NULL; *fixed_r is a rewritten
 * copy (malloc'd) when a header was dropped or a blank line added, else
 * NULL. */
static const char *
mime_in_prepare(const char *raw, size_t len, char **fixed_r, size_t *fixed_len_r)
{
	static const char key[] = "boundary=";
	char (*bounds)[71] = NULL;
	size_t nb = 0, parts = 0, out_len = 0;
	const char *p, *end = raw + len, *refused = NULL;
	bool in_headers = true, have_ct = false, dropping = false, had_header = false;
	char *out = NULL;
	/* room for one added blank line (CRLF) per header block */
	size_t cap = len + 2 * (MIME_IN_MAX_PARTS + 2) + 1;

	*fixed_r = NULL;
	for (p = raw; p + sizeof(key) - 1 <= end; p++) {
		if ((*p != 'b' && *p != 'B') || strncasecmp(p, key, sizeof(key) - 1))
			continue;
		if (nb >= MIME_IN_MAX_MULTIPARTS) {
			refused = "more than " MB_STR(MIME_IN_MAX_MULTIPARTS) " multipart containers";
			break;
		}
		bounds = xrealloc(bounds, (nb + 1) * sizeof(*bounds));
		if (boundary_at(p + sizeof(key) - 1, end, bounds[nb]) > 0)
			nb++;
	}
	for (p = raw; !refused && p < end;) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end, *next = nl ? nl + 1 : end;
		size_t ll = (size_t)(le - p);
		bool keep = true;

		if (ll >= 3 && p[0] == '-' && p[1] == '-') {
			for (size_t i = 0; i < nb; i++) {
				size_t bl = strlen(bounds[i]);
				if (ll - 2 >= bl && !memcmp(p + 2, bounds[i], bl)) {
					if (++parts > MIME_IN_MAX_PARTS)
						refused = "more than " MB_STR(MIME_IN_MAX_PARTS) " MIME parts";
					/* a part's headers follow, unless it was the closing one */
					in_headers = !(ll - 2 >= bl + 2 && p[2 + bl] == '-' && p[3 + bl] == '-');
					have_ct = dropping = had_header = false;
					goto emit;
				}
			}
		}
		if (in_headers) {
			if (ll == 0 || (ll == 1 && p[0] == '\r')) {
				in_headers = dropping = false;
			} else if (p[0] == ' ' || p[0] == '\t') {
				keep = !dropping;          /* a folded line goes with its header */
			} else if (had_header && !header_line(p, ll)) {
				/* the body began without its blank line: add it */
				if (!out) {
					out = xmalloc(cap);
					out_len = (size_t)(p - raw);
					memcpy(out, raw, out_len);
				}
				if (out_len + 2 < cap) {
					memcpy(out + out_len, ll > 0 && p[ll - 1] == '\r' ? "\r\n" : "\n",
					    ll > 0 && p[ll - 1] == '\r' ? 2 : 1);
					out_len += ll > 0 && p[ll - 1] == '\r' ? 2 : 1;
				}
				in_headers = dropping = false;
			} else if (ll > 13 && !strncasecmp(p, "Content-Type:", 13)) {
				dropping = have_ct;
				keep = !dropping;
				if (!have_ct && memchr(p + 13, '/', ll - 13))
					have_ct = true;
			} else {
				dropping = false;
			}
			had_header = true;
		}
emit:
		if (!keep && !out) {
			/* the first line dropped: copy what came before */
			out = xmalloc(cap);
			out_len = (size_t)(p - raw);
			memcpy(out, raw, out_len);
		} else if (keep && out) {
			memcpy(out + out_len, p, (size_t)(next - p));
			out_len += (size_t)(next - p);
		}
		p = next;
	}
	free(bounds);
	if (out && !refused) {
		*fixed_r = out;
		*fixed_len_r = out_len;
	} else {
		free(out);
	}
	return refused;
}

struct inbound_msg *
mime_in_parse(const char *raw, size_t len, size_t max_attach, const char **refused_r)
{
	GMimeStream *s;
	GMimeParser *p;
	GMimeMessage *msg;
	struct inbound_msg *m;
	struct walk w = { 0 };
	char *fixed = NULL;
	size_t fixed_len = 0;
	GMimeObject *top;
	GMimeContentType *ct;
	const char *h;
	GDateTime *dt;

	if ((*refused_r = mime_in_prepare(raw, len, &fixed, &fixed_len)) != NULL)
		return NULL;
	if (fixed) {
		raw = fixed;
		len = fixed_len;
	}
	s = g_mime_stream_mem_new_with_buffer(raw, len);
	p = g_mime_parser_new_with_stream(s);
	msg = g_mime_parser_construct_message(p, NULL);
	g_object_unref(p);
	g_object_unref(s);
	free(fixed);                  /* GMime copied what it keeps */
	if (!msg)
		return NULL;
	m = xcalloc(1, sizeof(*m));
	top = GMIME_OBJECT(msg);
	if (g_mime_message_get_message_id(msg))
		m->message_id = xstrdup(g_mime_message_get_message_id(msg));
	if ((h = g_mime_object_get_header(top, "In-Reply-To"))) {
		GMimeReferences *r = g_mime_references_parse(NULL, h);
		if (r && g_mime_references_length(r) > 0)
			m->in_reply_to = xstrdup(g_mime_references_get_message_id(r, 0));
		if (r)
			g_mime_references_free(r);
	}
	if ((h = g_mime_object_get_header(top, "References"))) {
		GMimeReferences *r = g_mime_references_parse(NULL, h);
		for (int i = 0; r && i < g_mime_references_length(r) && m->n_references < MIME_IN_MAX_REFS; i++)
			push(&m->references, &m->n_references, xstrdup(g_mime_references_get_message_id(r, i)));
		if (r)
			g_mime_references_free(r);
	}
	{
		/* with encoded-words joined first (rfc2047_join), when there are any */
		GMimeHeader *fh = g_mime_header_list_get_header(g_mime_object_get_header_list(top), "From");
		const char *raw_from = fh ? g_mime_header_get_raw_value(fh) : NULL;
		InternetAddressList *own = NULL, *from = g_mime_message_get_from(msg);
		if (raw_from && strstr(raw_from, "=?")) {
			char *joined = rfc2047_join(raw_from);
			if ((own = internet_address_list_parse(NULL, joined)) != NULL)
				from = own;
			free(joined);
		}
		for (int i = 0; from && i < internet_address_list_length(from); i++) {
			InternetAddress *a = internet_address_list_get_address(from, i);
			if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
				const char *name = internet_address_get_name(a);
				const char *addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
				if (!addr || !strchr(addr, '@'))
					continue;
				m->from_addr = xstrdup(addr);
				m->from_name = name && *name && g_utf8_validate(name, -1, NULL) ? xstrdup(name) : NULL;
				break;
			}
		}
		if (own)
			g_object_unref(own);
		/* "From: Big Bug bb@bug.com": not RFC 5322, but it names a sender */
		if (!m->from_addr && (h = g_mime_object_get_header(top, "From")) && (m->from_addr = loose_address(h)))
			m->from_loose = true;
	}
	addrs_from(g_mime_message_get_to(msg), &m->to_addrs, &m->n_to, m);
	addrs_from(g_mime_message_get_cc(msg), &m->cc_addrs, &m->n_cc, m);
	for (const char *const *hn = (const char *const[]){ "Delivered-To", "X-Original-To", "Envelope-To", NULL }; *hn; hn++) {
		GMimeHeaderList *hl = g_mime_object_get_header_list(top);
		for (int i = 0; i < g_mime_header_list_get_count(hl); i++) {
			GMimeHeader *hd = g_mime_header_list_get_header_at(hl, i);
			if (!strcasecmp(g_mime_header_get_name(hd), *hn))
				push(&m->all_rcpt_addrs, &m->n_all_rcpt, strip_brackets(g_mime_header_get_value(hd)));
		}
	}
	{
		char *subject = header_text(top, "Subject");
		if (subject && g_utf8_validate(subject, -1, NULL))
			m->subject = subject;
		else
			free(subject);
	}
	if ((dt = g_mime_message_get_date(msg)))
		m->date_ms = g_date_time_to_unix(dt) * 1000;
	m->auto_reply = is_auto_reply(top, m->subject);
	m->list_mail = is_list_mail(top);
	if ((h = g_mime_object_get_header(top, "Return-Path"))) {
		const char *q = h + strspn(h, " ");
		m->null_sender = strncmp(q, "<>", 2) == 0;
	}
	top = g_mime_message_get_mime_part(msg);
	ct = top ? g_mime_object_get_content_type(top) : NULL;
	if (ct && g_mime_content_type_is_type(ct, "multipart", "report")) {
		const char *rt = g_mime_content_type_get_parameter(ct, "report-type");
		m->is_dsn = rt && !strcasecmp(rt, "delivery-status");
		m->is_arf = rt && !strcasecmp(rt, "feedback-report");
	}
	w.m = m;
	w.max_attach = max_attach;
	g_mime_message_foreach(msg, walk_part, &w);
	if (top && GMIME_IS_MULTIPART(top) && g_mime_multipart_get_count(GMIME_MULTIPART(top)) == 0 && !w.have_text &&
	    !w.have_html && m->n_attachments == 0 && !reparse_broken_multipart(&w, GMIME_MULTIPART(top)))
		m->text = broken_multipart_text(GMIME_MULTIPART(top));
	g_object_unref(msg);
	if (w.refused) {
		*refused_r = w.refused;
		mime_in_free(m);
		return NULL;
	}

	/* an empty (or blank) plain part beside HTML says nothing: the HTML does */
	if (m->text && m->html && m->text[strspn(m->text, " \t\r\n")] == '\0') {
		free(m->text);
		m->text = NULL;
		free(m->reply_text);
		m->reply_text = NULL;
	}
	if (!m->text && m->html) {
		/* the HTML's quotes are "> " lines in its text: the same rules as a
		 * plain reply (inline answers kept); a history the text does not
		 * show as quoted is cut at the markers mail clients put there */
		m->text = html_text(m->html, 0);
		m->reply_text = mime_in_reply_text(m->text);
		if (!strcmp(m->reply_text, m->text) && !strstr(m->text, "\n>") && m->text[0] != '>') {
			char *cut = html_without_quotes(m->html), *t = html_text(cut, 0);
			free(cut);
			if (t[strspn(t, " \t\r\n")] != '\0') {
				free(m->reply_text);
				m->reply_text = t;
			} else {
				free(t);
			}
		}
	}
	if (!m->text)
		m->text = xstrdup("");
	if (!m->reply_text)
		m->reply_text = mime_in_reply_text(m->text);
	return m;
}

static void
free_list(char **l, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(l[i]);
	free(l);
}

void
mime_in_free(struct inbound_msg *m)
{
	if (!m)
		return;
	free(m->message_id);
	free(m->in_reply_to);
	free_list(m->references, m->n_references);
	free(m->from_name);
	free(m->from_addr);
	free(m->to);
	free_list(m->to_addrs, m->n_to);
	free_list(m->cc_addrs, m->n_cc);
	free_list(m->all_rcpt_addrs, m->n_all_rcpt);
	free(m->subject);
	free(m->text);
	free(m->html);
	free(m->reply_text);
	for (size_t i = 0; i < m->n_attachments; i++) {
		mime_attachment_clear(&m->attachments[i]);
		free(m->attachment_cids[i]);
	}
	free(m->attachments);
	free(m->attachment_cids);
	free_list(m->dropped, m->n_dropped);
	free_list(m->notes, m->n_notes);
	free(m->dsn_envid);
	free(m->dsn_orig_message_id);
	free(m->dsn_job);
	free(m->orig_reply_to);
	for (size_t i = 0; i < m->n_dsn; i++) {
		free(m->dsn[i].recipient);
		free(m->dsn[i].action);
		free(m->dsn[i].status);
		free(m->dsn[i].diagnostic);
	}
	free(m->dsn);
	free(m);
}
