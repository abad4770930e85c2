/* html_text: HTML to plain text (see html_text.h). libxml2's HTMLparser
 * builds the tree; this walks it. */
#include "html_text.h"
#include "util.h"

#include <libxml/HTMLparser.h>
#include <libxml/tree.h>
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
is(const xmlNode *n, const char *name)
{
	return n->name && !strcasecmp((const char *)n->name, name);
}

static bool
is_any(const xmlNode *n, const char *const *names)
{
	for (; *names; names++)
		if (is(n, *names))
			return true;
	return false;
}

static const char *const blocks[] = {
	"div", "ul", "ol", "dl", "dt", "dd", "table", "tr", "pre", "address", "section", "article", "header",
	"footer", "nav", "aside", "center", "form", "fieldset", "figure", "figcaption", "main", "li", NULL,
};
static const char *const spaced[] = { "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "hr", NULL };
static const char *const dropped[] = { "head", "script", "style", "title", "template", "noscript", NULL };

static void walk(struct out *o, const xmlNode *n, int depth, bool pre);

static void
walk_children(struct out *o, const xmlNode *n, int depth, bool pre)
{
	for (const xmlNode *c = n->children; c; c = c->next)
		walk(o, c, depth + 1, pre);
}

/* The URL of a link, when it tells more than the link's own text. */
static void
link_target(struct out *o, const xmlNode *a, size_t text_from)
{
	xmlChar *href = xmlGetProp(a, (const xmlChar *)"href");
	const char *h = (const char *)href;

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
	xmlFree(href);
}

static void
walk(struct out *o, const xmlNode *n, int depth, bool pre)
{
	if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
		if (n->content)
			put_text(o, (const char *)n->content, pre);
		return;
	}
	if (n->type != XML_ELEMENT_NODE || depth > HTML_TEXT_MAX_DEPTH) {
		if (n->type == XML_ELEMENT_NODE || n->type == XML_DOCUMENT_NODE || n->type == XML_HTML_DOCUMENT_NODE)
			walk_children(o, n, depth, pre);
		return;
	}
	if (is_any(n, dropped))
		return;
	if (is(n, "br")) {
		note_break(o);
		o->pending_breaks++;      /* two in a row: a blank line */
		o->space = false;
		return;
	}
	if (is(n, "td") || is(n, "th")) {
		const xmlNode *prev = n->prev;
		while (prev && prev->type != XML_ELEMENT_NODE)
			prev = prev->prev;
		if (prev && o->len > 0 && !o->pending_breaks) {
			put(o, "  ", 2);
			o->col += 2;
			o->space = false;
		}
		walk_children(o, n, depth, pre);
		return;
	}
	if (is(n, "a")) {
		size_t from = o->len;
		walk_children(o, n, depth, pre);
		link_target(o, n, from);
		return;
	}
	if (is(n, "img")) {
		xmlChar *alt = xmlGetProp(n, (const xmlChar *)"alt");
		if (alt && *alt) {
			char *t = xasprintf("[%s]", (const char *)alt);
			put_text(o, t, false);
			free(t);
		}
		xmlFree(alt);
		return;
	}
	if (is_any(n, spaced)) {
		want_breaks(o, 2);
		if (is(n, "blockquote"))
			o->quote++;
		if (is(n, "hr"))
			put_word(o, "----", 4);
		walk_children(o, n, depth, pre);
		if (is(n, "blockquote"))
			o->quote--;
		want_breaks(o, 2);
		return;
	}
	if (is_any(n, blocks)) {
		want_breaks(o, 1);
		if (is(n, "li")) {
			char mark[16] = "-";
			if (n->parent && is(n->parent, "ol")) {
				int k = 1;
				for (const xmlNode *s = n->prev; s; s = s->prev)
					if (s->type == XML_ELEMENT_NODE && is(s, "li"))
						k++;
				snprintf(mark, sizeof(mark), "%d.", k);
			}
			put_word(o, mark, strlen(mark));
			o->space = true;
		}
		walk_children(o, n, depth, pre || is(n, "pre"));
		want_breaks(o, 1);
		return;
	}
	walk_children(o, n, depth, pre);
}

char *
html_text(const char *html, size_t wrap)
{
	struct out o = { .wrap = wrap };
	htmlDocPtr doc = NULL;
	size_t n = html ? strlen(html) : 0;

	if (n > 0 && n < (size_t)INT32_MAX)
		doc = htmlReadMemory(html, (int)n, NULL, "UTF-8",
		    HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING | HTML_PARSE_NONET);
	if (doc)
		walk(&o, (const xmlNode *)doc, 0, false);
	xmlFreeDoc(doc);
	/* no trailing blanks on a line, one newline at the end */
	{
		char *r = xmalloc(o.len + 2), *w = r;
		for (size_t i = 0; i < o.len; i++) {
			if (o.p[i] == '\n')
				while (w > r && w[-1] == ' ')
					w--;
			*w++ = o.p[i];
		}
		while (w > r && (w[-1] == ' ' || w[-1] == '\n'))
			w--;
		*w++ = '\n';
		*w = '\0';
		free(o.p);
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
