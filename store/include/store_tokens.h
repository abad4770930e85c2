/* store_tokens: OAuth tokens per location, and the store's own keys. */
#ifndef MB_STORE_TOKENS_H
#define MB_STORE_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

/* Tokens (OAuth) per location. */
struct token {
	char *location_id;
	char *user_type;
	char *company_id;
	char *access_token;
	char *refresh_token;
	int64_t expires_at;
	char *scope;
	bool needs_reinstall;
};
void store_token_free(struct token *t);
int store_token_put(struct store *st, const struct token *t);
int store_token_get(struct store *st, const char *location_id, struct token **t_r);
int store_token_delete(struct store *st, const char *location_id);
int store_token_mark_reinstall(struct store *st, const char *location_id);
/* How many locations need the app installed again (for /metrics); -1 on error. */
int store_token_count_reinstall(struct store *st);

/* Tokens at rest are sealed with AES-256-GCM once a key is set. */
void store_set_token_key(struct store *st, const unsigned char key[32]);

/* A 32-byte key of the store's own, made at random on first use and kept
 * in it (so a backup of the store carries it): 1, or -1 on a store error. */
int store_secret(struct store *st, const char *name, unsigned char key_r[32]);

#endif
