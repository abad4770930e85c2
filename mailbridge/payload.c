#include "payload.h"
#include "config.h"
#include "util.h"

#include <cjson/cJSON.h>
#include <glib.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The body is parsed with cJSON, not jansson (which the rest of mailbridge
 * uses for HighLevel's answers): on the bench's 10.5 KB payload jansson
 * took 240-280 us, a byte at a time through its lexer, and cJSON 20-26 us;
 * each outbound message is parsed at the webhook and often again by its
 * sender. cJSON leaves to its caller what jansson refused by itself:
 * invalid UTF-8, raw control characters, bad or zero backslash-u escapes
 * (cJSON would end the string there: text silently cut) and duplicate
 * keys. body_error() and has_duplicate_key() refuse them. What cJSON
 * still accepts and jansson did not is harmless here: numbers beyond
 * 64 bits and leading zeros (no number is read), a byte-order mark. */

struct pctx {
	cJSON *root;
	const char *error;
	const char *field;
};

static int
fail(struct pctx *c, const char *field, const char *error)
{
	c->field = field;
	c->error = error;
	return -1;
}

/* What JSON forbids in the raw text and cJSON lets through, or NULL: a
 * byte that is not UTF-8 (a NUL included), a control character inside a
 * string (outside one only tab, CR and LF), a backslash-u escape without
 * four hex digits (cJSON reads it as U+0000) or with 0000 (where cJSON's
 * string ends). Strings are told from the rest only by their quotes and
 * backslashes; what else is wrong is cJSON's to find. */
static const char *
body_error(const char *body, size_t len)
{
	/* the bytes that end a run of plain text: quote, backslash, controls */
	static const bool stop[256] = {
		[0x00 ... 0x1f] = true, ['"'] = true, ['\\'] = true,
	};
	const unsigned char *b = (const unsigned char *)body;
	bool in_string = false;

	if (!g_utf8_validate_len(body, len, NULL))
		return "malformed JSON: not UTF-8, or a NUL byte";
	for (size_t i = 0; i < len; i++) {
		while (i < len && !stop[b[i]])
			i++;
		if (i == len)
			break;
		if (b[i] < 0x20 && (in_string || (b[i] != '\t' && b[i] != '\n' && b[i] != '\r')))
			return "malformed JSON: a raw control character";
		if (b[i] == '"') {
			in_string = !in_string;
		} else if (b[i] == '\\' && in_string && i + 1 < len) {
			if (b[++i] != 'u')
				continue;
			for (size_t k = 1; k <= 4; k++)
				if (i + k >= len || !g_ascii_isxdigit(b[i + k]))
					return "malformed JSON: a \\u escape without four hex digits";
			if (!memcmp(b + i + 1, "0000", 4))
				return "malformed JSON: \\u0000 in a string";
			i += 4;
		}
	}
	return NULL;
}

static int
key_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A key given twice in any object of v: sorted, O(n log n), since a
 * stranger chooses n. Recursion is bounded by cJSON's nesting limit. */
static bool
has_duplicate_key(const cJSON *v)
{
	const cJSON *e;
	size_t n = 0, i = 0;
	bool dup = false;

	cJSON_ArrayForEach(e, v) {
		if ((cJSON_IsObject(e) || cJSON_IsArray(e)) && has_duplicate_key(e))
			return true;
		n++;
	}
	if (!cJSON_IsObject(v) || n < 2)
		return false;
	const char **keys = xcalloc(n, sizeof(*keys));
	cJSON_ArrayForEach(e, v)
		keys[i++] = e->string;
	qsort(keys, n, sizeof(*keys), key_cmp);
	for (i = 1; i < n && !dup; i++)
		dup = strcmp(keys[i - 1], keys[i]) == 0;
	free(keys);
	return dup;
}

