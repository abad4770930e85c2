/* store_tokens: OAuth tokens, sealed at rest with AES-256-GCM, and the store's own keys (store_tokens.h). */
#include "store_private.h"
#include "store_tokens.h"
#include "log.h"
#include "util.h"

#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void
store_token_free(struct token *t)
{
	if (!t)
		return;
	free(t->location_id);
	free(t->user_type);
	free(t->company_id);
	free(t->access_token);
	free(t->refresh_token);
	free(t->scope);
	free(t);
}

/* Tokens at rest, when a key is set: "enc1:" base64(nonce | AES-256-GCM
 * ciphertext | tag), the location id as associated data so a value cannot
 * be moved to another row. */
#define TOKEN_ENC_PREFIX "enc1:"

static char *
token_seal(struct store *st, const char *location_id, const char *plain)
{
	gnutls_aead_cipher_hd_t h;
	gnutls_datum_t key = { st->token_key, 32 }, raw, b64;
	unsigned char *buf;
	size_t plen, clen;
	char *out;

	if (!plain || !st->have_token_key)
		return xstrdup(plain);
	plen = strlen(plain);
	clen = plen + 16;
	buf = xmalloc(12 + clen);
	gnutls_rnd(GNUTLS_RND_NONCE, buf, 12);
	gnutls_aead_cipher_init(&h, GNUTLS_CIPHER_AES_256_GCM, &key);
	if (gnutls_aead_cipher_encrypt(h, buf, 12, location_id, strlen(location_id), 16, plain, plen,
	    buf + 12, &clen) < 0) {
		gnutls_aead_cipher_deinit(h);
		free(buf);
		return NULL;
	}
	gnutls_aead_cipher_deinit(h);
	raw.data = buf;
	raw.size = (unsigned)(12 + clen);
	gnutls_base64_encode2(&raw, &b64);
	out = xasprintf(TOKEN_ENC_PREFIX "%.*s", (int)b64.size, (char *)b64.data);
	gnutls_free(b64.data);
	free(buf);
	return out;
}

/* NULL when the value is sealed and cannot be opened (no or wrong key). */
static char *
token_open(struct store *st, const char *location_id, char *stored)
{
	gnutls_aead_cipher_hd_t h;
	gnutls_datum_t key = { st->token_key, 32 }, in, raw = { NULL, 0 };
	char *plain = NULL;
	size_t plen;

	if (!stored || strncmp(stored, TOKEN_ENC_PREFIX, strlen(TOKEN_ENC_PREFIX)) != 0)
		return stored;
	in.data = (unsigned char *)stored + strlen(TOKEN_ENC_PREFIX);
	in.size = (unsigned)strlen((char *)in.data);
	if (st->have_token_key && gnutls_base64_decode2(&in, &raw) == 0 && raw.size > 28) {
		plen = raw.size - 12;
		plain = xmalloc(plen + 1);
		gnutls_aead_cipher_init(&h, GNUTLS_CIPHER_AES_256_GCM, &key);
		if (gnutls_aead_cipher_decrypt(h, raw.data, 12, location_id, strlen(location_id), 16,
		    raw.data + 12, raw.size - 12, plain, &plen) < 0) {
			free(plain);
			plain = NULL;
		} else {
			plain[plen] = '\0';
		}
		gnutls_aead_cipher_deinit(h);
	}
	gnutls_free(raw.data);
	if (!plain)
		log_error("store: token for %s is encrypted and cannot be opened (token_key_file?)", location_id);
	free(stored);
	return plain;
}

void
store_set_token_key(struct store *st, const unsigned char key[32])
{
	memcpy(st->token_key, key, 32);
	st->have_token_key = true;
}

