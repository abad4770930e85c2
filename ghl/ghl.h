/* ghl (mb_ghl): the HighLevel API client, a library of its own. The
 * only code that talks to services.leadconnectorhq.com, and the only
 * code that builds or reads HighLevel's JSON (libcurl + jansson). It
 * knows nothing of mail, the store or the configuration file: its owner
 * gives it parameters, a token source and a counter. Base URL,
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

/* What the owner configures. Strings are copied. */
struct ghl_params {
	const char *api_base;      /* e.g. https://services.leadconnectorhq.com */
	long timeout;              /* seconds per request */
	const char *ca_file;       /* NULL: the system trust store */
	long rate_limit;           /* requests per location per rate_window (our own limiter) */
	long rate_window;          /* seconds */
	long rate_reserve;         /* percent of rate_limit that statuses and other
	                            * bulk calls leave to conversation messages */
	long rate_share_lease;     /* ms a shared limiter's batch of slots may be
	                            * spent in (0: one slot, one round trip, per call) */
};

#define GHL_VERSION_CONVERSATIONS "2021-04-15"
#define GHL_VERSION_CONTACTS      "2021-07-28"
#define GHL_VERSION_V3            "v3"

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

struct ghl *ghl_new(const struct ghl_params *p);
void ghl_free(struct ghl *g);
/* Where ghl gets a location's access token: the owner's token source
 * (OAuth, or a token set in the owner's configuration), so that this
 * client needs nothing of either. Returns GHL_TOKEN_REFRESHABLE or
 * GHL_TOKEN_FIXED with a token (malloc'd; a 401 asks a refreshable source
 * again, with stale the token that got it), 0 none (install the app), -1
 * temporary trouble. Set once at start-up, before any call. */
#define GHL_TOKEN_REFRESHABLE 1
#define GHL_TOKEN_FIXED       2
typedef int (*ghl_token_fn)(void *ctx, const char *location_id, const char *stale, char **token_r);
void ghl_set_token_source(struct ghl *g, ghl_token_fn fn, void *ctx);

/* A limiter the owner shares with other instances (several mailbridges
 * on one store), asked instead of our own window. It answers 0 to go,
 * with *granted_r slots (1 to want) that must all be spent within
 * lease_ms of the ask, else the ms to wait (< 0: it cannot tell; our own
 * window decides). A slot it grants counts in the window from the lease's
 * end, so a slot spent late is still counted. HighLevel's limit is per
 * location, whoever calls. Set once at start-up, before any call. */
typedef int64_t (*ghl_share_fn)(void *ctx, const char *location_id, long limit, int64_t window_ms,
    int64_t lease_ms, long want, long *granted_r);
void ghl_set_shared_limiter(struct ghl *g, ghl_share_fn fn, void *ctx);

/* What the client counts, for the owner's metrics: one call per event. */
enum ghl_count {
	GHL_COUNT_2XX, GHL_COUNT_4XX, GHL_COUNT_429, GHL_COUNT_5XX, GHL_COUNT_NETWORK,
	GHL_COUNT_THROTTLED,       /* held back by our own limiter */
	GHL_COUNT_SHARE_ASK,       /* a round trip to the shared limiter */
};
/* usec: how long the request took (0 for the two limiter counts) */
typedef void (*ghl_count_fn)(void *ctx, enum ghl_count what, int64_t usec);
void ghl_set_counter(struct ghl *g, ghl_count_fn fn, void *ctx);

/* The gauges of GET /metrics that ghl knows (requests today and the
 * daily budget left, per location): a metrics_gauge_fn, arg the ghl. */
void ghl_write_gauges(void *g, FILE *out);

/* PUT /conversations/messages/{id}/status. error_* may be NULL. A 403 is
 * classed GHL_RETRY: it is normal for seconds after the webhook. */
enum ghl_class ghl_update_status(struct ghl *g, const char *location_id, const char *message_id,
    const char *status, const char *error_code, const char *error_message,
    const char *email_message_id, struct ghl_result *res);

/* One recipient's outcome for the v3 email status. */
struct ghl_recipient {
	const char *email;
	const char *status;        /* "delivered", "failed", "sent" ... */
	const char *fail_reason;   /* with "failed": the enhanced code and text; else NULL */
};
/* One engagement counter to add ("opened": 1); HighLevel merges them. */
struct ghl_event_count {
	const char *name;
	int count;
};
/* PUT /conversations/messages/email/{id}/status (Version v3): the overall
 * status, each recipient's and the event counters to add (n_events 0:
 * none), for an email sent through this provider.
 * A 403 is retried as in ghl_update_status; a 404 or 405 says this
 * HighLevel has no v3 for us (the caller falls back to v2). */
enum ghl_class ghl_update_email_status(struct ghl *g, const char *location_id, const char *message_id,
    const char *status, const struct ghl_recipient *rcpts, size_t n_rcpts, const struct ghl_event_count *events,
    size_t n_events, struct ghl_result *res);

/* A file to upload (borrowed). */
struct ghl_file {
	const char *filename;
	const char *content_type;
	const void *data;
	size_t len;
};
/* POST /conversations/messages/upload (multipart, parts "fileAttachment").
 * On success res->body holds {"uploadedFiles": {name: url}}. */
enum ghl_class ghl_upload(struct ghl *g, const char *location_id, const char *conversation_id,
    const char *contact_id, const struct ghl_file *files, size_t n_files, struct ghl_result *res);

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
/* PUT /contacts/{contactId}: the contact's Email DND set active (an
 * unsubscribe), with message and code saying why. */
/* GET /contacts/{id}: the contact's email (malloc'd; NULL when it has
 * none) in *email_r. */
enum ghl_class ghl_contact_email(struct ghl *g, const char *location_id, const char *contact_id, char **email_r,
    struct ghl_result *res);
enum ghl_class ghl_contact_email_dnd(struct ghl *g, const char *location_id, const char *contact_id,
    const char *message, struct ghl_result *res);
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

/* An OAuth token answer (openapi/apps/oauth.json: AccessTokenResponse),
 * malloc'd members, NULL when absent. */
struct ghl_grant {
	char *access_token;
	char *refresh_token;
	char *user_type;           /* "Location" or "Company" */
	char *company_id;
	char *location_id;
	char *scope;
	long expires_in;           /* seconds; 0 when not given */
};
void ghl_grant_clear(struct ghl_grant *t);
/* Form-encoded POST to an /oauth endpoint (POST /oauth/token takes no
 * bearer nor version: NULL). form is "k=v&k=v", already URL-encoded; it
 * is never logged. GHL_OK with *grant filled; an answer without an
 * access_token is GHL_PERMANENT. */
enum ghl_class ghl_oauth_grant(struct ghl *g, const char *path, const char *form,
    const char *bearer, const char *version, struct ghl_grant *grant, struct ghl_result *res);

/* Outcome of a chain of HighLevel calls: the class of the first failure
 * and its text (malloc'd). */
struct ghl_step {
	enum ghl_class cls;
	char *error;
	int64_t wait_ms;           /* > 0: nothing was sent, our own limiter said wait this long */
};
void ghl_step_from(struct ghl_step *s, struct ghl_result *res, const char *what);


#endif
