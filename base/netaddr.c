#include "netaddr.h"
#include "util.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* The 16 bytes of an address, IPv4 as ::ffff:a.b.c.d; 0 or -1. */
static int
addr16(const struct sockaddr *sa, unsigned char out[16])
{
	if (!sa)
		return -1;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		memset(out, 0, 10);
		out[10] = out[11] = 0xff;
		memcpy(out + 12, &s4->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		return 0;
	}
	return -1;
}

bool
netaddr_key16(const struct sockaddr *sa, unsigned char out[16])
{
	return addr16(sa, out) == 0;
}

const char *
netaddr_to_string(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *in = !sa ? NULL : sa->sa_family == AF_INET ? (const void *)&((const struct sockaddr_in *)sa)->sin_addr :
	    sa->sa_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)sa)->sin6_addr : NULL;

	if (!in || !inet_ntop(sa->sa_family, in, buf, (socklen_t)len))
		snprintf(buf, len, "?");
	return buf;
}

bool
netaddr_text_is_loopback(const char *host)
{
	static const unsigned char v4net[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127 };
	static const unsigned char v6one[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
	struct sockaddr_storage ss;
	unsigned char a[16];

	if (!strcasecmp(host, "localhost"))
		return true;
	if (netaddr_from_string(host, &ss) < 0 || addr16((struct sockaddr *)&ss, a) < 0)
		return false;
	return !memcmp(a, v4net, 13) || !memcmp(a, v6one, 16);
}

static bool
prefix_match(const unsigned char *a, const unsigned char *net, unsigned bits)
{
	unsigned full = bits / 8, rest = bits % 8;
	if (memcmp(a, net, full) != 0)
		return false;
	if (rest == 0)
		return true;
	return ((a[full] ^ net[full]) & (unsigned char)(0xff << (8 - rest))) == 0;
}

static const unsigned char V4MAPPED[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
static const unsigned char NAT64[12] = { 0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0 };

static bool
v4_public(const unsigned char a[4])
{
	static const struct { uint32_t net; unsigned bits; } deny[] = {
		{ 0x00000000, 8 },   /* "this network", unspecified */
		{ 0x0a000000, 8 },   /* RFC 1918 */
		{ 0x64400000, 10 },  /* CGNAT */
		{ 0x7f000000, 8 },   /* loopback */
		{ 0xa9fe0000, 16 },  /* link-local, cloud metadata */
		{ 0xac100000, 12 },  /* RFC 1918 */
		{ 0xc0000000, 24 },  /* IETF protocol assignments */
		{ 0xc0a80000, 16 },  /* RFC 1918 */
		{ 0xc6120000, 15 },  /* benchmarking */
		{ 0xe0000000, 4 },   /* multicast */
		{ 0xf0000000, 4 },   /* reserved, broadcast */
	};
	uint32_t v = (uint32_t)a[0] << 24 | (uint32_t)a[1] << 16 | (uint32_t)a[2] << 8 | a[3];
	for (size_t i = 0; i < sizeof(deny) / sizeof(deny[0]); i++)
		if ((v >> (32 - deny[i].bits)) == (deny[i].net >> (32 - deny[i].bits)))
			return false;
	return true;
}

bool
netaddr_is_public(const struct sockaddr *sa)
{
	unsigned char a[16];

	if (addr16(sa, a) < 0)
		return false;
	if (!memcmp(a, V4MAPPED, 12) || !memcmp(a, NAT64, 12))
		return v4_public(a + 12);
	/* IPv4-compatible (::a.b.c.d, deprecated) and ::, ::1 */
	if (!memcmp(a, "\0\0\0\0\0\0\0\0\0\0\0\0", 12))
		return false;
	if ((a[0] & 0xfe) == 0xfc)                    /* ULA fc00::/7 */
		return false;
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0x80)    /* link-local fe80::/10 */
		return false;
	if (a[0] == 0xfe && (a[1] & 0xc0) == 0xc0)    /* site-local fec0::/10 */
		return false;
	if (a[0] == 0xff)                             /* multicast */
		return false;
	if (a[0] == 0x20 && a[1] == 0x02)             /* 6to4: judge the IPv4 inside */
		return v4_public(a + 2);
	if (a[0] == 0x20 && a[1] == 0x01 && a[2] == 0x0d && a[3] == 0xb8)   /* documentation */
		return false;
	return true;
}

int
netaddr_from_string(const char *s, void *sa_r)
{
	struct sockaddr_storage *ss = sa_r;
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &((struct sockaddr_in *)ss)->sin_addr) == 1) {
		ss->ss_family = AF_INET;
		return 0;
	}
	if (inet_pton(AF_INET6, s, &((struct sockaddr_in6 *)ss)->sin6_addr) == 1) {
		ss->ss_family = AF_INET6;
		return 0;
	}
	return -1;
}

int
netaddr_parse_host(const char *host, int port, void *sa_r)
{
	struct sockaddr_storage *ss = sa_r;
	size_t hl = strlen(host);
	char bare[INET6_ADDRSTRLEN + 1];

	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']')
		snprintf(bare, sizeof(bare), "%.*s", (int)(hl - 2), host + 1);
	else if (!strcmp(host, "localhost"))
		snprintf(bare, sizeof(bare), "127.0.0.1");
	else if (hl < sizeof(bare))
		snprintf(bare, sizeof(bare), "%s", host);
	else
		return -1;
	if (port < 0 || port > 65535 || netaddr_from_string(bare, ss) < 0)
		return -1;
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	return 0;
}

