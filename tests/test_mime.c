#include "mime_out.h"
#include "payload.h"
#include "html_text.h"
#include "mime_in.h"
#include "test.h"

#include <gmime/gmime.h>
#include <string.h>

static GMimeMessage *
parse(const char *raw, size_t len)
{
	GMimeStream *s = g_mime_stream_mem_new_with_buffer(raw, len);
	GMimeParser *p = g_mime_parser_new_with_stream(s);
	GMimeMessage *m = g_mime_parser_construct_message(p, NULL);
	g_object_unref(p);
	g_object_unref(s);
	return m;
}

/* A message of n_parts tiny parts, or nested n_nest multiparts deep. */
static char *
make_parts(int n_parts, int n_nest)
{
	size_t cap = 256 + (size_t)n_parts * 64 + (size_t)n_nest * 128, len = 0;
	char *b = malloc(cap);
	len += (size_t)sprintf(b + len, "From: a@b.test\r\nSubject: parts\r\nMIME-Version: 1.0\r\n");
	for (int i = 0; i < n_nest; i++)
		len += (size_t)sprintf(b + len, "Content-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n--n%d\r\n", i, i);
	len += (size_t)sprintf(b + len, "Content-Type: multipart/mixed; boundary=\"p\"\r\n\r\n");
	for (int i = 0; i < n_parts; i++)
		len += (size_t)sprintf(b + len, "--p\r\nContent-Type: text/plain\r\n\r\nx%d\r\n", i);
	len += (size_t)sprintf(b + len, "--p--\r\n");
	for (int i = n_nest; i-- > 0;)
		len += (size_t)sprintf(b + len, "--n%d--\r\n", i);
	return b;
}

static char *
make_dsn(int n_rcpts)
{
	size_t cap = 1024 + (size_t)n_rcpts * 96, len = 0;
	char *b = malloc(cap);
	len += (size_t)sprintf(b + len, "From: MAILER-DAEMON@b.test\r\nSubject: dsn\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=delivery-status; boundary=\"r\"\r\n\r\n"
	    "--r\r\nContent-Type: text/plain\r\n\r\nx\r\n--r\r\nContent-Type: message/delivery-status\r\n\r\n"
	    "Reporting-MTA: dns; b.test\r\n\r\n");
	for (int i = 0; i < n_rcpts; i++)
		len += (size_t)sprintf(b + len, "Final-Recipient: rfc822; u%d@x.test\r\nAction: failed\r\n\r\n", i);
	len += (size_t)sprintf(b + len, "--r--\r\n");
	return b;
}

/* One header block and a plain body through mime_in_parse. */
static struct inbound_msg *
parse_headers(const char *headers, const char *body)
{
	char *raw;
	const char *refused = NULL;
	struct inbound_msg *m;
	if (asprintf(&raw, "%s\r\n%s", headers, body) < 0)
		abort();
	m = mime_in_parse(raw, strlen(raw), 1 << 20, &refused);
	free(raw);
	return m;
}

/* Issue 17: auto-replies are told from list mail; a From GMime cannot
 * parse still names its sender; an empty plain part beside HTML gives way
 * to the HTML's text. */
