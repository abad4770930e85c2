/* html_text: HTML to plain text (see html_text.h), walking the document
 * as libxml2's HTMLparser reports it (SAX), with no tree built: on the
 * bench's 10 KB HTML 265-294 us a call, against 314-382 with the tree. */
#include "html_text.h"
#include "util.h"

#include <libxml/HTMLparser.h>
#include <libxml/parserInternals.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTML_TEXT_MAX_DEPTH 200    /* deeper markup still gives its text, flat */

struct out {
	char *p;
	size_t len, cap;
	size_t col;                /* columns on the current line, prefix included */
	int quote;                 /* blockquote depth: "> " per level at line starts */
	int pending_breaks;        /* line breaks owed before the next text */
	int break_quote;           /* the shallowest quote depth since they were owed */
	bool space;                /* a space owed before the next word */
	size_t wrap;
};

static void
put(struct out *o, const char *s, size_t n)
{
	if (o->len + n + 1 > o->cap) {
		o->cap = (o->len + n + 1) * 2;
		o->p = xrealloc(o->p, o->cap);
	}
	memcpy(o->p + o->len, s, n);
	o->len += n;
	o->p[o->len] = '\0';
}

static void
line_start_at(struct out *o, int quote)
{
	o->col = 0;
	for (int i = 0; i < quote; i++) {
		put(o, "> ", 2);
		o->col += 2;
	}
}

static void
line_start(struct out *o)
{
	line_start_at(o, o->quote);
}

/* The breaks owed: at most one blank line, none at the very start. */
static void
flush_breaks(struct out *o)
{
	int n = o->pending_breaks > 2 ? 2 : o->pending_breaks;

	if (o->len == 0)
		n = 0;
	for (int i = 0; i < n; i++) {
		if (i > 0)        /* a blank line between quotes is ">" (its space trimmed at the end) */
			line_start_at(o, o->quote < o->break_quote ? o->quote : o->break_quote);
		put(o, "\n", 1);
	}
	if (n > 0 || o->len == 0)
		line_start(o);
	o->pending_breaks = 0;
	o->space = false;
}

static void
note_break(struct out *o)
{
	if (o->pending_breaks == 0 || o->quote < o->break_quote)
		o->break_quote = o->quote;
}

static void
want_breaks(struct out *o, int n)
{
	note_break(o);
	if (o->pending_breaks < n)
		o->pending_breaks = n;
}

/* UTF-8 columns (not bytes) */
static size_t
columns(const char *s, size_t n)
{
	size_t c = 0;
	for (size_t i = 0; i < n; i++)
		if (((unsigned char)s[i] & 0xC0) != 0x80)
			c++;
	return c;
}

/* One word (no spaces), wrapped when it would pass the margin. */
static void
put_word(struct out *o, const char *w, size_t n)
{
	size_t cols = columns(w, n);

	if (o->pending_breaks)
		flush_breaks(o);
	else if (o->len == 0)
		line_start(o);
	if (o->space) {
		if (o->wrap && o->col + 1 + cols > o->wrap && o->col > (size_t)o->quote * 2) {
			put(o, "\n", 1);
			line_start(o);
		} else {
			put(o, " ", 1);
			o->col++;
		}
	}
	o->space = false;
	put(o, w, n);
	o->col += cols;
}

/* Text as HTML renders it: runs of white space are one space. */
static void
put_text(struct out *o, const char *t, bool pre)
{
	while (*t) {
		size_t n;
		if (pre && *t == '\n') {
			want_breaks(o, 1);
			flush_breaks(o);
			t++;
			continue;
		}
		/* U+00A0 (nbsp) is a space here */
		if (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r' || *t == '\f' ||
		    ((unsigned char)t[0] == 0xC2 && (unsigned char)t[1] == 0xA0)) {
			t += (unsigned char)*t == 0xC2 ? 2 : 1;
			if (pre) {
				if (o->pending_breaks)
					flush_breaks(o);
				put(o, " ", 1);
				o->col++;
			} else if (o->len > 0) {
				o->space = true;
			}
			continue;
		}
		for (n = 0; t[n] && t[n] != ' ' && t[n] != '\t' && t[n] != '\n' && t[n] != '\r' && t[n] != '\f' &&
		    !((unsigned char)t[n] == 0xC2 && (unsigned char)t[n + 1] == 0xA0); n++)
			;
		put_word(o, t, n);
		t += n;
	}
}

