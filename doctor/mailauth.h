/* mailauth: what a domain's DNS says about mail sent in its name, as
 * `mailbridge doctor` checks it: SPF (RFC 7208) evaluated for an address,
 * and the tag=value records of DMARC (RFC 7489) and DKIM (RFC 6376).
 * Pure: the DNS comes through the lookup functions given, so the
 * evaluator is tested on its own (tests/test_mailauth.c) and the doctor
 * gives it libunbound (dns.h). */
#ifndef MB_MAILAUTH_H
#define MB_MAILAUTH_H

#include <stddef.h>
#include <sys/socket.h>

/* Each: the number of answers, 0 for none (or NXDOMAIN), -1 when the
 * question could not be answered. Arrays as in dns.h. */
struct spf_lookup {
	void *ctx;
	int (*txt)(void *ctx, const char *name, char ***records_r);
	int (*mx)(void *ctx, const char *name, char ***hosts_r);
	int (*addrs)(void *ctx, const char *name, struct sockaddr_storage **addrs_r);
};

enum spf_result {
	SPF_NONE, SPF_NEUTRAL, SPF_PASS, SPF_FAIL, SPF_SOFTFAIL, SPF_TEMPERROR, SPF_PERMERROR,
};
const char *spf_result_name(enum spf_result r);

/* check_host() for ip and domain: the result, and in *detail_r (malloc'd)
 * the record and the term that decided it, or why it erred. Macros
 * (%{...}), exists: and ptr are not expanded: such terms do not match,
 * and the detail says so. At most 10 DNS-querying terms, as the RFC says. */
enum spf_result spf_check(const struct spf_lookup *l, const char *domain, const struct sockaddr *ip,
    char **detail_r);

/* The value of tag in a "v=...; tag=value; ..." record (DMARC, DKIM),
 * malloc'd and trimmed; NULL when absent. */
char *mailauth_tag(const char *record, const char *tag);

#endif