static void
test_classes(void)
{
	static const struct { const char *headers; bool auto_reply, list; } rows[] = {
		{ "From: a@b.test\r\nSubject: hi\r\n", false, false },
		{ "From: a@b.test\r\nPrecedence: bulk\r\nSubject: news\r\n", false, true },
		{ "From: a@b.test\r\nPrecedence: list\r\nSubject: [dev] patch\r\n", false, true },
		{ "From: a@b.test\r\nList-Id: <dev.lists.test>\r\nSubject: [dev] patch\r\n", false, true },
		{ "From: a@b.test\r\nPrecedence: auto_reply\r\nSubject: x\r\n", true, false },
		{ "From: a@b.test\r\nAuto-Submitted: auto-replied\r\nSubject: x\r\n", true, false },
		{ "From: a@b.test\r\nAuto-Submitted: no\r\nSubject: x\r\n", false, false },
		{ "From: a@b.test\r\nX-MS-Exchange-Inbox-Rules-Loop: a@b.test\r\nSubject: x\r\n", true, false },
		{ "From: a@b.test\r\nX-Auto-Response-Suppress: All\r\nSubject: x\r\n", true, false },
		{ "From: a@b.test\r\nSubject: Automatic reply: your order\r\n", true, false },
		{ "From: a@b.test\r\nSubject: Out of Office: back Monday\r\n", true, false },
		{ "From: a@b.test\r\nSubject: Abwesenheitsnotiz: Urlaub\r\n", true, false },
		{ "From: a@b.test\r\nSubject: Re: out of office supplies\r\n", false, false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct inbound_msg *m = parse_headers(rows[i].headers, "text\r\n");
		CHECK_IDX(m && m->auto_reply == rows[i].auto_reply && m->list_mail == rows[i].list, i);
		mime_in_free(m);
	}
	{
		struct inbound_msg *m = parse_headers("From: Big Bug bb@bug.com\r\nSubject: s\r\n", "hello\r\n");
		CHECK(m && m->from_addr && strcmp(m->from_addr, "bb@bug.com") == 0 && m->from_loose);
		mime_in_free(m);
		m = parse_headers("From: Ann <ann@b.test>\r\nSubject: s\r\n", "hello\r\n");
		CHECK(m && m->from_addr && strcmp(m->from_addr, "ann@b.test") == 0 && !m->from_loose);
		mime_in_free(m);
		m = parse_headers("From: nobody at all\r\nSubject: s\r\n", "hello\r\n");
		CHECK(m && m->from_addr == NULL);
		mime_in_free(m);
	}
	{
		struct inbound_msg *m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\n"
		    "Content-Type: multipart/alternative; boundary=\"x\"\r\n",
		    "--x\r\nContent-Type: text/plain\r\n\r\n \r\n\r\n--x\r\nContent-Type: text/html\r\n\r\n"
		    "<p>The real answer</p>\r\n--x--\r\n");
		CHECK(m && m->text && strstr(m->text, "The real answer"));
		CHECK(m && m->reply_text && strstr(m->reply_text, "The real answer"));
		mime_in_free(m);
	}
	/* uuencode whose trailing spaces (zero bits) were lost in transit:
	 * each short line gets them back, the bytes come out whole */
	{
		static const unsigned char want[20] = "Hello, world! \0\0\0\0\0";
		struct inbound_msg *m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\n"
		    "Content-Type: multipart/mixed; boundary=\"u\"\r\n",
		    "--u\r\nContent-Type: text/plain\r\n\r\nsee the file\r\n"
		    "--u\r\nContent-Type: application/octet-stream; name=\"z.bin\"\r\n"
		    "Content-Transfer-Encoding: x-uuencode\r\n\r\n"
		    "begin 644 z.bin\r\n42&5L;&\\L('=O<FQD(2\r\n`\r\nend\r\n--u--\r\n");
		CHECK(m && m->n_attachments == 1);
		CHECK(m && m->n_attachments == 1 && m->attachments[0].len == 20 &&
		    !memcmp(m->attachments[0].data, want, 20));
		mime_in_free(m);
	}
	/* HTML replies: Gmail's quote goes with its attribution; inline
	 * answers between blockquotes stay */
	{
		struct inbound_msg *m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\n"
		    "Content-Type: text/html\r\n", "<div>Answer</div><div class=\"gmail_quote\"><div class=\"gmail_attr\">"
		    "On Mon, 1 Jan 2026, Bob &lt;b@x.test&gt; wrote:<br></div><blockquote>old text</blockquote></div>\r\n");
		CHECK(m && m->reply_text && !strcmp(m->reply_text, "Answer\n"));
		mime_in_free(m);
		m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: text/html\r\n",
		    "<p>Hi</p><blockquote>q one?</blockquote><p>answer one</p><blockquote>q two?</blockquote>"
		    "<p>answer two</p>\r\n");
		CHECK(m && m->reply_text && strstr(m->reply_text, "answer one") && strstr(m->reply_text, "answer two") &&
		    strstr(m->reply_text, "> q one?"));
		mime_in_free(m);
	}
}

