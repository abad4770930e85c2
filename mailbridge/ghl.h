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

struct config;
struct store;
struct oauth;

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
/* Lets ghl refresh OAuth tokens (set once at start-up, may stay NULL). */
void ghl_set_oauth(struct ghl *g, struct oauth *o);

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
