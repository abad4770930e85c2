/* payload: parse and validate HighLevel's ProviderOutboundMessage body.
 *
 * Used by the webhook intake (reject bad input before anything is stored)
 * and by the outbound worker (re-read the stored body), so both see the
 * same rules. Every header-bound field is checked for CR/LF/NUL here. */
#ifndef MB_PAYLOAD_H
#define MB_PAYLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAYLOAD_MAX_ID        128
#define PAYLOAD_MAX_SUBJECT   998
#define PAYLOAD_MAX_RCPTS     100
#define PAYLOAD_MAX_ATTACH    20
#define PAYLOAD_MAX_URL       2048

enum payload_kind { PAYLOAD_EMAIL, PAYLOAD_SMS };

struct addr {
	char *name;                /* display name or NULL */
	char *addr;
};

struct payload {
	enum payload_kind kind;
	char *type;                /* as sent: "Email", "SMS", "Custom" */
	char *location_id;
	char *message_id;
	char *contact_id;
	char *email_message_id;
	char *conversation_id;
	char *user_id;
	/* Email */
	struct addr *from;         /* NULL when emailFrom is absent */
	struct addr *to, *cc, *bcc;
	size_t n_to, n_cc, n_bcc;
	char *subject;
	char *html;
	char *text;                /* plain-text variant if HighLevel sent one */
	char *reply_to_alt_id;
	char **attachments;        /* http(s) URLs */
	size_t n_attachments;
	/* SMS */
	char *phone;
	char *message;
};

/* Returns the payload or NULL; on NULL *error_r (static text) says why and
 * *field_r names the offending field (or NULL for whole-body problems). */
struct payload *payload_parse(const char *body, size_t len, const char **error_r, const char **field_r);
void payload_free(struct payload *p);

/* Payloads the webhook parsed, kept for the sender that claims their job
 * soon after in this process, so that each is parsed once, not twice
 * (parsing was 7 % of the daemon's CPU each time: perf in
 * bench/outbound.py). Each is kept under its messageId with the body it
 * was parsed from, and given only for that very body: the stored body
 * stays the truth, and a job claimed later (by another instance, after a
 * restart) is parsed from it. Put before the job's commit, so that a
 * sender claiming right after it finds it. At most max entries and
 * max_bytes of bodies (their parses are about as big again), each
 * dropped ttl_ms after it came; when full, a new one is refused (the
 * oldest jobs are claimed first). Thread-safe; now_ms is monotonic. */
struct payload_cache;
struct payload_cache *payload_cache_new(size_t max, size_t max_bytes, int64_t ttl_ms);
void payload_cache_free(struct payload_cache *c);
/* Keeps p (now the cache's) for key and body (both copied): true, or
 * false when full (p is still the caller's). */
bool payload_cache_put(struct payload_cache *c, const char *key, const char *body, size_t len,
    struct payload *p, int64_t now_ms);
/* The payload kept for key parsed from exactly body (now the caller's),
 * or NULL. */
struct payload *payload_cache_take(struct payload_cache *c, const char *key, const char *body, size_t len,
    int64_t now_ms);

#endif