/* Issue 17, items 2 and 8: no text part vanishes for its type, unnamed
 * parts are named from their type. */
static void
test_text_types(void)
{
	struct inbound_msg *m;

	/* "text" alone is text/plain */
	m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: text\r\n", "bare text type\r\n");
	CHECK(m && m->text && strstr(m->text, "bare text type"));
	mime_in_free(m);
	/* enriched text is read, its commands dropped */
	m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: text/enriched\r\n",
	    "<bold>Yes</bold>, a <<b> c\r\n");
	CHECK(m && m->text && strstr(m->text, "Yes, a <b> c"));
	mime_in_free(m);
	/* an invite is uploaded as a .ics; a split body keeps both halves; an
	 * unnamed image gets a name; the watch rendition is not a file */
	m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n",
	    "--m\r\nContent-Type: multipart/alternative; boundary=\"a\"\r\n\r\n"
	    "--a\r\nContent-Type: text/plain\r\n\r\nfirst half\r\n"
	    "--a\r\nContent-Type: text/watch-html\r\n\r\n<b>watch</b>\r\n"
	    "--a\r\nContent-Type: text/html\r\n\r\n<p>first half</p>\r\n--a--\r\n"
	    "--m\r\nContent-Type: image/png\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n"
	    "--m\r\nContent-Type: text/plain\r\n\r\nsecond half\r\n"
	    "--m\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n"
	    "--m--\r\n");
	CHECK(m && m->text && strstr(m->text, "first half") && strstr(m->text, "second half"));
	CHECK(m && m->n_notes == 0);
	CHECK(m && m->n_attachments == 2);
	CHECK(m && m->n_attachments == 2 && strcmp(m->attachments[0].filename, "image001.png") == 0 &&
	    strcmp(m->attachments[1].filename, "invite.ics") == 0);
	mime_in_free(m);
}

/* Issue 17, item 7: a forwarded message is a .eml file and a line of text */
static void
test_forwarded(void)
{
	struct inbound_msg *m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=\"f\"\r\n",
	    "--f\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
	    "--f\r\nContent-Type: message/rfc822\r\n\r\n"
	    "From: Carol <carol@c.test>\r\nSubject: Quote 42\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/mixed; boundary=\"g\"\r\n\r\n"
	    "--g\r\nContent-Type: text/plain\r\n\r\nthe quote\r\n"
	    "--g\r\nContent-Type: application/pdf; name=\"q.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERg==\r\n"
	    "--g--\r\n--f--\r\n");
	CHECK(m && m->text && strstr(m->text, "see below") && !strstr(m->text, "the quote"));
	CHECK(m && m->n_attachments == 1 && strcmp(m->attachments[0].filename, "forwarded1.eml") == 0 &&
	    strcmp(m->attachments[0].content_type, "message/rfc822") == 0 &&
	    memmem(m->attachments[0].data, m->attachments[0].len, "JVBERg==", 8));
	CHECK(m && m->n_notes == 1 && strstr(m->notes[0], "Forwarded message: Quote 42 from Carol <carol@c.test>"));
	mime_in_free(m);
}

/* Issue 17, item 1: GMime 3.2.13 drops a base64 encoded-word after a
 * padded one in the same charset; joined first, nothing is lost. */
