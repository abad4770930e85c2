/* sig: HighLevel webhook signatures over the exact body bytes (GnuTLS).
 * X-GHL-Signature = base64 Ed25519; legacy X-WH-Signature = base64
 * RSA PKCS#1 v1.5 SHA-256. Keys are PEM SubjectPublicKeyInfo files. */
#ifndef MB_SIG_H
#define MB_SIG_H

#include <stddef.h>

struct sig_keys;

enum sig_result {
	SIG_OK,          /* a present signature verified */
	SIG_ABSENT,      /* no signature header (or the literal "N/A") */
	SIG_BAD,         /* present but does not verify, or not base64 */
	SIG_NO_KEY,      /* a header is present but we have no key for it */
};

/* Either path may be NULL. NULL return with *error_r set (malloc'd). */
struct sig_keys *sig_keys_load(const char *ed25519_pem, const char *rsa_pem, char **error_r);
void sig_keys_free(struct sig_keys *keys);

/* Ed25519 header first (no fallback when present), else RSA, else absent. */
enum sig_result sig_verify(const struct sig_keys *keys, const char *ghl_sig_b64,
    const char *wh_sig_b64, const void *body, size_t len);

const char *sig_result_str(enum sig_result r);

#endif