/* The body's single JSON value, or NULL with *error_r set. */
static cJSON *
body_parse(const char *body, size_t len, const char **error_r)
{
	const char *end = NULL;
	cJSON *root;

	if (len == 0) {
		*error_r = "malformed JSON: an empty body";
		return NULL;
	}
	if ((*error_r = body_error(body, len)))
		return NULL;
	root = cJSON_ParseWithLengthOpts(body, len, &end, false);
	if (!root) {
		*error_r = "malformed JSON";
		return NULL;
	}
	/* only whitespace may follow the value (no control byte is left) */
	while (end < body + len && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
		end++;
	if (end != body + len)
		*error_r = "malformed JSON: text after the value";
	else if (has_duplicate_key(root))
		*error_r = "malformed JSON: a duplicate key";
	else
		return root;
	cJSON_Delete(root);
	return NULL;
}

/* Optional string field. header = must not carry CR/LF/NUL. */
static int
get_str(struct pctx *c, const char *key, bool required, bool header, size_t max, char **out)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);
	const char *s;
	size_t len;

	*out = NULL;
	if (!v || cJSON_IsNull(v))
		return required ? fail(c, key, "missing required field") : 0;
	if (!cJSON_IsString(v))
		return fail(c, key, "must be a string");
	s = v->valuestring;
	len = strlen(s);                /* \u0000 was refused with the body */
	if (required && len == 0)
		return fail(c, key, "must not be empty");
	if (max && len > max)
		return fail(c, key, "too long");
	if (header && has_header_break(s, len))
		return fail(c, key, "contains CR, LF or NUL");
	*out = xstrdup(s);
	return 0;
}

static int
get_id(struct pctx *c, const char *key, bool required, char **out)
{
	if (get_str(c, key, required, true, PAYLOAD_MAX_ID, out) < 0)
		return -1;
	if (*out)
		for (const char *p = *out; *p; p++)
			if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') &&
			    !(*p >= '0' && *p <= '9') && *p != '_' && *p != '-')
				return fail(c, key, "must be letters, digits, '-' or '_'");
	return 0;
}

static int
add_addr(struct pctx *c, const char *key, const char *s, struct addr **list, size_t *n)
{
	struct addr a;

	if (*n >= PAYLOAD_MAX_RCPTS)
		return fail(c, key, "too many addresses");
	if (has_header_break(s, strlen(s)))
		return fail(c, key, "contains CR, LF or NUL");
	if (config_parse_mailbox(s, &a.name, &a.addr) < 0)
		return fail(c, key, "not a valid email address");
	*list = xrealloc(*list, (*n + 1) * sizeof(**list));
	(*list)[(*n)++] = a;
	return 0;
}

/* HighLevel sends emailTo as an array in its example and a string in its
 * schema: accept both, and a comma-separated string too. */
static int
get_addrs(struct pctx *c, const char *key, bool required, struct addr **list, size_t *n)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, key);

	if (!v || cJSON_IsNull(v) || (cJSON_IsString(v) && !*v->valuestring) || (cJSON_IsArray(v) && !v->child))
		return required ? fail(c, key, "missing required field") : 0;
	if (cJSON_IsString(v)) {
		const char *s = v->valuestring;
		/* a display name may hold a comma only when quoted; split outside quotes */
		char *copy = xstrdup(s), *start = copy;
		bool quoted = false;
		int r = 0;
		for (char *p = copy;; p++) {
			if (*p == '"')
				quoted = !quoted;
			if ((*p == ',' && !quoted) || *p == '\0') {
				char end = *p;
				*p = '\0';
				while (*start == ' ')
					start++;
				if (*start && (r = add_addr(c, key, start, list, n)) < 0)
					break;
				if (!end)
					break;
				start = p + 1;
			}
		}
		free(copy);
		return r;
	}
	if (cJSON_IsArray(v)) {
		const cJSON *e;
		cJSON_ArrayForEach(e, v) {
			if (!cJSON_IsString(e))
				return fail(c, key, "must be an array of strings");
			if (add_addr(c, key, e->valuestring, list, n) < 0)
				return -1;
		}
		return 0;
	}
	return fail(c, key, "must be a string or an array of strings");
}

static int
get_attachments(struct pctx *c, struct payload *p)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(c->root, "attachments"), *e;
	int n;

	if (!v || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsArray(v))
		return fail(c, "attachments", "must be an array of URLs");
	if ((n = cJSON_GetArraySize(v)) > PAYLOAD_MAX_ATTACH)
		return fail(c, "attachments", "too many attachments");
	p->attachments = xcalloc((size_t)n + 1, sizeof(char *));
	cJSON_ArrayForEach(e, v) {
		const char *s = cJSON_IsString(e) ? e->valuestring : NULL;
		if (!s || strlen(s) > PAYLOAD_MAX_URL ||
		    has_header_break(s, strlen(s)) || strpbrk(s, " \t"))
			return fail(c, "attachments", "must be an array of URLs");
		if (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0)
			return fail(c, "attachments", "only http and https URLs are fetched");
		p->attachments[p->n_attachments++] = xstrdup(s);
	}
	return 0;
}

