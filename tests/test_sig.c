#include "sig.h"
#include "test.h"
#include "util.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <string.h>

static gnutls_privkey_t
gen_key(gnutls_pk_algorithm_t algo, unsigned bits, const char *pub_path)
{
	gnutls_privkey_t priv;
	gnutls_pubkey_t pub;
	gnutls_datum_t pem;
	FILE *f;

	gnutls_privkey_init(&priv);
	if (gnutls_privkey_generate(priv, algo, bits, 0) < 0)
		abort();
	gnutls_pubkey_init(&pub);
	gnutls_pubkey_import_privkey(pub, priv, 0, 0);
	gnutls_pubkey_export2(pub, GNUTLS_X509_FMT_PEM, &pem);
	f = fopen(pub_path, "w");
	fwrite(pem.data, 1, pem.size, f);
	fclose(f);
	gnutls_free(pem.data);
	gnutls_pubkey_deinit(pub);
	return priv;
}

static char *
sign_b64(gnutls_privkey_t k, gnutls_sign_algorithm_t algo, const char *body)
{
	gnutls_datum_t data = { (unsigned char *)body, (unsigned)strlen(body) }, sig, b64;
	char *out;
	if (gnutls_privkey_sign_data2(k, algo, 0, &data, &sig) < 0)
		abort();
	gnutls_base64_encode2(&sig, &b64);
	out = strndup((char *)b64.data, b64.size);
	gnutls_free(sig.data);
	gnutls_free(b64.data);
	return out;
}

int
main(void)
{
	char *err = NULL;
	const char *body = "{\"type\":\"Email\",\"messageId\":\"m1\"}";
	gnutls_privkey_t ed = gen_key(GNUTLS_PK_EDDSA_ED25519, 256, "/tmp/mb-test-ed.pub");
	gnutls_privkey_t rsa = gen_key(GNUTLS_PK_RSA, 2048, "/tmp/mb-test-rsa.pub");

	/* shared secrets (plugin routes, /metrics) */
	CHECK(secret_equal("abc", "abc"));
	CHECK(!secret_equal("abd", "abc"));
	CHECK(!secret_equal("ab", "abc"));
	CHECK(!secret_equal("abcd", "abc"));
	CHECK(!secret_equal("ab\0c", "abc"));
	CHECK(!secret_equal(NULL, "abc"));
	CHECK(!secret_equal("x", NULL));
	CHECK(!secret_equal("", ""));       /* an empty secret is no secret */
	gnutls_privkey_t other = gen_key(GNUTLS_PK_EDDSA_ED25519, 256, "/tmp/mb-test-other.pub");
	struct sig_keys *keys = sig_keys_load("/tmp/mb-test-ed.pub", "/tmp/mb-test-rsa.pub", &err);
	struct sig_keys *only_ed = sig_keys_load("/tmp/mb-test-ed.pub", NULL, &err);
	char *ed_sig = sign_b64(ed, GNUTLS_SIGN_EDDSA_ED25519, body);
	char *rsa_sig = sign_b64(rsa, GNUTLS_SIGN_RSA_SHA256, body);
	char *other_sig = sign_b64(other, GNUTLS_SIGN_EDDSA_ED25519, body);
	char tampered[64];

	CHECK(keys != NULL && only_ed != NULL);
	snprintf(tampered, sizeof(tampered), "%s", body);
	tampered[3] ^= 1;

	struct {
		const char *ghl, *wh, *body;
		const struct sig_keys *k;
		enum sig_result want;
	} rows[] = {
		{ ed_sig, NULL, body, keys, SIG_OK },
		{ NULL, rsa_sig, body, keys, SIG_OK },
		{ ed_sig, NULL, tampered, keys, SIG_BAD },
		{ NULL, rsa_sig, tampered, keys, SIG_BAD },
		{ other_sig, NULL, body, keys, SIG_BAD },        /* someone else's key */
		{ "not base64!!", NULL, body, keys, SIG_BAD },
		{ "AAAA", rsa_sig, body, keys, SIG_BAD },         /* no fallback to legacy */
		{ NULL, NULL, body, keys, SIG_ABSENT },
		{ "N/A", NULL, body, keys, SIG_ABSENT },
		{ "", "", body, keys, SIG_ABSENT },
		{ NULL, rsa_sig, body, only_ed, SIG_NO_KEY },
		{ rsa_sig, NULL, body, keys, SIG_BAD },           /* RSA bytes in the Ed25519 header */
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		CHECK_IDX(sig_verify(rows[i].k, rows[i].ghl, rows[i].wh, rows[i].body, strlen(rows[i].body)) ==
		    rows[i].want, i);

	/* HighLevel's published keys load, and a key of the wrong type is refused */
	{
		struct sig_keys *pub = sig_keys_load("../conf/keys/ghl-webhook-ed25519.pem",
		    "../conf/keys/ghl-webhook-rsa-legacy.pem", &err);
		CHECK(pub != NULL);
		sig_keys_free(pub);
		CHECK(sig_keys_load("/tmp/mb-test-rsa.pub", NULL, &err) == NULL);
		CHECK(err && strstr(err, "wrong key type"));
		free(err);
		err = NULL;
		CHECK(sig_keys_load("/nonexistent", NULL, &err) == NULL);
		free(err);
	}
	sig_keys_free(keys);
	sig_keys_free(only_ed);
	gnutls_privkey_deinit(ed);
	gnutls_privkey_deinit(rsa);
	gnutls_privkey_deinit(other);
	free(ed_sig);
	free(rsa_sig);
	free(other_sig);
	unlink("/tmp/mb-test-ed.pub");
	unlink("/tmp/mb-test-rsa.pub");
	unlink("/tmp/mb-test-other.pub");
	return test_done("test_sig");
}
