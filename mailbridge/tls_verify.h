/* tls_verify: certificate checks libetpan does not do (LIBRARIES.md B.1).
 * After a TLS handshake on a libetpan stream and before any credential is
 * sent, verify the peer chain against the system trust store (or ca_file
 * when set) and the expected host name or IP address. GnuTLS. */
#ifndef MB_TLS_VERIFY_H
#define MB_TLS_VERIFY_H

#include <libetpan/libetpan.h>

/* 0 when trusted; -1 with *error_r (malloc'd) describing why not. */
int tls_verify_stream(mailstream *stream, const char *host, const char *ca_file, char **error_r);

/* Sets SNI on a libetpan TLS context (use as the *_with_callback hook;
 * data is the host name). */
void tls_sni_callback(struct mailstream_ssl_context *ctx, void *data);

#endif