static bool
is(const char *name, const char *want)
{
	return name && !strcasecmp(name, want);
}

static bool
is_any(const char *name, const char *const *names)
{
	for (; *names; names++)
		if (is(name, *names))
			return true;
	return false;
}

static const char *const blocks[] = {
	"div", "ul", "ol", "dl", "dt", "dd", "table", "tr", "pre", "address", "section", "article", "header",
	"footer", "nav", "aside", "center", "form", "fieldset", "figure", "figcaption", "main", "li", NULL,
};
static const char *const spaced[] = { "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "hr", NULL };
static const char *const dropped[] = { "head", "script", "style", "title", "template", "noscript", NULL };

/* What an open element does, and what its end undoes. */
enum kind { K_PLAIN, K_DROPPED, K_LINK, K_SPACED, K_BLOCK };

struct frame {
	enum kind kind;
	bool pre;                  /* its text as written (inside <pre>) */
	bool quote;                /* a <blockquote>: one quote level */
	int elements;              /* element children so far */
	int items;                 /* <li> children so far */
	bool ol;                   /* an <ol>: its items are numbered */
	size_t text_from;          /* K_LINK: where its text starts in the output */
	char *href;                /* K_LINK */
};

/* The walk, as libxml2's HTML parser reports the document (SAX): the same
 * events its tree builder gets, so the same elements, implied and closed
 * alike, without building the tree. Text is gathered until the next
 * element or comment, as the tree builder joins it into one node. */
struct walk {
	struct out o;
	struct frame *stack;
	int depth, cap;            /* open elements; the document is depth 0 */
	int dropped;               /* open elements inside a dropped one, itself included */
	char *text;
	size_t text_len, text_cap;
};

static struct frame *
top(struct walk *w)
{
	return w->depth > 0 ? &w->stack[w->depth - 1] : NULL;
}

static void
text_flush(struct walk *w)
{
	struct frame *f = top(w);

	if (w->text_len == 0)
		return;
	w->text[w->text_len] = '\0';
	if (!w->dropped)
		put_text(&w->o, w->text, f && f->pre);
	w->text_len = 0;
}

static void
on_text(void *ctx, const xmlChar *ch, int len)
{
	struct walk *w = ctx;

	if (len <= 0 || w->dropped)
		return;
	if (w->text_len + (size_t)len + 1 > w->text_cap) {
		w->text_cap = (w->text_len + (size_t)len + 1) * 2;
		w->text = xrealloc(w->text, w->text_cap);
	}
	memcpy(w->text + w->text_len, ch, (size_t)len);
	w->text_len += (size_t)len;
}

static void
on_comment(void *ctx, const xmlChar *value)
{
	(void)value;
	text_flush(ctx);
}

static const char *
attr(const xmlChar **atts, const char *name)
{
	for (int i = 0; atts && atts[i]; i += 2)
		if (!strcasecmp((const char *)atts[i], name))
			return atts[i + 1] ? (const char *)atts[i + 1] : "";
	return NULL;
}

/* The URL of a link, when it tells more than the link's own text. */
static void
link_target(struct out *o, const char *h, size_t text_from)
{
	if (h && (!strncasecmp(h, "http://", 7) || !strncasecmp(h, "https://", 8) || !strncasecmp(h, "mailto:", 7))) {
		const char *shown = !strncasecmp(h, "mailto:", 7) ? h + 7 : h;
		/* the text already is the address: say it once */
		if (!strstr(o->p ? o->p + text_from : "", shown)) {
			char *t = xasprintf("<%s>", shown);
			o->space = o->len > text_from;
			put_word(o, t, strlen(t));
			free(t);
		}
	}
}

static void
on_start(void *ctx, const xmlChar *tag, const xmlChar **atts)
{
	struct walk *w = ctx;
	struct out *o = &w->o;
	struct frame *parent, *f;
	const char *name = (const char *)tag;
	bool after_element;

	text_flush(w);
	if (w->depth == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 16;
		w->stack = xrealloc(w->stack, (size_t)w->cap * sizeof(*w->stack));
	}
	/* taken after the stack may have moved */
	parent = top(w);
	after_element = parent && parent->elements > 0;
	if (parent) {
		parent->elements++;
		if (is(name, "li"))
			parent->items++;
	}
	f = &w->stack[w->depth++];
	*f = (struct frame){ .kind = K_PLAIN, .pre = parent && parent->pre, .ol = is(name, "ol") };
	if (w->dropped) {
		w->dropped++;
		return;
	}
	if (is_any(name, dropped)) {
		f->kind = K_DROPPED;
		w->dropped = 1;
	} else if (w->depth > HTML_TEXT_MAX_DEPTH) {
		/* deeper markup still gives its text, flat (scripts still go) */
	} else if (is(name, "br")) {
		note_break(o);
		o->pending_breaks++;      /* two in a row: a blank line */
		o->space = false;
	} else if (is(name, "td") || is(name, "th")) {
		if (after_element && o->len > 0 && !o->pending_breaks) {
			put(o, "  ", 2);
			o->col += 2;
			o->space = false;
		}
	} else if (is(name, "a")) {
		const char *href = attr(atts, "href");
		f->kind = K_LINK;
		f->text_from = o->len;
		f->href = href ? xstrdup(href) : NULL;
	} else if (is(name, "img")) {
		const char *alt = attr(atts, "alt");
		if (alt && *alt) {
			char *t = xasprintf("[%s]", alt);
			put_text(o, t, false);
			free(t);
		}
		/* its content, if the parser gave it any, is not shown */
		f->kind = K_DROPPED;
		w->dropped = 1;
	} else if (is_any(name, spaced)) {
		f->kind = K_SPACED;
		want_breaks(o, 2);
		if (is(name, "blockquote")) {
			f->quote = true;
			o->quote++;
		}
		if (is(name, "hr"))
			put_word(o, "----", 4);
	} else if (is_any(name, blocks)) {
		f->kind = K_BLOCK;
		want_breaks(o, 1);
		if (is(name, "li")) {
			char mark[16] = "-";
			if (parent && parent->ol)
				snprintf(mark, sizeof(mark), "%d.", parent->items);
			put_word(o, mark, strlen(mark));
			o->space = true;
		}
		if (is(name, "pre"))
			f->pre = true;
	}
}

static void
on_end(void *ctx, const xmlChar *tag)
{
	struct walk *w = ctx;
	struct frame *f = top(w);

	(void)tag;
	text_flush(w);
	if (!f)
		return;
	if (w->dropped)
		w->dropped--;
	else if (f->kind == K_LINK)
		link_target(&w->o, f->href, f->text_from);
	else if (f->kind == K_SPACED || f->kind == K_BLOCK) {
		if (f->quote)
			w->o.quote--;
		want_breaks(&w->o, f->kind == K_SPACED ? 2 : 1);
	}
	free(f->href);
	w->depth--;
}

char *
html_text(const char *html, size_t wrap)
{
	struct walk w = { .o = { .wrap = wrap } };
	struct out *o = &w.o;
	size_t n = html ? strlen(html) : 0;

	if (n > 0 && n < (size_t)INT32_MAX) {
		htmlParserCtxtPtr ctxt = htmlCreateMemoryParserCtxt(html, (int)n);
		xmlCharEncodingHandlerPtr utf8 = xmlFindCharEncodingHandler("UTF-8");
		if (ctxt) {
			xmlSAXHandler sax = { .startElement = on_start, .endElement = on_end, .characters = on_text,
				.cdataBlock = on_text, .comment = on_comment, .initialized = 1 };
			*ctxt->sax = sax;
			ctxt->userData = &w;
			if (utf8)
				xmlSwitchToEncoding(ctxt, utf8);
			htmlCtxtUseOptions(ctxt, HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
			    HTML_PARSE_NONET);
			htmlParseDocument(ctxt);
			text_flush(&w);
			/* elements left open: the parser closes them all at the end,
			 * unless it stopped early (libxml2 halts on some errors),
			 * and then their frames (a link's URL) are still ours */
			while (w.depth > 0)
				on_end(&w, NULL);
			htmlFreeParserCtxt(ctxt);
		}
	}
	free(w.text);
	free(w.stack);
	/* no trailing blanks on a line, one newline at the end */
	{
		char *r = xmalloc(o->len + 2), *p = r;
		for (size_t i = 0; i < o->len; i++) {
			if (o->p[i] == '\n')
				while (p > r && p[-1] == ' ')
					p--;
			*p++ = o->p[i];
		}
		while (p > r && (p[-1] == ' ' || p[-1] == '\n'))
			p--;
		*p++ = '\n';
		*p = '\0';
		free(o->p);
		return r;
	}
}

void
html_text_init(void)
{
	xmlInitParser();
}

void
html_text_deinit(void)
{
	xmlCleanupParser();
}