int
store_token_put(struct store *st, const struct token *t)
{
	char *access = token_seal(st, t->location_id, t->access_token);
	char *refresh = token_seal(st, t->location_id, t->refresh_token);
	int r = store_exec_durable(st,
	    "INSERT INTO tokens (location_id, user_type, company_id, access_token, refresh_token, expires_at, "
	    "scope, needs_reinstall, updated_at) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9) "
	    "ON CONFLICT(location_id) DO UPDATE SET user_type=excluded.user_type, company_id=excluded.company_id, "
	    "access_token=excluded.access_token, refresh_token=excluded.refresh_token, "
	    "expires_at=excluded.expires_at, scope=excluded.scope, needs_reinstall=excluded.needs_reinstall, "
	    "updated_at=excluded.updated_at",
	    "sssssisii", t->location_id, t->user_type, t->company_id, access, refresh,
	    t->expires_at, t->scope, (int64_t)t->needs_reinstall, now_ms()) < 0 ? -1 : 1;
	free(access);
	free(refresh);
	return r;
}

struct token_get {
	struct store *st;
	const char *location_id;
	struct token **t_r;
};

static void
row_token(const struct store_row *r, void *arg)
{
	struct token_get *g = arg;
	struct token *t = xcalloc(1, sizeof(*t));
	t->location_id = store_col_text(r, 0);
	t->user_type = store_col_text(r, 1);
	t->company_id = store_col_text(r, 2);
	t->access_token = token_open(g->st, g->location_id, store_col_text(r, 3));
	t->refresh_token = token_open(g->st, g->location_id, store_col_text(r, 4));
	t->expires_at = store_col_int(r, 5);
	t->scope = store_col_text(r, 6);
	t->needs_reinstall = store_col_int(r, 7) != 0;
	*g->t_r = t;
}

int
store_token_get(struct store *st, const char *location_id, struct token **t_r)
{
	struct token_get g = { st, location_id, t_r };
	*t_r = NULL;
	return store_query_row(st, row_token, &g, "SELECT location_id, user_type, company_id, access_token, "
	    "refresh_token, expires_at, scope, needs_reinstall FROM tokens WHERE location_id=?1", "s", location_id);
}

int
store_token_delete(struct store *st, const char *location_id)
{
	return store_exec(st, "DELETE FROM tokens WHERE location_id=?1", "s", location_id) < 0 ? -1 : 1;
}

int
store_token_mark_reinstall(struct store *st, const char *location_id)
{
	return store_exec(st, "UPDATE tokens SET needs_reinstall=1, updated_at=?2 WHERE location_id=?1",
	    "si", location_id, now_ms()) < 0 ? -1 : 1;
}

static int
secret_from_hex(const char *have, unsigned char key_r[32])
{
	if (strlen(have) != 64 || strspn(have, "0123456789abcdef") != 64)
		return -1;
	for (int i = 0; i < 32; i++) {
		unsigned v;
		sscanf(have + 2 * i, "%2x", &v);
		key_r[i] = (unsigned char)v;
	}
	return 1;
}

int
store_secret(struct store *st, const char *name, unsigned char key_r[32])
{
	unsigned char fresh[32];
	char hex[65], *have = NULL;
	int r;

	/* read first: a store that is there already needs no write (the
	 * read-only commands run where they cannot write) */
	r = store_query_row(st, store_row_text, &have, "SELECT value FROM secrets WHERE name=?1", "s", name);
	if (r == 0) {
		if (gnutls_rnd(GNUTLS_RND_KEY, fresh, sizeof(fresh)) < 0)
			return -1;
		hex_encode(fresh, 32, hex);
		memset(fresh, 0, sizeof(fresh));
		/* two first starts at once: the first key stays, both read it */
		r = store_exec_durable(st, "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3) "
		    "ON CONFLICT DO NOTHING", "ssi", name, hex, now_ms());
		memset(hex, 0, sizeof(hex));
		if (r < 0)
			return -1;
		r = store_query_row(st, store_row_text, &have, "SELECT value FROM secrets WHERE name=?1", "s", name);
	}
	if (r != 1)
		return -1;
	r = secret_from_hex(have, key_r);
	memset(have, 0, strlen(have));
	free(have);
	return r;
}

int
store_token_count_reinstall(struct store *st)
{
	int64_t n = -1;
	store_query_row(st, store_row_int64, &n, "SELECT COUNT(*) FROM tokens WHERE needs_reinstall=1", "");
	return (int)n;
}