static int
payload_email(struct pctx *c, struct payload *p)
{
	char *from = NULL;

	if (get_str(c, "emailFrom", false, true, 512, &from) < 0)
		return -1;
	if (from && *from) {
		p->from = xcalloc(1, sizeof(*p->from));
		if (config_parse_mailbox(from, &p->from->name, &p->from->addr) < 0) {
			free(from);
			return fail(c, "emailFrom", "not a valid email address");
		}
	}
	free(from);
	if (get_addrs(c, "emailTo", true, &p->to, &p->n_to) < 0 ||
	    get_addrs(c, "emailCc", false, &p->cc, &p->n_cc) < 0 ||
	    get_addrs(c, "emailBcc", false, &p->bcc, &p->n_bcc) < 0 ||
	    get_str(c, "subject", false, true, PAYLOAD_MAX_SUBJECT, &p->subject) < 0 ||
	    get_str(c, "html", false, false, 0, &p->html) < 0 ||
	    get_str(c, "replyToAltId", false, true, 998, &p->reply_to_alt_id) < 0 ||
	    get_attachments(c, p) < 0)
		return -1;
	/* the plain-text variant's field name is undocumented (HighLevel's
	 * highlevel-api-docs issue #68: added Dec 2025, name not given):
	 * take "text" or "message" when present */
	if (get_str(c, "text", false, false, 0, &p->text) < 0)
		return -1;
	if (!p->text && get_str(c, "message", false, false, 0, &p->text) < 0)
		return -1;
	if (!p->html && !p->text)
		return fail(c, "html", "missing required field (html or a plain-text body)");
	if (p->n_to + p->n_cc + p->n_bcc > PAYLOAD_MAX_RCPTS)
		return fail(c, "emailTo", "too many recipients");
	return 0;
}

static int
payload_sms(struct pctx *c, struct payload *p)
{
	if (get_str(c, "phone", true, true, 32, &p->phone) < 0)
		return -1;
	if (p->phone[0] != '+' || strlen(p->phone) < 8 || strspn(p->phone + 1, "0123456789") != strlen(p->phone) - 1)
		return fail(c, "phone", "must be an E.164 number (+ and digits)");
	if (get_str(c, "message", true, false, 0, &p->message) < 0 || get_attachments(c, p) < 0)
		return -1;
	return 0;
}

struct payload *
payload_parse(const char *body, size_t len, const char **error_r, const char **field_r)
{
	struct pctx c = { 0 };
	struct payload *p;
	int r;

	*field_r = NULL;
	if (!(c.root = body_parse(body, len, error_r)))
		return NULL;
	if (!cJSON_IsObject(c.root)) {
		cJSON_Delete(c.root);
		*error_r = "body must be a JSON object";
		return NULL;
	}
	p = xcalloc(1, sizeof(*p));
	r = get_str(&c, "type", true, true, 32, &p->type);
	if (r == 0 && (get_id(&c, "locationId", true, &p->location_id) < 0 ||
	    get_id(&c, "messageId", true, &p->message_id) < 0 ||
	    get_id(&c, "contactId", false, &p->contact_id) < 0 ||
	    get_id(&c, "emailMessageId", false, &p->email_message_id) < 0 ||
	    get_id(&c, "conversationId", false, &p->conversation_id) < 0 ||
	    get_id(&c, "userId", false, &p->user_id) < 0))
		r = -1;
	if (r == 0) {
		/* "Custom" is what HighLevel sends for extra (custom) providers;
		 * the fields tell an extra email channel from an extra SMS one */
		if (!strcmp(p->type, "Email") || (!strcmp(p->type, "Custom") && cJSON_GetObjectItemCaseSensitive(c.root, "emailTo"))) {
			p->kind = PAYLOAD_EMAIL;
			r = payload_email(&c, p);
		} else if (!strcmp(p->type, "SMS") || !strcmp(p->type, "Custom")) {
			p->kind = PAYLOAD_SMS;
			r = payload_sms(&c, p);
		} else {
			r = fail(&c, "type", "unsupported type (Email, SMS or Custom)");
		}
	}
	cJSON_Delete(c.root);
	if (r < 0) {
		*error_r = c.error;
		*field_r = c.field;
		payload_free(p);
		return NULL;
	}
	return p;
}

