/* The SPF evaluator and the DMARC/DKIM tag reader, over a zone given as a
 * table (the doctor's integration test runs them against a real resolver,
 * unbound, in test_doctor.py). */
#include "mailauth.h"
#include "netaddr.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

struct rr {
	const char *name, *type, *data;
};

static const struct rr zone[] = {
	{ "ex.test", "TXT", "v=spf1 ip4:192.0.2.0/24 include:_spf.relay.test ~all" },
	{ "ex.test", "TXT", "google-site-verification=abc" },
	{ "_spf.relay.test", "TXT", "v=spf1 ip6:2001:db8::/32 a:out.relay.test mx -all" },
	{ "out.relay.test", "A", "198.51.100.7" },
	{ "_spf.relay.test", "MX", "mx1.relay.test" },
	{ "mx1.relay.test", "A", "203.0.113.25" },
	{ "hard.test", "TXT", "v=spf1 -ip4:192.0.2.66 ip4:192.0.2.0/24 -all" },
	{ "redir.test", "TXT", "v=spf1 redirect=ex.test" },
	{ "two.test", "TXT", "v=spf1 -all" },
	{ "two.test", "TXT", "v=spf1 +all" },
	{ "macro.test", "TXT", "v=spf1 exists:%{i}.bl.test ip4:192.0.2.1 -all" },
	{ "loop.test", "TXT", "v=spf1 include:loop.test -all" },
	{ "broken.test", "TXT", "v=spf1 ip4:300.1.1.1 -all" },
	{ "dangling.test", "TXT", "v=spf1 include:nothing.test -all" },
	{ "fails.test", "TXT", "v=spf1 a:servfail.test -all" },
};

static int
lookup(const char *name, const char *type, char ***out)
{
	int n = 0;
	if (!strcmp(name, "servfail.test"))
		return -1;
	*out = calloc(1, sizeof(char *));
	for (size_t i = 0; i < sizeof(zone) / sizeof(zone[0]); i++)
		if (!strcmp(zone[i].name, name) && !strcmp(zone[i].type, type)) {
			*out = realloc(*out, (size_t)(n + 2) * sizeof(char *));
			(*out)[n++] = strdup(zone[i].data);
			(*out)[n] = NULL;
		}
	return n;
}

static int
fake_txt(void *ctx, const char *name, char ***out)
{
	(void)ctx;
	return lookup(name, "TXT", out);
}

static int
fake_mx(void *ctx, const char *name, char ***out)
{
	(void)ctx;
	return lookup(name, "MX", out);
}

static int
fake_addrs(void *ctx, const char *name, struct sockaddr_storage **out)
{
	char **a;
	int n = lookup(name, "A", &a);
	(void)ctx;
	*out = NULL;
	if (n < 0)
		return -1;
	*out = calloc((size_t)n + 1, sizeof(**out));
	for (int i = 0; i < n; i++) {
		netaddr_from_string(a[i], &(*out)[i]);
		free(a[i]);
	}
	free(a);
	return n;
}

int
main(void)
{
	static const struct spf_lookup lk = { NULL, fake_txt, fake_mx, fake_addrs };
	static const struct {
		const char *domain, *ip;
		enum spf_result want;
		const char *detail;       /* substring of the detail */
	} rows[] = {
		{ "ex.test", "192.0.2.10", SPF_PASS, "ip4:192.0.2.0/24" },
		{ "ex.test", "198.51.100.7", SPF_PASS, "a:out.relay.test" },        /* through include: */
		{ "ex.test", "203.0.113.25", SPF_PASS, "mx" },
		{ "ex.test", "2001:db8::25", SPF_PASS, "ip6:2001:db8::/32" },
		{ "ex.test", "198.51.100.8", SPF_SOFTFAIL, "~all" },                /* the include's -all is no match */
		{ "hard.test", "192.0.2.66", SPF_FAIL, "-ip4:192.0.2.66" },          /* first match wins */
		{ "hard.test", "192.0.2.67", SPF_PASS, NULL },
		{ "redir.test", "192.0.2.10", SPF_PASS, NULL },
		{ "redir.test", "10.9.9.9", SPF_SOFTFAIL, NULL },
		{ "nothing.test", "192.0.2.10", SPF_NONE, "no SPF record" },
		{ "two.test", "192.0.2.10", SPF_PERMERROR, "more than one" },
		{ "macro.test", "192.0.2.1", SPF_PASS, NULL },
		{ "macro.test", "192.0.2.2", SPF_FAIL, "not expanded" },
		{ "loop.test", "192.0.2.1", SPF_PERMERROR, NULL },                  /* ends: 10 lookups at most */
		{ "broken.test", "192.0.2.1", SPF_PERMERROR, "not valid" },
		{ "dangling.test", "192.0.2.1", SPF_PERMERROR, NULL },              /* include of no record */
		{ "fails.test", "192.0.2.1", SPF_TEMPERROR, "failed" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct sockaddr_storage ip;
		char *detail = NULL;
		enum spf_result r;
		CHECK_IDX(netaddr_from_string(rows[i].ip, &ip) == 0, i);
		r = spf_check(&lk, rows[i].domain, (struct sockaddr *)&ip, &detail);
		CHECK_IDX(r == rows[i].want, i);
		CHECK_IDX(!rows[i].detail || strstr(detail, rows[i].detail), i);
		if (r != rows[i].want || (rows[i].detail && !strstr(detail, rows[i].detail)))
			fprintf(stderr, "  %s %s: %s (%s)\n", rows[i].domain, rows[i].ip, spf_result_name(r), detail);
		free(detail);
	}

	/* tag=value records */
	{
		char *p = mailauth_tag("v=DMARC1; p=quarantine; rua=mailto:d@ex.test", "p");
		CHECK(p && !strcmp(p, "quarantine"));
		free(p);
		p = mailauth_tag("v=DMARC1;p = reject ;pct=50", "p");
		CHECK(p && !strcmp(p, "reject"));
		free(p);
		p = mailauth_tag("v=DMARC1; sp=reject", "p");       /* sp= is not p= */
		CHECK(p == NULL);
		p = mailauth_tag("v=DKIM1; k=rsa; p=", "p");         /* revoked: empty */
		CHECK(p && !*p);
		free(p);
		p = mailauth_tag("k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=", "p");
		CHECK(p && !strncmp(p, "11qY", 4));
		free(p);
	}
	return test_done("test_mailauth");
}
