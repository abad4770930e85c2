#include "mailauth.h"
#include "netaddr.h"
#include "util.h"

#include <ctype.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define SPF_MAX_LOOKUPS 10
#define SPF_MAX_MX      10

const char *
spf_result_name(enum spf_result r)
{
	static const char *const names[] = { "none", "neutral", "pass", "fail", "softfail", "temperror",
		"permerror" };
	return names[r];
}

struct spf_eval {
	const struct spf_lookup *l;
	const struct sockaddr *ip;
	int lookups;
	char *why;                 /* the term that decided, or the error */
	char *skipped;             /* a term that could not be evaluated */
};

static enum spf_result check_host(struct spf_eval *e, const char *domain, int depth);

/* ip within addr/bits (bits of addr's family). */
static bool
in_prefix(const struct sockaddr *ip, const struct sockaddr_storage *addr, int bits4, int bits6)
{
	int bits = addr->ss_family == AF_INET ? bits4 : bits6;
	return ip->sa_family == addr->ss_family && netaddr_in_prefix(ip, (const struct sockaddr *)addr, bits);
}

/* "name/24//64" -> the name (or dflt), and the prefix lengths. -1 when bad. */
static int
split_cidr(const char *spec, const char *dflt, char **name_r, int *bits4, int *bits6)
{
	const char *slash = strchr(spec, '/');
	size_t nlen = slash ? (size_t)(slash - spec) : strlen(spec);
	*bits4 = 32;
	*bits6 = 128;
	if (slash) {
		const char *dbl = strstr(slash, "//");
		char *end;
		if (slash != dbl) {
			long v = strtol(slash + 1, &end, 10);
			if (end == slash + 1 || v < 0 || v > 32 || (*end && strncmp(end, "//", 2)))
				return -1;
			*bits4 = (int)v;
		}
		if (dbl) {
			long v = strtol(dbl + 2, &end, 10);
			if (end == dbl + 2 || v < 0 || v > 128 || *end)
				return -1;
			*bits6 = (int)v;
		}
	}
	*name_r = nlen ? xasprintf("%.*s", (int)nlen, spec) : xstrdup(dflt);
	return 0;
}

static int
match_addrs(struct spf_eval *e, const char *name, int bits4, int bits6)
{
	struct sockaddr_storage *a;
	int n = e->l->addrs(e->l->ctx, name, &a), hit = 0;
	for (int i = 0; i < n && !hit; i++)
		hit = in_prefix(e->ip, &a[i], bits4, bits6);
	free(a);
	return n < 0 ? -1 : hit;
}

static int
match_mx(struct spf_eval *e, const char *name, int bits4, int bits6)
{
	char **hosts;
	int n = e->l->mx(e->l->ctx, name, &hosts), hit = 0;
	for (int i = 0; i < n && i < SPF_MAX_MX && hit == 0; i++)
		hit = match_addrs(e, hosts[i], bits4, bits6);
	for (int i = 0; i < n; i++)
		free(hosts[i]);
	free(hosts);
	return n < 0 ? -1 : hit;
}

static int
match_ip(struct spf_eval *e, const char *spec, int family)
{
	const char *slash = strchr(spec, '/');
	char *addr = xasprintf("%.*s", (int)(slash ? (size_t)(slash - spec) : strlen(spec)), spec);
	struct sockaddr_storage net;
	long bits = family == AF_INET ? 32 : 128;
	int r = 0;

	if (netaddr_from_string(addr, &net) < 0 || net.ss_family != family)
		r = -1;
	if (r == 0 && slash) {
		char *end;
		bits = strtol(slash + 1, &end, 10);
		if (end == slash + 1 || *end || bits < 0 || bits > (family == AF_INET ? 32 : 128))
			r = -1;
	}
	free(addr);
	return r < 0 ? -1 : in_prefix(e->ip, &net, (int)bits, (int)bits);
}

/* One mechanism (qualifier stripped): 1 match, 0 no match, -1 permerror
 * (why set), -2 temperror. */
static int
mechanism(struct spf_eval *e, const char *domain, const char *term, int depth)
{
	char *name = NULL;
	int bits4, bits6, r;

	if (!strcasecmp(term, "all"))
		return 1;
	if (!strncasecmp(term, "ip4:", 4))
		return match_ip(e, term + 4, AF_INET);
	if (!strncasecmp(term, "ip6:", 4))
		return match_ip(e, term + 4, AF_INET6);
	if (strchr(term, '%')) {
		free(e->skipped);
		e->skipped = xasprintf("%s (macros are not expanded)", term);
		return 0;
	}
	if (++e->lookups > SPF_MAX_LOOKUPS)
		return -1;
	if (!strncasecmp(term, "include:", 8)) {
		enum spf_result sub = check_host(e, term + 8, depth + 1);
		if (sub == SPF_TEMPERROR)
			return -2;
		if (sub == SPF_NONE || sub == SPF_PERMERROR)
			return -1;
		return sub == SPF_PASS;
	}
	if (!strcasecmp(term, "a") || !strncasecmp(term, "a:", 2) || !strncasecmp(term, "a/", 2)) {
		if (split_cidr(term[1] == ':' ? term + 2 : term + 1, domain, &name, &bits4, &bits6) < 0)
			return -1;
		r = match_addrs(e, name, bits4, bits6);
	} else if (!strcasecmp(term, "mx") || !strncasecmp(term, "mx:", 3) || !strncasecmp(term, "mx/", 3)) {
		if (split_cidr(term[2] == ':' ? term + 3 : term + 2, domain, &name, &bits4, &bits6) < 0)
			return -1;
		r = match_mx(e, name, bits4, bits6);
	} else if (!strncasecmp(term, "exists:", 7) || !strcasecmp(term, "ptr") || !strncasecmp(term, "ptr:", 4)) {
		free(e->skipped);
		e->skipped = xasprintf("%s (not evaluated)", term);
		return 0;
	} else {
		return -1;
	}
	free(name);
	return r == -1 ? -2 : r;
}

