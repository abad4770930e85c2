/* mailbridge plugin interface: the only header a plugin includes.
 *
 * A plugin is a shared object in [plugins] dir that exports
 *     const struct mb_plugin mailbridge_plugin;
 * mailbridge checks .abi before anything else (a mismatch is a start-up
 * error), calls init once with the plugin's own config section and the
 * host function table, send for each outbound job of the types it
 * serves, http for requests to /plugins/<name>/..., and deinit at exit.
 * Plugins never see tokens or SQL: everything goes through mb_host.
 *
 * HTTP routes are authenticated by the host before http is called: the
 * request must carry [plugin <name>] secret (query "secret=", header
 * X-Mailbridge-Secret, or "Authorization: Bearer"), and come from
 * [plugin <name>] allow_from when that is set. Without a secret the
 * plugin's routes answer 403. A plugin that builds a callback URL (a
 * gateway's delivery-report URL) adds config("secret") to it. The host
 * also refuses update_status for a message that is not of this plugin's
 * type at a location using it, and post_inbound_sms / log_call for a
 * location that does not use it.
 *
 * Threading: send runs on a sender thread, http on an HTTP thread; both
 * may run concurrently. send is bounded by [plugins] send_timeout: a send
 * that does not return in time counts as a temporary failure and its
 * thread is abandoned (a hung plugin can leak a thread; it cannot stall
 * the queue). A crash inside a plugin takes the process down; systemd
 * restarts it and the durable queue resumes. */
#ifndef MAILBRIDGE_PLUGIN_H
#define MAILBRIDGE_PLUGIN_H

#include <stddef.h>

#define MB_PLUGIN_ABI 2

#define MB_TYPE_SMS  1u
#define MB_TYPE_CALL 2u

enum mb_send_result {
	MB_SEND_DELIVERED,   /* final: delivered */
	MB_SEND_ACCEPTED,    /* the gateway took it; the plugin reports later (update_status) */
	MB_SEND_TEMPORARY,   /* retry later with backoff */
	MB_SEND_PERMANENT,   /* failed: *reason says why */
};

struct mb_outbound {
	const char *location_id;
	const char *message_id;    /* HighLevel messageId */
	const char *contact_id;
	const char *phone;         /* E.164 recipient */
	const char *message;       /* UTF-8 text */
	const char *const *attachments;
	size_t n_attachments;
};

struct sockaddr;

struct mb_http_request {
	const char *method;
	const char *path;          /* after /plugins/<name> */
	const char *body;          /* NUL-terminated */
	size_t body_len;
	const char *(*query)(const struct mb_http_request *req, const char *name);
	void *priv;                /* host use */
	/* since ABI 2: request headers (case-insensitive name) and the peer */
	const char *(*header)(const struct mb_http_request *req, const char *name);
	const struct sockaddr *peer;   /* NULL when unknown */
	const char *peer_addr;         /* the peer as text ("192.0.2.1", "::1") */
};

struct mb_http_response {
	int status;
	const char *content_type;  /* static string */
	char *body;                /* malloc'd by the plugin, freed by the host */
};

struct mb_ctx;                 /* the host's handle for one plugin */

/* What the host offers. Functions return 1 ok, 0 refused (*error_r says
 * why, malloc'd), -1 temporary trouble (retry). */
struct mb_host {
	int abi;
	/* level: 3 error, 4 warn, 6 info, 7 debug */
	void (*log)(struct mb_ctx *ctx, int level, const char *msg);
	/* the plugin's [plugin <name>] keys, and the daemon's public URL */
	const char *(*config)(struct mb_ctx *ctx, const char *key);
	const char *(*public_url)(struct mb_ctx *ctx);
	/* an inbound SMS from phone, threaded to its contact (created if new) */
	int (*post_inbound_sms)(struct mb_ctx *ctx, const char *location_id, const char *from_phone,
	    const char *text, char **error_r);
	/* a call log: inbound (contact created if new) or outbound (contact must exist) */
	int (*log_call)(struct mb_ctx *ctx, const char *location_id, int inbound, const char *from,
	    const char *to, const char *status, const char *recording_url, char **error_r);
	/* delivered / failed (error_text) for a message the plugin sent; may be
	 * called before send returns (the report is held until the send is
	 * recorded). 1 taken, 0 no such message, -1 not recorded (the store
	 * failed): ask the gateway to report again, if it can */
	int (*update_status)(struct mb_ctx *ctx, const char *message_id, const char *status, const char *error_text);
	/* the plugin's own key-value store (e.g. gateway id -> messageId) */
	int (*kv_put)(struct mb_ctx *ctx, const char *key, const char *value);
	char *(*kv_get)(struct mb_ctx *ctx, const char *key);   /* malloc'd or NULL */
	/* the contact with this phone (normalised to E.164), created when asked;
	 * *contact_id_r malloc'd */
	int (*contact_by_phone)(struct mb_ctx *ctx, const char *location_id, const char *phone, int create,
	    char **contact_id_r, char **error_r);
	/* uploads a file to the contact's conversation; *url_r (malloc'd) is
	 * what HighLevel serves it at, for attachments of an inbound message */
	int (*upload)(struct mb_ctx *ctx, const char *location_id, const char *contact_id, const char *filename,
	    const char *content_type, const void *data, size_t len, char **url_r, char **error_r);
};

struct mb_plugin {
	int abi;                   /* MB_PLUGIN_ABI */
	const char *name;
	unsigned types;            /* MB_TYPE_SMS | MB_TYPE_CALL */
	/* returns the plugin's state (non-NULL) or NULL with *error_r */
	void *(*init)(const struct mb_host *host, struct mb_ctx *ctx, char **error_r);
	enum mb_send_result (*send)(void *state, const struct mb_outbound *job, char **reason_r);
	void (*http)(void *state, const struct mb_http_request *req, struct mb_http_response *resp);  /* optional */
	void (*deinit)(void *state);
};

#endif
