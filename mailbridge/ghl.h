/* ghl: the HighLevel API client. The only module that talks to
 * services.leadconnectorhq.com (libcurl + jansson): base URL from config,
 * Bearer token of the location, the per-endpoint Version header, JSON
 * bodies, timeouts, TLS verification, a token bucket per location so we
 * never cause a 429 ourselves, and errors classified for the callers.
 * Thread-safe; connections are shared and reused (curl share handle). */
#ifndef MB_GHL_H
#define MB_GHL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct config;
struct store;

#define GHL_VERSION_CONVERSATIONS "2021-04-15"
#define GHL_VERSION_CONTACTS      "2021-07-28"

enum ghl_class {
	GHL_OK,
	GHL_RETRY,       /* 429, 5xx, timeout, network; retry_after_ms says when */
	GHL_AUTH,        /* no usable token (needs install / re-install): wait */
	GHL_PERMANENT,   /* other 4xx: error says why */
};

struct ghl_result {
	enum ghl_class cls;
	long status;               /* HTTP status, 0 when none */
	char *error;               /* HighLevel's message(s) or ours, malloc'd */
	char *trace_id;
	json_t *body;              /* parsed response (new reference) or NULL */
	int64_t retry_after_ms;
	bool throttled;            /* not sent: our own limiter said wait */
};

void ghl_result_clear(struct ghl_result *r);
const char *ghl_class_name(enum ghl_class c);

struct ghl *ghl_new(const struct config *cfg, struct store *st);
void ghl_free(struct ghl *g);
/* Where ghl gets OAuth access tokens: the owner's token source (oauth.c
 * through cli.c), so that this client needs nothing of OAuth. 1 with a
 * token (malloc'd), 0 none (or needs re-install), -1 temporary; stale is
 * the token that just got a 401, or NULL. Set once at start-up, before
 * any call; without one only static location tokens are used. */
typedef int (*ghl_token_fn)(void *ctx, const char *location_id, const char *stale, char **token_r);
void ghl_set_token_source(struct ghl *g, ghl_token_fn fn, void *ctx);

/* The gauges of GET /metrics that ghl knows (requests today and the
 * daily budget left, per location): a metrics_gauge_fn, arg the ghl. */
void ghl_write_gauges(void *g, FILE *out);

/* Generic call: method, path (with leading /), Version header, JSON body
 * (stolen; may be NULL), for the location's token. Returns res->cls. */
enum ghl_class ghl_call(struct ghl *g, const char *location_id, const char *method, const char *path,
    const char *version, json_t *body, struct ghl_result *res);

/* PUT /conversations/messages/{id}/status. error_* may be NULL. A 403 is
 * classed GHL_RETRY: it is normal for seconds after the webhook. */
enum ghl_class ghl_update_status(struct ghl *g, const char *location_id, const char *message_id,
    const char *status, const char *error_code, const char *error_message,
    const char *email_message_id, struct ghl_result *res);

/* POST /conversations/messages/upload (multipart, parts "fileAttachment").
 * On success res->body holds {"uploadedFiles": {name: url}}. */
struct mime_attachment;
enum ghl_class ghl_upload(struct ghl *g, const char *location_id, const char *conversation_id,
    const char *contact_id, const struct mime_attachment *files, size_t n_files, struct ghl_result *res);

/* A message posted into a conversation: an inbound Email, Custom or SMS
 * reply, or a call log (inbound, or outbound with outbound set). Strings
 * may be NULL (left out). */
enum ghl_message_type { GHL_MSG_EMAIL, GHL_MSG_CUSTOM, GHL_MSG_SMS, GHL_MSG_CALL };

struct ghl_message {
	enum ghl_message_type type;
	bool outbound;             /* a call we made: POST .../outbound, no contactId */
	const char *contact_id;
	const char *conversation_id;
	const char *provider_id;   /* conversationProviderId */
	int64_t date_ms;           /* 0: none */
	const char *message;       /* the text */
	const char *subject, *html;
	const char *email_from, *email_to;
	const char *const *email_cc;
	size_t n_cc;               /* email_cc goes out (empty) whenever it is an email */
	const char *alt_id;
	const char *email_message_id;   /* the thread, for default-mode email */
	const char *const *attachments; /* URLs */
	size_t n_attachments;
	const char *call_from, *call_to, *call_status;
};

/* What HighLevel said it made of a posted message (malloc'd members). */
struct ghl_posted {
	char *message_id;
	char *email_message_id;    /* NULL when HighLevel gave none */
	char *conversation_id;     /* likewise */
};
void ghl_posted_clear(struct ghl_posted *p);

/* POST /conversations/messages/inbound (or /outbound). A 2xx without a
 * messageId is GHL_PERMANENT: HighLevel dropped the message (custom
 * inbound without a provider id, highlevel-api-docs issue #70). On
 * GHL_OK *posted is filled. */
enum ghl_class ghl_message_post(struct ghl *g, const char *location_id, const struct ghl_message *m,
    struct ghl_posted *posted, struct ghl_result *res);

/* ISO 8601 in UTC with milliseconds, as HighLevel takes dates. */
void ghl_date(int64_t ms, char buf[32]);

/* Contacts and conversations (openapi/apps/contacts.json,
 * conversations.json). Each returns the call's class; on GHL_OK *id_r is
 * the id (malloc'd), or NULL from a search that found none. A create or
 * upsert answered 2xx without an id is GHL_PERMANENT. email or phone
 * (E.164) names the contact; name may be NULL. */
enum ghl_class ghl_contact_search(struct ghl *g, const char *location_id, const char *email, const char *phone,
    char **id_r, struct ghl_result *res);
enum ghl_class ghl_contact_upsert(struct ghl *g, const char *location_id, const char *email, const char *phone,
    const char *name, char **id_r, struct ghl_result *res);
enum ghl_class ghl_conversation_search(struct ghl *g, const char *location_id, const char *contact_id, char **id_r,
    struct ghl_result *res);
enum ghl_class ghl_conversation_create(struct ghl *g, const char *location_id, const char *contact_id, char **id_r,
    struct ghl_result *res);

/* The URLs of an upload's answer ({"uploadedFiles": {name: url}}), in
 * order; *n_r of them, malloc'd (each and the array). */
char **ghl_uploaded_urls(const struct ghl_result *res, size_t *n_r);

/* Calls fn per location seen: requests we made today, and HighLevel's
 * X-RateLimit-Daily-Remaining last seen (-1 unknown). */
void ghl_budget_each(struct ghl *g, void (*fn)(const char *location_id, long today, long remaining, void *arg), void *arg);

/* Form-encoded POST for the /oauth endpoints (used by oauth.c only). bearer and
 * version may be NULL (POST /oauth/token takes neither). form is
 * "k=v&k=v" already URL-encoded. Never logs the form. */
enum ghl_class ghl_oauth_post(struct ghl *g, const char *path, const char *form,
    const char *bearer, const char *version, struct ghl_result *res);

/* Outcome of a chain of HighLevel calls: the class of the first failure
 * and its text (malloc'd). */
struct ghl_step {
	enum ghl_class cls;
	char *error;
};
void ghl_step_from(struct ghl_step *s, struct ghl_result *res, const char *what);

/* Borrowed string member or NULL; set only when s is valid UTF-8 text. */
const char *ghl_jstr(json_t *o, const char *k);
void ghl_jset(json_t *o, const char *key, const char *s);

#endif
