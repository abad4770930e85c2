#include "sig.h"
#include "util.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <stdlib.h>
#include <string.h>

#define SIG_MAX_KEY_FILE 65536

struct sig_keys {
	gnutls_pubkey_t ed25519;
	gnutls_pubkey_t rsa;
};

static int
sig_load_one(const char *path, gnutls_pk_algorithm_t want, gnutls_pubkey_t *out, char **error_r)
{
	size_t len;
	char *pem;
	gnutls_datum_t d;
	int r;

	if (!path)
		return 0;
	pem = read_file(path, SIG_MAX_KEY_FILE, &len);
	if (!pem) {
		*error_r = xasprintf("cannot read key %s", path);
		return -1;
	}
	d.data = (unsigned char *)pem;
	d.size = (unsigned)len;
	gnutls_pubkey_init(out);
	r = gnutls_pubkey_import(*out, &d, GNUTLS_X509_FMT_PEM);
	free(pem);
	if (r < 0 || gnutls_pubkey_get_pk_algorithm(*out, NULL) != (int)want) {
		*error_r = xasprintf("key %s: %s", path, r < 0 ? gnutls_strerror(r) : "wrong key type");
		gnutls_pubkey_deinit(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

struct sig_keys *
sig_keys_load(const char *ed25519_pem, const char *rsa_pem, char **error_r)
{
	struct sig_keys *k = xcalloc(1, sizeof(*k));

	if (sig_load_one(ed25519_pem, GNUTLS_PK_EDDSA_ED25519, &k->ed25519, error_r) < 0 ||
	    sig_load_one(rsa_pem, GNUTLS_PK_RSA, &k->rsa, error_r) < 0) {
		sig_keys_free(k);
		return NULL;
	}
	return k;
}

void
sig_keys_free(struct sig_keys *keys)
{
	if (!keys)
		return;
	if (keys->ed25519)
		gnutls_pubkey_deinit(keys->ed25519);
	if (keys->rsa)
		gnutls_pubkey_deinit(keys->rsa);
	free(keys);
}

static bool
sig_present(const char *h)
{
	return h && *h && strcmp(h, "N/A") != 0;
}

static enum sig_result
sig_check(gnutls_pubkey_t key, gnutls_sign_algorithm_t algo, const char *b64,
    const void *body, size_t len)
{
	gnutls_datum_t in = { (unsigned char *)b64, (unsigned)strlen(b64) };
	gnutls_datum_t sig = { NULL, 0 };
	gnutls_datum_t data = { (unsigned char *)body, (unsigned)len };
	int r;

	if (!key)
		return SIG_NO_KEY;
	if (gnutls_base64_decode2(&in, &sig) < 0)
		return SIG_BAD;
	r = gnutls_pubkey_verify_data2(key, algo, 0, &data, &sig);
	gnutls_free(sig.data);
	return r >= 0 ? SIG_OK : SIG_BAD;
}

enum sig_result
sig_verify(const struct sig_keys *keys, const char *ghl_sig_b64, const char *wh_sig_b64,
    const void *body, size_t len)
{
	/* Mirrors HighLevel's SDK order: when the new header is present it is
	 * the only one considered, so a stripped or forged Ed25519 header can
	 * never fall back to the weaker legacy check. */
	if (sig_present(ghl_sig_b64))
		return sig_check(keys->ed25519, GNUTLS_SIGN_EDDSA_ED25519, ghl_sig_b64, body, len);
	if (sig_present(wh_sig_b64))
		return sig_check(keys->rsa, GNUTLS_SIGN_RSA_SHA256, wh_sig_b64, body, len);
	return SIG_ABSENT;
}

const char *
sig_result_str(enum sig_result r)
{
	switch (r) {
	case SIG_OK: return "ok";
	case SIG_ABSENT: return "absent";
	case SIG_BAD: return "bad signature";
	case SIG_NO_KEY: return "no key for this signature header";
	}
	return "?";
}
