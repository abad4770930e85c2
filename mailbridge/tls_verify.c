#include "tls_verify.h"
#include "util.h"

#include <arpa/inet.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdlib.h>
#include <string.h>

#define TLS_MAX_CHAIN 16

void
tls_sni_callback(struct mailstream_ssl_context *ctx, void *data)
{
	struct in_addr a4;
	struct in6_addr a6;
	const char *host = data;
	/* SNI carries names only, never an address literal (RFC 6066) */
	if (inet_pton(AF_INET, host, &a4) != 1 && inet_pton(AF_INET6, host, &a6) != 1)
		mailstream_ssl_set_server_name(ctx, (char *)host);
}

int
tls_verify_stream(mailstream *stream, const char *host, const char *ca_file, char **error_r)
{
	carray *chain = mailstream_get_certificate_chain(stream);
	gnutls_x509_crt_t crts[TLS_MAX_CHAIN];
	gnutls_x509_trust_list_t tl = NULL;
	gnutls_typed_vdata_st vdata;
	unsigned n = 0, status = 0;
	int r, ret = -1;

	if (!chain || carray_count(chain) == 0) {
		*error_r = xstrdup("peer sent no certificate");
		if (chain)
			mailstream_certificate_chain_free(chain);
		return -1;
	}
	for (unsigned i = 0; i < carray_count(chain) && n < TLS_MAX_CHAIN; i++) {
		MMAPString *der = carray_get(chain, i);
		gnutls_datum_t d = { (unsigned char *)der->str, (unsigned)der->len };
		gnutls_x509_crt_init(&crts[n]);
		if (gnutls_x509_crt_import(crts[n], &d, GNUTLS_X509_FMT_DER) < 0) {
			gnutls_x509_crt_deinit(crts[n]);
			*error_r = xstrdup("peer certificate does not parse");
			goto out;
		}
		n++;
	}
	gnutls_x509_trust_list_init(&tl, 0);
	if (ca_file)
		r = gnutls_x509_trust_list_add_trust_file(tl, ca_file, NULL, GNUTLS_X509_FMT_PEM, 0, 0);
	else
		r = gnutls_x509_trust_list_add_system_trust(tl, 0, 0);
	if (r <= 0) {
		*error_r = xasprintf("no trust anchors loaded from %s", ca_file ? ca_file : "the system store");
		goto out;
	}
	memset(&vdata, 0, sizeof(vdata));
	/* GnuTLS matches an IP literal against iPAddress SANs itself */
	vdata.type = GNUTLS_DT_DNS_HOSTNAME;
	vdata.data = (unsigned char *)host;
	r = gnutls_x509_trust_list_verify_crt2(tl, crts, n, &vdata, 1, 0, &status, NULL);
	if (r < 0) {
		*error_r = xasprintf("certificate check failed: %s", gnutls_strerror(r));
	} else if (status != 0) {
		gnutls_datum_t out = { NULL, 0 };
		gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0);
		*error_r = xasprintf("certificate of %s not trusted: %s", host, out.data ? (char *)out.data : "?");
		gnutls_free(out.data);
	} else {
		ret = 0;
	}
out:
	if (tl)
		gnutls_x509_trust_list_deinit(tl, 1);
	for (unsigned i = 0; i < n; i++)
		gnutls_x509_crt_deinit(crts[i]);
	mailstream_certificate_chain_free(chain);
	return ret;
}