static enum spf_result
qualified(char q)
{
	switch (q) {
	case '-': return SPF_FAIL;
	case '~': return SPF_SOFTFAIL;
	case '?': return SPF_NEUTRAL;
	default: return SPF_PASS;
	}
}

/* The domain's one "v=spf1" record: 1 with *rec_r, 0 none, -1 two or
 * more (permerror), -2 the question failed. */
static int
spf_record(struct spf_eval *e, const char *domain, char **rec_r)
{
	char **txt;
	int n = e->l->txt(e->l->ctx, domain, &txt), found = 0;
	*rec_r = NULL;
	for (int i = 0; i < n; i++) {
		if (!strncasecmp(txt[i], "v=spf1", 6) && (txt[i][6] == ' ' || !txt[i][6])) {
			if (found++ == 0)
				*rec_r = xstrdup(txt[i]);
		}
		free(txt[i]);
	}
	free(txt);
	if (n < 0)
		return -2;
	if (found > 1) {
		free(*rec_r);
		*rec_r = NULL;
		return -1;
	}
	return found;
}

static enum spf_result
check_host(struct spf_eval *e, const char *domain, int depth)
{
	char *rec, *redirect = NULL, *save = NULL;
	enum spf_result result = SPF_NEUTRAL;
	bool decided = false;
	int r;

	if (depth > SPF_MAX_LOOKUPS)
		return SPF_PERMERROR;
	r = spf_record(e, domain, &rec);
	if (r == -2 || r == 0 || r == -1) {
		free(e->why);
		e->why = xasprintf(r == -2 ? "%s: the SPF question failed" : r == 0 ? "%s has no SPF record" :
		    "%s has more than one SPF record", domain);
		return r == -2 ? SPF_TEMPERROR : r == 0 ? SPF_NONE : SPF_PERMERROR;
	}
	for (char *t = strtok_r(rec + 6, " \t", &save); t && !decided; t = strtok_r(NULL, " \t", &save)) {
		char q = strchr("+-~?", *t) ? *t : '+';
		const char *term = strchr("+-~?", *t) ? t + 1 : t;
		const char *eq = strchr(term, '=');
		if (eq && (!strchr(term, ':') || eq < strchr(term, ':'))) {
			/* a modifier: only redirect= changes the outcome */
			if (!strncasecmp(term, "redirect=", 9) && !redirect)
				redirect = xstrdup(term + 9);
			continue;
		}
		r = mechanism(e, domain, term, depth);
		if (r == 0)
			continue;
		{
			/* what decided, and for include: what decided inside it */
			bool inner = !strncasecmp(term, "include:", 8) && e->why;
			char *w = r == 1 ? xasprintf("%s: \"%c%s\"", domain, q, term) :
			    xasprintf(e->lookups > SPF_MAX_LOOKUPS ? "%s: more than 10 DNS lookups" :
			    r == -2 ? "%s: a lookup for \"%s\" failed" : "%s: \"%s\" is not valid", domain, term);
			char *chained = inner ? xasprintf("%s, then %s", w, e->why) : NULL;
			free(e->why);
			e->why = chained ? chained : w;
			if (chained)
				free(w);
		}
		result = r == 1 ? qualified(q) : r == -2 ? SPF_TEMPERROR : SPF_PERMERROR;
		decided = true;
	}
	if (!decided && redirect) {
		if (++e->lookups > SPF_MAX_LOOKUPS)
			result = SPF_PERMERROR;
		else if ((result = check_host(e, redirect, depth + 1)) == SPF_NONE)
			result = SPF_PERMERROR;
	} else if (!decided) {
		free(e->why);
		e->why = xasprintf("%s: no term matched (neutral)", domain);
	}
	free(redirect);
	free(rec);
	return result;
}

enum spf_result
spf_check(const struct spf_lookup *l, const char *domain, const struct sockaddr *ip, char **detail_r)
{
	struct spf_eval e = { l, ip, 0, NULL, NULL };
	enum spf_result r = check_host(&e, domain, 0);

	if (e.skipped && r != SPF_PASS)
		*detail_r = xasprintf("%s; not checked: %s", e.why ? e.why : "", e.skipped);
	else
		*detail_r = xstrdup(e.why ? e.why : "");
	free(e.why);
	free(e.skipped);
	return r;
}

char *
mailauth_tag(const char *record, const char *tag)
{
	size_t tl = strlen(tag);
	const char *p = record;

	while (p && *p) {
		const char *end = strchr(p, ';');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		while (len && isspace((unsigned char)*p)) {
			p++;
			len--;
		}
		if (len > tl && !strncasecmp(p, tag, tl)) {
			const char *v = p + tl;
			size_t vl = len - tl;
			while (vl && isspace((unsigned char)*v)) {
				v++;
				vl--;
			}
			if (vl && *v == '=') {
				v++;
				vl--;
				while (vl && isspace((unsigned char)*v)) {
					v++;
					vl--;
				}
				while (vl && isspace((unsigned char)v[vl - 1]))
					vl--;
				return xasprintf("%.*s", (int)vl, v);
			}
		}
		p = end ? end + 1 : NULL;
	}
	return NULL;
}