static void
free_addrs(struct addr *a, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(a[i].name);
		free(a[i].addr);
	}
	free(a);
}

void
payload_free(struct payload *p)
{
	if (!p)
		return;
	free(p->type);
	free(p->location_id);
	free(p->message_id);
	free(p->contact_id);
	free(p->email_message_id);
	free(p->conversation_id);
	free(p->user_id);
	if (p->from)
		free_addrs(p->from, 1);
	free_addrs(p->to, p->n_to);
	free_addrs(p->cc, p->n_cc);
	free_addrs(p->bcc, p->n_bcc);
	free(p->subject);
	free(p->html);
	free(p->text);
	free(p->reply_to_alt_id);
	for (size_t i = 0; i < p->n_attachments; i++)
		free(p->attachments[i]);
	free(p->attachments);
	free(p->phone);
	free(p->message);
	free(p);
}

struct payload_cache {
	pthread_mutex_t lock;
	size_t max, n;
	size_t max_bytes, bytes;   /* the bodies kept (their parses are about as big) */
	int64_t ttl_ms;
	struct cached {
		char *key;
		char *body;
		size_t len;
		int64_t at;
		struct payload *p;
	} *e;
};

struct payload_cache *
payload_cache_new(size_t max, size_t max_bytes, int64_t ttl_ms)
{
	struct payload_cache *c = xcalloc(1, sizeof(*c));
	pthread_mutex_init(&c->lock, NULL);
	c->max = max;
	c->max_bytes = max_bytes;
	c->ttl_ms = ttl_ms;
	c->e = xcalloc(max ? max : 1, sizeof(*c->e));
	return c;
}

static void
cached_clear(struct cached *e)
{
	free(e->key);
	free(e->body);
	payload_free(e->p);
}

void
payload_cache_free(struct payload_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++)
		cached_clear(&c->e[i]);
	pthread_mutex_destroy(&c->lock);
	free(c->e);
	free(c);
}

/* Drops what is past its time (under c->lock), keeping the order. */
static void
cache_expire(struct payload_cache *c, int64_t now_ms)
{
	size_t kept = 0;

	for (size_t i = 0; i < c->n; i++) {
		if (now_ms - c->e[i].at >= c->ttl_ms) {
			c->bytes -= c->e[i].len;
			cached_clear(&c->e[i]);
		} else
			c->e[kept++] = c->e[i];
	}
	c->n = kept;
}

bool
payload_cache_put(struct payload_cache *c, const char *key, const char *body, size_t len, struct payload *p,
    int64_t now_ms)
{
	bool kept = false;

	pthread_mutex_lock(&c->lock);
	cache_expire(c, now_ms);
	if (c->n < c->max && len <= c->max_bytes - c->bytes) {
		char *copy = xmalloc(len + 1);
		memcpy(copy, body, len);
		copy[len] = '\0';
		c->e[c->n++] = (struct cached){ xstrdup(key), copy, len, now_ms, p };
		c->bytes += len;
		kept = true;
	}
	pthread_mutex_unlock(&c->lock);
	return kept;
}

struct payload *
payload_cache_take(struct payload_cache *c, const char *key, const char *body, size_t len, int64_t now_ms)
{
	struct payload *p = NULL;

	pthread_mutex_lock(&c->lock);
	cache_expire(c, now_ms);
	for (size_t i = 0; i < c->n; i++) {
		struct cached *e = &c->e[i];
		if (e->len == len && strcmp(e->key, key) == 0 && memcmp(e->body, body, len) == 0) {
			p = e->p;
			e->p = NULL;
			c->bytes -= e->len;
			cached_clear(e);
			memmove(c->e + i, c->e + i + 1, (c->n - i - 1) * sizeof(*c->e));
			c->n--;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return p;
}
