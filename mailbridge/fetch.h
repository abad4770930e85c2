/* fetch: download one attachment URL with libcurl (http/https only, TLS
 * verified, size cap, timeout). File name from Content-Disposition or the
 * URL path; content type from the response. */
#ifndef MB_FETCH_H
#define MB_FETCH_H

#include <stddef.h>

struct mime_attachment;

enum fetch_result { FETCH_OK = 0, FETCH_TEMP = -1, FETCH_PERM = -2 };

/* Fills *out (owned by the caller: mime_attachment_clear). On failure
 * *error_r (malloc'd) says why. */
enum fetch_result fetch_attachment(const char *url, size_t max_bytes, long timeout_s,
    struct mime_attachment *out, char **error_r);

#endif
