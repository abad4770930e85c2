#include "dns.h"
#include "util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unbound.h>

#define DNS_TYPE_A    1
#define DNS_TYPE_MX   15
#define DNS_TYPE_TXT  16
#define DNS_TYPE_AAAA 28
#define DNS_CLASS_IN  1

struct dns {
	struct ub_ctx *ctx;
};

struct dns *
dns_open(const char *resolver, char **error_r)
{
	struct dns *d = xcalloc(1, sizeof(*d));
	int r;

	d->ctx = ub_ctx_create();
	if (!d->ctx) {
		*error_r = xstrdup("libunbound: cannot create a resolver context");
		free(d);
		return NULL;
	}
	/* a resolver on this host (127.0.0.53, a local unbound) is the usual
	 * case, and libunbound would not ask it by default */
	r = ub_ctx_set_option(d->ctx, "do-not-query-localhost:", "no");
	if (r == 0)
		r = resolver && *resolver ? ub_ctx_set_fwd(d->ctx, resolver) : ub_ctx_resolvconf(d->ctx, NULL);
	if (r != 0) {
		*error_r = xasprintf("resolver %s: %s", resolver && *resolver ? resolver : "/etc/resolv.conf",
		    ub_strerror(r));
		dns_close(d);
		return NULL;
	}
	return d;
}

void
dns_close(struct dns *d)
{
	if (!d)
		return;
	ub_ctx_delete(d->ctx);
	free(d);
}

void
dns_strings_free(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* One question; 1 with *res (data or not), -1 with *error_r. */
static int
ask(struct dns *d, const char *name, int type, struct ub_result **res, char **error_r)
{
	int r = ub_resolve(d->ctx, name, type, DNS_CLASS_IN, res);
	if (r != 0) {
		*error_r = xasprintf("%s: %s", name, ub_strerror(r));
		return -1;
	}
	/* NOERROR or NXDOMAIN are answers; anything else (SERVFAIL...) is not */
	if ((*res)->rcode != 0 && !(*res)->nxdomain) {
		*error_r = xasprintf("%s: the resolver answered rcode %d", name, (*res)->rcode);
		ub_resolve_free(*res);
		return -1;
	}
	return 1;
}

/* A name in wire format (uncompressed, as libunbound hands rdata) as text
 * without the final dot; NULL when malformed. */
static char *
wire_name(const unsigned char *p, size_t len)
{
	char *out = xmalloc(len + 2), *o = out;
	size_t i = 0;

	while (i < len && p[i]) {
		size_t l = p[i];
		if (l > 63 || i + 1 + l > len) {
			free(out);
			return NULL;
		}
		if (o != out)
			*o++ = '.';
		memcpy(o, p + i + 1, l);
		o += l;
		i += 1 + l;
	}
	*o = '\0';
	if (i >= len) {
		free(out);
		return NULL;
	}
	return out;
}

int
dns_txt(struct dns *d, const char *name, char ***records_r, char **error_r)
{
	struct ub_result *res;
	size_t n = 0;

	*records_r = NULL;
	if (ask(d, name, DNS_TYPE_TXT, &res, error_r) < 0)
		return -1;
	*records_r = xcalloc(1, sizeof(char *));
	for (int i = 0; res->havedata && res->data[i]; i++) {
		/* one record is one or more <length><bytes> strings, joined */
		const unsigned char *p = (const unsigned char *)res->data[i];
		size_t len = (size_t)res->len[i], at = 0, o = 0;
		char *text = xmalloc(len + 1);
		while (at < len) {
			size_t l = p[at];
			if (at + 1 + l > len)
				break;
			memcpy(text + o, p + at + 1, l);
			o += l;
			at += 1 + l;
		}
		text[o] = '\0';
		*records_r = xrealloc(*records_r, (n + 2) * sizeof(char *));
		(*records_r)[n++] = text;
		(*records_r)[n] = NULL;
	}
	ub_resolve_free(res);
	return (int)n;
}

struct mx {
	unsigned pref;
	char *host;
};

static int
mx_cmp(const void *a, const void *b)
{
	const struct mx *x = a, *y = b;
	return (x->pref > y->pref) - (x->pref < y->pref);
}

int
dns_mx(struct dns *d, const char *name, char ***hosts_r, char **error_r)
{
	struct ub_result *res;
	struct mx *mx = NULL;
	size_t n = 0;

	*hosts_r = NULL;
	if (ask(d, name, DNS_TYPE_MX, &res, error_r) < 0)
		return -1;
	for (int i = 0; res->havedata && res->data[i]; i++) {
		const unsigned char *p = (const unsigned char *)res->data[i];
		char *host;
		if (res->len[i] < 3 || !(host = wire_name(p + 2, (size_t)res->len[i] - 2)))
			continue;
		mx = xrealloc(mx, (n + 1) * sizeof(*mx));
		mx[n].pref = (unsigned)p[0] << 8 | p[1];
		mx[n++].host = host;
	}
	ub_resolve_free(res);
	if (n > 1)
		qsort(mx, n, sizeof(*mx), mx_cmp);
	*hosts_r = xcalloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		(*hosts_r)[i] = mx[i].host;
	free(mx);
	return (int)n;
}

int
dns_addrs(struct dns *d, const char *name, struct sockaddr_storage **addrs_r, char **error_r)
{
	static const int types[2] = { DNS_TYPE_A, DNS_TYPE_AAAA };
	size_t n = 0;

	*addrs_r = NULL;
	for (int t = 0; t < 2; t++) {
		struct ub_result *res;
		if (ask(d, name, types[t], &res, error_r) < 0) {
			free(*addrs_r);
			*addrs_r = NULL;
			return -1;
		}
		for (int i = 0; res->havedata && res->data[i]; i++) {
			struct sockaddr_storage ss = { 0 };
			if (types[t] == DNS_TYPE_A && res->len[i] == 4) {
				ss.ss_family = AF_INET;
				memcpy(&((struct sockaddr_in *)&ss)->sin_addr, res->data[i], 4);
			} else if (types[t] == DNS_TYPE_AAAA && res->len[i] == 16) {
				ss.ss_family = AF_INET6;
				memcpy(&((struct sockaddr_in6 *)&ss)->sin6_addr, res->data[i], 16);
			} else {
				continue;
			}
			*addrs_r = xrealloc(*addrs_r, (n + 1) * sizeof(ss));
			(*addrs_r)[n++] = ss;
		}
		ub_resolve_free(res);
	}
	return (int)n;
}