static void
test_rfc2047(void)
{
	struct inbound_msg *m = parse_headers(
	    "From: =?UTF-8?B?w6k=?= =?UTF-8?B?SmFuZQ==?= <jane@b.test>\r\n"
	    "Subject: =?UTF-8?B?w6k=?= =?UTF-8?B?w6lsw6h2ZQ==?= and =?iso-8859-1?Q?Gr=FC?=\r\n =?iso-8859-1?Q?=DFe?=\r\n",
	    "x\r\n");
	CHECK(m && m->subject && strcmp(m->subject, "\xc3\xa9\xc3\xa9l\xc3\xa8ve and Gr\xc3\xbc\xc3\x9f" "e") == 0);
	CHECK(m && m->from_name && strcmp(m->from_name, "\xc3\xa9Jane") == 0);
	CHECK(m && m->from_addr && strcmp(m->from_addr, "jane@b.test") == 0);
	mime_in_free(m);
	/* two padded words */
	m = parse_headers("From: a@b.test\r\nSubject: =?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=\r\n", "x\r\n");
	CHECK(m && m->subject && strcmp(m->subject, "\xc3\xa9\xc3\xa9") == 0);
	mime_in_free(m);
	m = parse_headers("From: a@b.test\r\nSubject: =?UTF-8?B?ww==?= =?UTF-8?B?qQ==?=\r\n", "x\r\n");
	CHECK(m && m->subject && strcmp(m->subject, "\xc3\xa9") == 0);   /* one character split in two words */
	mime_in_free(m);
	m = parse_headers("From: a@b.test\r\nSubject: plain words, no =? encoding\r\n", "x\r\n");
	CHECK(m && m->subject && strcmp(m->subject, "plain words, no =? encoding") == 0);
	mime_in_free(m);
}

/* Issue 17, item 5: the first valid Content-Type of a header block wins
 * (GMime takes the last): never raw MIME structure as the text. */
static void
test_duplicate_content_type(void)
{
	struct inbound_msg *m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/alternative;\r\n boundary=\"d\"\r\nContent-Type: text/plain\r\n",
	    "--d\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Type: application/octet-stream\r\n\r\n"
	    "the answer\r\n--d\r\nContent-Type: text/html\r\n\r\n<p>the answer</p>\r\n--d--\r\n");
	CHECK(m && m->text && strstr(m->text, "the answer") && !strstr(m->text, "--d"));
	CHECK(m && m->html && strstr(m->html, "<p>the answer</p>"));
	CHECK(m && m->n_attachments == 0);
	mime_in_free(m);
	/* an invalid first one does not win */
	m = parse_headers("From: a@b.test\r\nMIME-Version: 1.0\r\nContent-Type: garbage\r\n"
	    "Content-Type: text/plain; charset=utf-8\r\n", "plain\r\n");
	CHECK(m && m->text && strstr(m->text, "plain"));
	mime_in_free(m);
}

/* Malformed structure from Python's email test corpus (bench/corpus.py):
 * each lost the whole body text before. */
static void
test_broken_structure(void)
{
	static const struct { const char *raw, *text, *not_text; size_t files; } rows[] = {
		/* no blank line between the headers and the body */
		{ "From: a@x.test\r\nSubject: s\r\ncounter to RFC 2822, no separating line\r\nsecond line\r\n",
		  "counter to RFC 2822, no separating line\r\nsecond line", NULL, 0 },
		/* a part's headers and its body, no blank line between */
		{ "From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n"
		  "the part's text\r\n--b--\r\n", "the part's text", NULL, 0 },
		/* a multipart without a boundary parameter */
		{ "From: a@x.test\r\nContent-Type: multipart/alternative;\r\n\r\nBlah blah blah\r\n", "Blah blah blah", NULL, 0 },
		/* delimiters that do not match the declared boundary: read with theirs */
		{ "From: a@x.test\r\nContent-Type: multipart/mixed; boundary=B_\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\n"
		  "message 1\r\n--B\r\nContent-Type: text/plain\r\n\r\nmessage 2\r\n--B--\r\n", "message 1", "--B", 0 },
		/* an inline text part with a file name is the text, not only a file */
		{ "From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n"
		  "Content-Disposition: inline; filename=\"msg.txt\"\r\n\r\na simple kind of mirror\r\n--b--\r\n",
		  "a simple kind of mirror", NULL, 0 },
		/* ... and so is a named one when there is no other text */
		{ "From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; "
		  "name=\"msg.txt\"\r\n\r\nthe text\r\n--b--\r\n", "the text", NULL, 0 },
		/* but a named text part beside the body stays a file */
		{ "From: a@x.test\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n"
		  "body\r\n--b\r\nContent-Type: text/plain; name=\"notes.txt\"\r\n\r\nfile text\r\n--b--\r\n", "body",
		  "file text", 1 },
		/* an mbox "From " line first is not the end of the headers */
		{ "From a@x.test Mon Jan  1 00:00:00 2001\r\nFrom: a@x.test\r\nSubject: s\r\n\r\nbody\r\n", "body", "Subject", 0 },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const char *refused = NULL;
		struct inbound_msg *m = mime_in_parse(rows[i].raw, strlen(rows[i].raw), 1 << 20, &refused);
		CHECK_IDX(m != NULL, i);
		if (!m)
			continue;
		CHECK_IDX(m->text && strstr(m->text, rows[i].text), i);
		CHECK_IDX(!rows[i].not_text || !m->text || !strstr(m->text, rows[i].not_text), i);
		CHECK_IDX(m->n_attachments == rows[i].files, i);
		if (!m->text || !strstr(m->text, rows[i].text) || m->n_attachments != rows[i].files)
			fprintf(stderr, "  row %zu: text %s, %zu files\n", i, m->text ? m->text : "(none)", m->n_attachments);
		mime_in_free(m);
	}
}

