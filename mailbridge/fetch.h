/* fetch: download one attachment URL with libcurl (http/https only, TLS
 * 1.2+ verified, size cap, deadline). The address each connection really
 * goes to is checked (after DNS, so rebinding cannot get round it), on
 * every redirect hop: only public addresses, or what [store]
 * attachment_allow lists. The body streams to an unlinked file in
 * tmp_dir and is mapped read-only, so it is not held on the heap. File
 * name from Content-Disposition or the URL path; content type from the
 * response. */
#ifndef MB_FETCH_H
#define MB_FETCH_H

#include <stddef.h>
#include <stdint.h>

struct mime_attachment;
struct netaddr_list;

enum fetch_result { FETCH_OK = 0, FETCH_TEMP = -1, FETCH_PERM = -2, FETCH_TOO_BIG = -3 /* internal */ };

struct fetch_limits {
	const struct netaddr_list *allow;   /* CIDRs and origins also allowed, or NULL */
	int64_t deadline_ms;               /* mono_ms() by which the fetch must end */
	size_t max_bytes;                  /* the most this attachment may be */
	const char *tmp_dir;               /* where the body is spooled */
};

/* Fills *out (owned by the caller: mime_attachment_clear). On failure
 * returns FETCH_TEMP or FETCH_PERM, logs the detail (address refused,
 * HTTP status, curl's error) and sets *error_r (malloc'd) to a generic
 * reason fit for whoever sent the URL. */
enum fetch_result fetch_attachment(const char *url, const struct fetch_limits *lim,
    struct mime_attachment *out, char **error_r);

#endif
