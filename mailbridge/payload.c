#include "payload.h"
#include "config.h"
#include "util.h"

#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct pctx {
	json_t *root;
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

/* Optional string field. header = must not carry CR/LF/NUL. */
static int
get_str(struct pctx *c, const char *key, bool required, bool header, size_t max, char **out)
{
	json_t *v = json_object_get(c->root, key);
	const char *s;
	size_t len;

	*out = NULL;
	if (!v || json_is_null(v))
		return required ? fail(c, key, "missing required field") : 0;
	if (!json_is_string(v))
		return fail(c, key, "must be a string");
	s = json_string_value(v);
	len = json_string_length(v);
	if (required && len == 0)
		return fail(c, key, "must not be empty");
	if (max && len > max)
		return fail(c, key, "too long");
	if (strlen(s) != len || (header && has_header_break(s, len)))
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
	json_t *v = json_object_get(c->root, key);

	if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0) ||
	    (json_is_array(v) && json_array_size(v) == 0))
		return required ? fail(c, key, "missing required field") : 0;
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		if (strlen(s) != json_string_length(v))
			return fail(c, key, "contains CR, LF or NUL");
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
	if (json_is_array(v)) {
		size_t i;
		json_t *e;
		json_array_foreach(v, i, e) {
			if (!json_is_string(e) || strlen(json_string_value(e)) != json_string_length(e))
				return fail(c, key, "must be an array of strings");
			if (add_addr(c, key, json_string_value(e), list, n) < 0)
				return -1;
		}
		return 0;
	}
	return fail(c, key, "must be a string or an array of strings");
}

static int
get_attachments(struct pctx *c, struct payload *p)
{
	json_t *v = json_object_get(c->root, "attachments"), *e;
	size_t i;

	if (!v || json_is_null(v))
		return 0;
	if (!json_is_array(v))
		return fail(c, "attachments", "must be an array of URLs");
	if (json_array_size(v) > PAYLOAD_MAX_ATTACH)
		return fail(c, "attachments", "too many attachments");
	p->attachments = xcalloc(json_array_size(v) + 1, sizeof(char *));
	json_array_foreach(v, i, e) {
		const char *s = json_is_string(e) ? json_string_value(e) : NULL;
		if (!s || strlen(s) != json_string_length(e) || json_string_length(e) > PAYLOAD_MAX_URL ||
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
	json_error_t jerr;
	struct payload *p;
	int r;

	*field_r = NULL;
	c.root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!c.root) {
		*error_r = "malformed JSON";
		return NULL;
	}
	if (!json_is_object(c.root)) {
		json_decref(c.root);
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
		if (!strcmp(p->type, "Email") || (!strcmp(p->type, "Custom") && json_object_get(c.root, "emailTo"))) {
			p->kind = PAYLOAD_EMAIL;
			r = payload_email(&c, p);
		} else if (!strcmp(p->type, "SMS") || !strcmp(p->type, "Custom")) {
			p->kind = PAYLOAD_SMS;
			r = payload_sms(&c, p);
		} else {
			r = fail(&c, "type", "unsupported type (Email, SMS or Custom)");
		}
	}
	json_decref(c.root);
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