/* An ARF complaint (RFC 5965): told from a DSN, its returned message's
 * Message-ID and Reply-To read, its machine part neither text nor file. */
static void
test_arf(void)
{
	static const char raw[] =
	    "From: feedback@fbl.test\r\nTo: support@mail.test\r\nSubject: abuse\r\nMIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=feedback-report; boundary=\"a\"\r\n\r\n"
	    "--a\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
	    "--a\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nVersion: 1\r\n\r\n"
	    "--a\r\nContent-Type: message/rfc822\r\n\r\nFrom: s@mail.test\r\nMessage-ID: <mb.m1@mail.test>\r\n"
	    "Reply-To: <support+0123456789abcdef@mail.test>\r\nSubject: hi\r\n\r\nbody\r\n--a--\r\n";
	const char *refused = NULL;
	struct inbound_msg *m = mime_in_parse(raw, strlen(raw), 1 << 20, &refused);
	CHECK(m != NULL);
	if (!m)
		return;
	CHECK(m->is_arf && !m->is_dsn);
	CHECK(m->dsn_orig_message_id && !strcmp(m->dsn_orig_message_id, "mb.m1@mail.test"));
	CHECK(m->orig_reply_to && strstr(m->orig_reply_to, "support+0123456789abcdef@mail.test"));
	CHECK(m->n_attachments == 0);
	CHECK(m->text && strstr(m->text, "abuse report") && !strstr(m->text, "Feedback-Type"));
	mime_in_free(m);
}