int
netaddr_parse_hostport(const char *spec, void *sa_r, int *port_r, char **error_r)
{
	const char *colon = strrchr(spec, ':');
	char *host, *end;
	long port = colon && colon[1] ? strtol(colon + 1, &end, 10) : -1;
	int r;

	if (!colon || colon == spec || port < 0 || *end || port > 65535) {
		*error_r = xasprintf("must be host:port, [IPv6]:port or localhost:port (got '%s')", spec);
		return -1;
	}
	host = xasprintf("%.*s", (int)(colon - spec), spec);
	/* an IPv6 address needs its brackets here, or its last group would be the port */
	r = strchr(host, ':') && host[0] != '[' ? -1 : netaddr_parse_host(host, (int)port, sa_r);
	if (r < 0)
		*error_r = xasprintf("%s is not an IPv4 address, an IPv6 address in brackets or localhost "
		    "(names are not looked up for a listener)", host);
	else if (port_r)
		*port_r = (int)port;
	free(host);
	return r;
}

bool
netaddr_in_prefix(const struct sockaddr *ip, const struct sockaddr *net, int bits)
{
	unsigned char a[16], b[16];
	if (ip->sa_family != net->sa_family || addr16(ip, a) < 0 || addr16(net, b) < 0 || bits < 0)
		return false;
	/* both are compared as 16 bytes, IPv4 as ::ffff:a.b.c.d */
	return prefix_match(a, b, (unsigned)bits + (ip->sa_family == AF_INET ? 96 : 0));
}

bool
netaddr_url_is_http(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL;
	bool ok = url && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    (!strcmp(scheme, "http") || !strcmp(scheme, "https")) && host[0];
	curl_free(scheme);
	curl_free(host);
	curl_url_cleanup(u);
	return ok;
}

/* "scheme://host:port" of a URL, lowercase, default port filled in;
 * NULL when it does not parse. */
static char *
url_origin(const char *url)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL, *out = NULL;

	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
		out = xasprintf("%s://%s:%s", scheme, host, port);
		for (char *p = out; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return out;
}

static int
parse_cidr(const char *item, struct netaddr_rule *r)
{
	char buf[64];
	const char *slash = strchr(item, '/');
	size_t alen = slash ? (size_t)(slash - item) : strlen(item);
	struct sockaddr_storage ss;
	unsigned max;
	char *end;

	if (alen >= sizeof(buf))
		return -1;
	memcpy(buf, item, alen);
	buf[alen] = '\0';
	if (netaddr_from_string(buf, &ss) < 0)
		return -1;
	r->family = ss.ss_family;
	max = r->family == AF_INET ? 32 : 128;
	r->prefix = max;
	if (slash) {
		long p = strtol(slash + 1, &end, 10);
		if (end == slash + 1 || *end || p < 0 || p > (long)max)
			return -1;
		r->prefix = (unsigned)p;
	}
	addr16((struct sockaddr *)&ss, r->addr);
	if (r->family == AF_INET)
		r->prefix += 96;      /* compared as ::ffff:a.b.c.d */
	return 0;
}

int
netaddr_list_parse(const char *spec, struct netaddr_list *out, char **error_r)
{
	const char *p = spec ? spec : "";

	memset(out, 0, sizeof(*out));
	while (*p) {
		size_t len = strcspn(p, ", \t");
		if (len > 0) {
			char *item = xasprintf("%.*s", (int)len, p);
			struct netaddr_rule r = { 0 };
			int ok = strstr(item, "://") ? ((r.origin = url_origin(item)) ? 0 : -1) : parse_cidr(item, &r);
			if (ok < 0) {
				*error_r = xasprintf("\"%s\" is neither an address, a CIDR (10.0.0.0/8) nor an origin "
				    "(https://host:port)", item);
				free(item);
				netaddr_list_clear(out);
				return -1;
			}
			free(item);
			out->rules = xrealloc(out->rules, (out->n + 1) * sizeof(*out->rules));
			out->rules[out->n++] = r;
		}
		p += len;
		p += strspn(p, ", \t");
	}
	return 0;
}

void
netaddr_list_clear(struct netaddr_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->rules[i].origin);
	free(l->rules);
	memset(l, 0, sizeof(*l));
}

bool
netaddr_list_has_addr(const struct netaddr_list *l, const struct sockaddr *sa)
{
	unsigned char a[16];

	if (!l || addr16(sa, a) < 0)
		return false;
	for (size_t i = 0; i < l->n; i++)
		if (l->rules[i].family && prefix_match(a, l->rules[i].addr, l->rules[i].prefix))
			return true;
	return false;
}

bool
netaddr_list_has_origin(const struct netaddr_list *l, const char *url)
{
	char *o;
	bool found = false;

	if (!l || l->n == 0 || !(o = url_origin(url)))
		return false;
	for (size_t i = 0; i < l->n && !found; i++)
		found = l->rules[i].origin && !strcmp(l->rules[i].origin, o);
	free(o);
	return found;
}