static void
test_structural_limits(void)
{
	static const struct { int parts, nest, dsn; const char *refused; } rows[] = {
		{ 500, 0, 0, NULL },
		{ MIME_IN_MAX_PARTS + 1, 0, 0, "more than 1000 MIME parts" },
		{ 200000, 0, 0, "more than 1000 MIME parts" },
		{ 1, 50, 0, NULL },
		{ 1, MIME_IN_MAX_MULTIPARTS, 0, "more than 100 multipart containers" },
		{ 0, 0, 900, NULL },
		{ 0, 0, MIME_IN_MAX_DSN_RCPTS + 1, "more than 1000 recipients in a DSN" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *raw = rows[i].dsn ? make_dsn(rows[i].dsn) : make_parts(rows[i].parts, rows[i].nest);
		const char *refused = "unset";
		struct inbound_msg *m = mime_in_parse(raw, strlen(raw), 1 << 20, &refused);
		if (rows[i].refused) {
			CHECK_IDX(m == NULL && refused && strcmp(refused, rows[i].refused) == 0, i);
		} else {
			CHECK_IDX(m != NULL, i);
			CHECK_IDX(!rows[i].dsn || (m && m->n_dsn == (size_t)rows[i].dsn), i);
		}
		mime_in_free(m);
		free(raw);
	}
}

int
main(void)
{
	g_mime_init();
	/* html to text (libxml2's parser; wrap 0 unless a row says) */
	static const struct { const char *html, *text; size_t wrap; } rows[] = {
		{ "<p>Hello</p><p>World</p>", "Hello\n\nWorld\n", 0 },
		{ "a<br>b<br/>c", "a\nb\nc\n", 0 },
		{ "a<br><br>b", "a\n\nb\n", 0 },
		{ "<style>p{x}</style><p>x &amp; y &lt;z&gt; &#233;&#x20AC;</p>", "x & y <z> \xc3\xa9\xe2\x82\xac\n", 0 },
		/* every HTML 4 entity, not a list of 16 */
		{ "Caf&eacute; &uuml;ber &pound;5 &hellip; &nbsp;x", "Caf\xc3\xa9 \xc3\xbc" "ber \xc2\xa3" "5 \xe2\x80\xa6 x\n", 0 },
		{ "<ul><li>one</li><li>two</li></ul>", "- one\n- two\n", 0 },
		{ "<ol><li>one</li><li>two</li></ol>", "1. one\n2. two\n", 0 },
		{ "  lots   of\n\n spaces ", "lots of spaces\n", 0 },
		{ "<div>unclosed <b", "unclosed\n", 0 },
		{ "&bogus; &#0;", "&bogus;\n", 0 },   /* an unknown entity stays; a NUL reference goes */
		/* links keep their URL, once */
		{ "see <a href=\"https://x.test/p?q=1\">the page</a>.", "see the page <https://x.test/p?q=1>.\n", 0 },
		{ "<a href=\"https://x.test/\">https://x.test/</a>", "https://x.test/\n", 0 },
		{ "<a href=\"mailto:a@x.test\">a@x.test</a>", "a@x.test\n", 0 },
		{ "<a href=\"javascript:alert(1)\">click</a>", "click\n", 0 },
		{ "<p>reply</p><blockquote><p>quoted</p><p>more</p></blockquote>", "reply\n\n> quoted\n>\n> more\n", 0 },
		{ "<table><tr><td>a</td><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>", "a  b\nc  d\n", 0 },
		{ "<pre>  x\n  y</pre>", "  x\n  y\n", 0 },
		{ "<head><title>T</title></head><body>b<script>s()</script></body>", "b\n", 0 },
		{ "<img src=\"x.png\" alt=\"logo\"> hi", "[logo] hi\n", 0 },
		{ "", "\n", 0 },
		/* wrapped at spaces for the text part of outbound mail */
		{ "<p>one two three four five six</p>", "one two\nthree four\nfive six\n", 10 },
		{ "<p>averyveryverylongword x</p>", "averyveryverylongword\nx\n", 10 },
	};
	/* past libxml2's tree depth (256) the text stays, flat, and a script
	 * still goes; the tree builder used to stop the parse there */
	{
		char *deep = malloc(300 * 11 + 64), *p = deep, *t;
		for (int i = 0; i < 300; i++)
			p += sprintf(p, "<div>");
		sprintf(p, "deep <script>s()</script>words");
		t = html_text(deep, 0);
		CHECK(strcmp(t, "deep words\n") == 0);
		free(t);
		/* a cell after a sibling, where the walk's stack of open elements
		 * has just grown (it starts at 16) */
		p = deep;
		for (int i = 0; i < 16; i++)
			p += sprintf(p, "<div>");
		sprintf(p, "<span>x</span><td>y</td>");
		t = html_text(deep, 0);
		CHECK(strcmp(t, "x  y\n") == 0);
		free(t);
		free(deep);
	}
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *t = html_text(rows[i].html, rows[i].wrap);
		CHECK_IDX(strcmp(t, rows[i].text) == 0, i);
		if (strcmp(t, rows[i].text) != 0)
			fprintf(stderr, "  got '%s'\n", t);
		free(t);
	}

	/* the sender's own words of a plain-text reply */
	static const struct { const char *in, *out; } replies[] = {
		/* top-posted: the quote and its attribution go */
		{ "Thanks!\n\nOn Mon, 1 Jan 2026, Bob <b@x.test> wrote:\n> hello\n> there\n", "Thanks!\n" },
		/* wrapped attribution */
		{ "Yes.\n\nOn Mon, 1 Jan 2026 at 10:00, Bob Someone\n<b@x.test> wrote:\n> q\n", "Yes.\n" },
		/* an attribution that does not start with On (the review's case) */
		{ "Sure.\nMarc Slemko wrote:\n> can you?\n", "Sure.\n" },
		/* inline answers stay, with what they answer; only the trailing quote goes */
		{ "Hi,\n> first question?\nfirst answer\n> second question?\nsecond answer\n> old signature\n",
		  "Hi,\n> first question?\nfirst answer\n> second question?\nsecond answer\n" },
		/* localized attributions */
		{ "Ja.\n\nAm 01.01.2026 um 10:00 schrieb Bob <b@x.test>:\n> Frage\n", "Ja.\n" },
		{ "Oui.\n\nLe lun. 1 janv. 2026 \xc3\xa0 10:00, Bob <b@x.test> a \xc3\xa9" "crit :\n> question\n", "Oui.\n" },
		{ "S\xc3\xad.\n\nEl lun, 1 ene 2026 a las 10:00, Bob (<b@x.test>) escribi\xc3\xb3:\n> pregunta\n", "S\xc3\xad.\n" },
		{ "Sim.\n\nEm seg., 1 de jan. de 2026 \xc3\xa0s 10:00, Bob <b@x.test> escreveu:\n> pergunta\n", "Sim.\n" },
		{ "Ja.\n\nOp ma 1 jan. 2026 om 10:00 schreef Bob <b@x.test>:\n> vraag\n", "Ja.\n" },
		/* Outlook's header block, and its localized form, with no quoting */
		{ "See below.\n\nFrom: Bob <b@x.test>\nSent: Monday, January 1, 2026 10:00\nTo: Amy\nSubject: x\n\nold\n",
		  "See below.\n" },
		{ "Siehe unten.\n\nVon: Bob <b@x.test>\nGesendet: Montag, 1. Januar 2026 10:00\nAn: Amy\n\nalt\n",
		  "Siehe unten.\n" },
		{ "ok\n-----Original Message-----\nFrom: x\n", "ok\n" },
		{ "fyi\n\n---------- Forwarded message ---------\nFrom: x\n", "fyi\n" },
		/* nothing of the sender's above the quote: all of it is kept */
		{ "> only a quote\n", "> only a quote\n" },
		{ "On Mon, Bob wrote:\n> only a quote\n", "On Mon, Bob wrote:\n> only a quote\n" },
		/* a colon line that is no attribution stays */
		{ "Here is the list:\n> item\nthat was it\n", "Here is the list:\n> item\nthat was it\n" },
		{ "plain text, no quote\n", "plain text, no quote\n" },
	};
	for (size_t i = 0; i < sizeof(replies) / sizeof(replies[0]); i++) {
		char *t = mime_in_reply_text(replies[i].in);
		CHECK_IDX(strcmp(t, replies[i].out) == 0, i);
		if (strcmp(t, replies[i].out) != 0)
			fprintf(stderr, "  got '%s'\n", t);
		free(t);
	}

	/* render and parse back */
	{
		struct addr from = { "Jürgen Bridge", "j@x.test" };
		struct addr to[2] = { { NULL, "a@b.test" }, { "Doe, Jane", "jane@b.test" } };
		struct addr cc[1] = { { NULL, "c@b.test" } };
		char *longline = malloc(3000);
		memset(longline, 'y', 2999);
		longline[2999] = '\0';
		char *html;
		if (asprintf(&html, "<p>Grüße from mailbridge</p><p>%s</p>", longline) < 0)
			abort();
		struct mime_attachment att = { "report €.pdf", "application/pdf", "%PDF-1.4\0\x01\x02\xff", 13, 0 };
		struct mime_out m = {
			.from = &from, .reply_to = "reply+abc@x.test", .to = to, .n_to = 2, .cc = cc, .n_cc = 1,
			.subject = "Ünïcödé subject", .html = html, .message_id = "mb.M1@x.test",
			.in_reply_to = "<parent@x.test>", .references = "<root@x.test> <parent@x.test>",
			.job_header = "M1", .date_ms = 1700000000000LL, .attachments = &att, .n_attachments = 1,
		};
		size_t len;
		char *raw = mime_out_render(&m, &len);
		GMimeMessage *pm;

		/* wire form: CRLF everywhere, no line over 998, no raw 8-bit, no Bcc */
		size_t linelen = 0;
		bool bare_lf = false, eight_bit = false;
		for (size_t i = 0; i < len; i++) {
			if (raw[i] == '\n') {
				if (i == 0 || raw[i - 1] != '\r')
					bare_lf = true;
				CHECK_IDX(linelen <= 998, i);
				linelen = 0;
			} else {
				linelen++;
			}
			if ((unsigned char)raw[i] >= 0x80)
				eight_bit = true;
		}
		CHECK(!bare_lf && !eight_bit);
		CHECK(strstr(raw, "Bcc") == NULL);
		CHECK(strstr(raw, "Message-Id: <mb.M1@x.test>") || strstr(raw, "Message-ID: <mb.M1@x.test>"));
		CHECK(strstr(raw, "X-Mailbridge-Job: M1") != NULL);

		pm = parse(raw, len);
		CHECK(pm != NULL);
		if (pm) {
			InternetAddressList *l = g_mime_message_get_to(pm);
			CHECK(internet_address_list_length(l) == 2);
			CHECK(strcmp(internet_address_get_name(internet_address_list_get_address(l, 1)), "Doe, Jane") == 0);
			CHECK(strcmp(g_mime_message_get_subject(pm), "Ünïcödé subject") == 0);
			CHECK(strcmp(internet_address_get_name(internet_address_list_get_address(
			    g_mime_message_get_from(pm), 0)), "Jürgen Bridge") == 0);
			CHECK(strcmp(g_mime_message_get_message_id(pm), "mb.M1@x.test") == 0);
			CHECK(strcmp(g_mime_object_get_header(GMIME_OBJECT(pm), "In-Reply-To"), "<parent@x.test>") == 0);
			GMimeObject *body = g_mime_message_get_mime_part(pm);
			CHECK(GMIME_IS_MULTIPART(body));
			if (GMIME_IS_MULTIPART(body)) {
				GMimeMultipart *mixed = GMIME_MULTIPART(body);
				CHECK(g_mime_multipart_get_count(mixed) == 2);
				GMimeObject *alt = g_mime_multipart_get_part(mixed, 0);
				CHECK(GMIME_IS_MULTIPART(alt) && g_mime_multipart_get_count(GMIME_MULTIPART(alt)) == 2);
				GMimeTextPart *plain = GMIME_TEXT_PART(g_mime_multipart_get_part(GMIME_MULTIPART(alt), 0));
				char *text = g_mime_text_part_get_text(plain);
				CHECK(strstr(text, "Grüße from mailbridge") != NULL);
				if (!strstr(text, "Grüße")) fprintf(stderr, "text: %.200s\n", text);
				CHECK(strstr(text, longline) != NULL);
				g_free(text);
				GMimePart *ap = GMIME_PART(g_mime_multipart_get_part(mixed, 1));
				CHECK(strcmp(g_mime_part_get_filename(ap), "report €.pdf") == 0);
				GMimeStream *out = g_mime_stream_mem_new();
				g_mime_data_wrapper_write_to_stream(g_mime_part_get_content(ap), out);
				GByteArray *bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out));
				CHECK(bytes->len == 13 && memcmp(bytes->data, att.data, 13) == 0);
				g_object_unref(out);
			}
			g_object_unref(pm);
		}
		free(raw);
		free(html);
		free(longline);
	}
	test_structural_limits();
	test_broken_structure();
	test_arf();
	test_classes();
	test_text_types();
	test_forwarded();
	test_rfc2047();
	test_duplicate_content_type();
	g_mime_shutdown();
	return test_done("test_mime");
}
